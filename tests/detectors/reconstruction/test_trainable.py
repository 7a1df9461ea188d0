"""What every trained detector shares: the config decides the channels, and the data are converted."""

import warnings

import pytest

from latentad import create
from latentad.data.synthetic import make_synthetic

TINY = {"image_size": 32, "epochs": 1, "augment_to": 8, "batch_size": 4, "base_width": 4, "latent_dim": 4}


def test_fit_converts_the_data_to_the_configured_channels_with_a_warning():
    grey = make_synthetic(n_train=6, n_test_good=1, n_test_defect=1, size=32, seed=0, channels=1)
    det = create("ae_l2", **TINY)
    with pytest.warns(UserWarning, match=r"1-channel images .* converted to 3 channel"):
        det.fit(grey.train)
    assert det.config.channels == 3 and det.model.encoder[0].in_channels == 3
    assert det.predict(grey.test).anomaly_maps.shape == (2, 32, 32)


def test_fit_on_matching_channels_does_not_warn():
    grey = make_synthetic(n_train=6, n_test_good=1, n_test_defect=1, size=32, seed=0, channels=1)
    det = create("ae_l2", channels=1, **TINY)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        det.fit(grey.train)
    assert det.config.channels == 1
