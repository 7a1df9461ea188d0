"""dino_knn (AnomalyDINO): unit-norm DINOv2 patch bank, rotations for few images, the top-1 % image
score; and `fit --shots K` drawing K normal images by the seed."""

import json

import pytest
import torch
from typer.testing import CliRunner

from latentad import create
from latentad.cli import app
from latentad.data.synthetic import make_synthetic
from latentad.errors import ConfigError


@pytest.fixture(scope="module")
def split():
    return make_synthetic(n_train=10, n_test_good=2, n_test_defect=2, size=56)


def test_bank_is_unit_norm_and_few_images_are_rotated(split):
    few = create("dino_knn", image_size=56).fit(split.train.subset([0, 1]))
    many = create("dino_knn", image_size=56, rotate_below=2).fit(split.train.subset([0, 1]))
    assert few.memory.shape[0] == 4 * many.memory.shape[0] == 4 * 2 * 16  # 4x4 patches of 14 px
    assert torch.allclose(few.memory.norm(dim=1), torch.ones(few.memory.shape[0]), atol=1e-4)


def test_augment_to_and_epochs_read_the_bank_from_seeded_turned_copies(split):
    from latentad.detectors.selfsupervised.dino_knn import augmented_draws

    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    out = augmented_draws(x, 4, 2, seed=0)
    assert out.shape == (8, 3, 8, 8) and torch.equal(out[:3], x)  # the originals first, as they are
    turned = [any(torch.equal(img, torch.rot90(o, k, (1, 2))) for o in x for k in (1, 2, 3)) for img in out[3:]]
    assert all(turned) and torch.equal(out, augmented_draws(x, 4, 2, seed=0))
    det = create("dino_knn", image_size=56, rotate_below=0, augment_to=6, epochs=2).fit(split.train.subset([0, 1, 2]))
    assert det.memory.shape[0] == 12 * 16  # 2 draws of 6 images, 4x4 patches each
    with pytest.raises(ConfigError, match="augment_to"):
        create("dino_knn", augment_to=0)


def test_image_score_is_the_mean_of_the_top_patch_distances(split):
    det = create("dino_knn", image_size=56, top_fraction=0.25, sigma=0.0).fit(split.train)
    x = torch.stack([split.test[i].image for i in range(len(split.test))])
    feats = det.features(x)
    g = det.patch_grid(feats)
    patches = g.permute(0, 2, 3, 1).reshape(len(x), -1, g.shape[1])
    dist, _ = det._knn(patches.reshape(-1, g.shape[1]), 1)
    want = dist.view(len(x), -1).topk(4, dim=1).values.mean(1)  # 25 % of 16 patches
    assert torch.allclose(det.score_batch(x)[0], want, atol=1e-5)


def test_fit_shots_draws_k_images_by_the_seed_and_refuses_too_many(tmp_path):
    root = tmp_path / "cat"
    make_synthetic(root, n_train=10, n_test_good=2, n_test_defect=2, size=32)
    runner = CliRunner()
    drawn = []
    for seed in (0, 1):
        out = tmp_path / f"r{seed}"
        res = runner.invoke(app, ["fit", "--method", "padim", "--data", str(root), "--out", str(out), "--shots", "3",
                                  "--seed", str(seed), "-o", "image_size=32"])
        assert res.exit_code == 0, res.output
        config = json.loads((out / "config.json").read_text())
        assert config["shots"]["k"] == 3 and len(config["shots"]["drawn"]) == 3
        assert config["calibration"]["n_fit"] + config["calibration"]["n_calibration"] == 3
        drawn.append(config["shots"]["drawn"])
    assert drawn[0] != drawn[1]
    res = runner.invoke(app, ["fit", "--method", "padim", "--data", str(root), "--out", str(tmp_path / "r9"),
                              "--shots", "11"])
    assert res.exit_code == 2 and "--shots 11: " in res.output and "only 10 normal training images" in res.output
    assert not (tmp_path / "r9").exists()
