"""One grey conversion: a one-channel model scores a colour image the same through `evaluate`'s data
path, `predict` and the Python API."""

import numpy as np
import pytest
import torch
from PIL import Image

from latentad.data.color import LUMA_601, luma, to_channels
from latentad.data.mvtec import load_mvtec
from latentad.data.synthetic import make_synthetic
from latentad.evaluation import score_set
from latentad.predict import predict_paths
from latentad.runs import fit_run, load_run


def test_luma_is_bt601_and_grey_to_colour_repeats():
    x = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    assert luma(x).item() == pytest.approx(LUMA_601[0])
    assert torch.equal(to_channels(torch.full((1, 1, 2, 2), 0.5), 3), torch.full((1, 3, 2, 2), 0.5))


def test_a_colour_image_scores_the_same_through_evaluate_predict_and_the_api(tmp_path):
    root = tmp_path / "cat"
    make_synthetic(root, n_train=8, n_test_good=2, n_test_defect=2, size=32, seed=0)
    colour = np.zeros((32, 32, 3), dtype=np.uint8)
    colour[..., 0], colour[8:24, 8:24, 1], colour[:, :16, 2] = 220, 180, 90  # channels that differ
    Image.fromarray(colour).save(root / "test" / "good" / "colour.png")
    run = tmp_path / "run"
    options = {"image_size": 32, "channels": 1, "epochs": 1, "augment_to": 8, "base_width": 4, "latent_dim": 4}
    with pytest.warns(UserWarning, match="converted to 1 channel"):
        fit_run(run, "ae_l2", str(root), "mvtec", {}, None, options, 0, False, False, 0.0, 0.01)
    _, det, _ = load_run(run)

    test = load_mvtec(root).test
    index = [i for i, r in enumerate(test.records) if r.path.endswith("colour.png")]
    via_evaluate = score_set(det, test.subset(index), progress=None)[0].image_scores[0]
    via_predict = predict_paths(run, tmp_path / "pred", [root / "test" / "good" / "colour.png"])[0]["score"]
    tensor = torch.from_numpy(colour).permute(2, 0, 1)[None].float() / 255.0
    via_api = det.predict(tensor).image_scores[0]
    assert via_evaluate == pytest.approx(via_api, rel=1e-6)
    assert via_predict == pytest.approx(via_api, rel=1e-6)
    red_only = det.predict(tensor[:, :1]).image_scores[0]  # what the red-channel conversion gave
    assert red_only != pytest.approx(via_api, rel=1e-3)
