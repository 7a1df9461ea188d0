"""A small synthetic MVTec-layout set for the auto fits of this folder's tests."""

import pytest

from latentad.data.synthetic import make_synthetic


@pytest.fixture(scope="package")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn") / "cat"
    make_synthetic(root, n_train=40, n_test_good=3, n_test_defect=3, size=48)
    return root
