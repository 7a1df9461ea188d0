"""One small fitted run per family on synthetic data, analysed once for the module's tests."""

import pytest

from latentad.analysis import analyze
from latentad.data.synthetic import make_synthetic
from latentad.runs import fit_run

TINY = {
    "padim": ("padim", {"image_size": 64}),
    "vq": ("vqvae_ssim_am", {"image_size": 32, "epochs": 1, "augment_to": 32, "width": 16, "code_dim": 8,
                             "codebook_size": 32, "n_down": 2, "n_res": 1}),
    "ssl": ("ssl_gaussian", {"image_size": 64, "epochs": 1, "batch_size": 8}),
}


@pytest.fixture(scope="session")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("analysis")
    data = root / "cat"
    make_synthetic(data, n_train=30, n_test_good=8, n_test_defect=8, size=64)
    runs = {}
    for name, (method, options) in TINY.items():
        fit_run(root / name, method, str(data), "auto", {}, None, dict(options), 0, False, True, 0.2, 0.1)
        runs[name] = root / name
    return data, runs


@pytest.fixture(scope="session")
def analysed(fitted, tmp_path_factory):
    data, runs = fitted
    out = tmp_path_factory.mktemp("analysis_out")
    result = analyze(list(runs.values()), out, str(data), use_umap=False, progress=False, say=lambda _: None)
    return out, result
