"""Why does `vae_kl`'s per-position KL map rank bottle's defects below normal regions (pixel AUROC
0.22)? Fit `vae_kl` once, then take its KL map apart on the test set:

- the map as shipped (bilinear) and nearest-upsampled, and its negation;
- the KL's two terms per position: the mean term 0.5 * mu^2 and the variance term
  0.5 * (sigma^2 - 1 - log sigma^2), each summed over latent channels;
- how many latent channels are active (mean KL per channel over the training images);
- on normal test images, the correlation of the KL map with the local image structure (gradient
  magnitude at the latent resolution): is the KL a detector of detail rather than of novelty?

    OMP_NUM_THREADS=1 python benchmarks/vae_kl_probe.py [--data DIR] [--epochs 20] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from latentad.data.mvtec import load_mvtec
from latentad.detectors.base import create
from latentad.metrics import image_auroc, pixel_auroc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/work/shared/data/mvtec_ad/bottle")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    det = create("vae_kl", epochs=args.epochs)
    size = det.config.image_size
    split = load_mvtec(args.data, size)
    t0 = time.perf_counter()
    det.fit(split.train)
    fit_s = time.perf_counter() - t0
    test = split.test.load_all()
    x, masks, labels = test.images, test.masks.numpy() > 0.5, test.labels.numpy()
    with torch.inference_mode():
        lat = det.embed(x)
        train_lat = det.embed(split.train)
    mu, logvar = lat["mu"], lat["logvar"]
    mean_term = (0.5 * mu * mu).sum(1)
    var_term = (0.5 * (logvar.exp() - 1.0 - logvar)).sum(1)
    kl = lat["kl"]
    per_channel = (0.5 * (train_lat["mu"] ** 2 + train_lat["logvar"].exp() - 1 - train_lat["logvar"])).mean((0, 2, 3))

    def up(m: torch.Tensor, mode: str = "bilinear") -> np.ndarray:
        kw = {"align_corners": False} if mode == "bilinear" else {}
        return F.interpolate(m[:, None].float(), size=(size, size), mode=mode, **kw)[:, 0].numpy()

    out: dict = {"fit_seconds": round(fit_s, 1), "epochs": args.epochs, "latent": list(kl.shape[1:])}
    for name, m in {"kl": kl, "mean_term": mean_term, "var_term": var_term}.items():
        a = up(m)
        out[name] = {"pixel_auroc": pixel_auroc(masks, a), "pixel_auroc_negated": pixel_auroc(masks, -a),
                     "image_auroc_mean": image_auroc(labels, a.reshape(len(a), -1).mean(1)),
                     "image_auroc_max": image_auroc(labels, a.reshape(len(a), -1).max(1))}
    out["kl"]["pixel_auroc_nearest"] = pixel_auroc(masks, up(kl, "nearest"))
    out["active_channels"] = {"kl_per_channel_train": [round(float(v), 4) for v in per_channel],
                              "n_above_0.01": int((per_channel > 0.01).sum()), "n": int(per_channel.numel())}
    # KL vs local structure on normal test images, both at the latent resolution
    gray = x.mean(1, keepdim=True)
    gx = F.conv2d(gray, torch.tensor([[[[-1.0, 0, 1]]]]), padding=(0, 1))
    gy = F.conv2d(gray, torch.tensor([[[[-1.0], [0], [1]]]]), padding=(1, 0))
    grad = F.adaptive_avg_pool2d((gx**2 + gy**2).sqrt(), kl.shape[-2:])[:, 0]
    inten = F.adaptive_avg_pool2d(gray, kl.shape[-2:])[:, 0]
    normal = labels == 0
    k, g, i = kl[normal].flatten().numpy(), grad[normal].flatten().numpy(), inten[normal].flatten().numpy()
    out["normal_corr_kl_gradient"] = float(np.corrcoef(k, g)[0, 1])
    out["normal_corr_kl_intensity"] = float(np.corrcoef(k, i)[0, 1])
    # mean KL inside vs outside defects (latent cells covering a defect pixel)
    cell_mask = F.adaptive_max_pool2d(torch.from_numpy(masks).float()[:, None], kl.shape[-2:])[:, 0] > 0
    out["mean_kl_defect_cells"] = float(kl[cell_mask].mean())
    anomalous = torch.from_numpy(labels == 1)[:, None, None]
    out["mean_kl_normal_cells_of_anomalous_images"] = float(kl[~cell_mask & anomalous].mean())
    out["mean_kl_normal_images"] = float(kl[torch.from_numpy(normal)].mean())
    out["mean_gradient_defect_cells"] = float(grad[cell_mask].mean())
    out["mean_gradient_normal_images"] = float(grad[torch.from_numpy(normal)].mean())
    out["mean_intensity_defect_cells"] = float(inten[cell_mask].mean())
    out["mean_intensity_normal_images"] = float(inten[torch.from_numpy(normal)].mean())
    out["pixel_auroc_of_brightness"] = pixel_auroc(masks, up(inten))
    out["pixel_auroc_of_darkness"] = pixel_auroc(masks, up(-inten))
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
