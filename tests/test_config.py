"""One validation of detector configs (types, choices, bounds) and one typing of command-line text."""

import pytest

from latentad import available_methods, create
from latentad.config import coerce_options, coerce_text
from latentad.errors import ConfigError
from latentad.registry import get_method


@pytest.mark.parametrize("method", ["ae_l2", "ae_ssim", "vae_l2", "vae_kl", "vqvae_ssim", "vqvae_ssim_am"])
def test_an_unknown_score_is_refused_by_every_trained_method(method):
    with pytest.raises(ConfigError, match=r"score='median'.*'mean', 'max'"):
        create(method, score="median")


@pytest.mark.parametrize("method, key, value, allowed", [
    ("ae_l2", "lr", -1.0, "> 0"),
    ("ae_ssim", "ssim_window", 10, "odd"),
    ("vqvae_ssim", "ssim_window", 8, "odd"),
    ("patchcore", "coreset_ratio", 1.5, "<= 1"),
    ("vae_l2", "epochs", 0, ">= 1"),
    ("padim", "sigma", -2.0, ">= 0"),
    ("gaussian", "npca", 1.0, "< 1"),
    ("simplenet", "steps", 0, ">= 1"),
])
def test_out_of_range_values_name_the_key_the_value_and_what_is_allowed(method, key, value, allowed):
    with pytest.raises(ConfigError) as err:
        create(method, **{key: value})
    message = str(err.value)
    assert f"{key}={value!r}" in message and allowed in message and "\n" not in message


@pytest.mark.parametrize("method, key, value", [
    ("ae_l2", "epochs", 2.5), ("ae_l2", "rotation", "yes"), ("padim", "levels", "stage3"),
    ("vqvae_ssim", "channels", 2), ("patchcore", "channels", 1), ("ae_l2", "lr", "fast"),
])
def test_wrong_types_are_refused(method, key, value):
    with pytest.raises(ConfigError, match=key):
        create(method, **{key: value})


def test_unknown_keys_are_refused_by_name_for_every_method():
    for method in available_methods():
        with pytest.raises(ConfigError, match=f"{method}: unknown option 'no_such_option'"):
            create(method, no_such_option=3)


def test_none_overrides_a_preset_value():
    assert create("ae_l2", "demo").config.augment_to == 512
    assert create("ae_l2", "demo", augment_to=None).config.augment_to is None


def test_every_preset_of_every_method_passes_validation():
    for method in available_methods():
        for preset in get_method(method).presets:
            create(method, preset)


def test_ints_in_float_fields_become_floats_and_lists_tuples():
    c = create("padim", eps=1, levels=["stage3", "stage4"]).config
    assert type(c.eps) is float and c.levels == ("stage3", "stage4")


def test_command_line_text_is_typed_by_the_field_it_targets():
    cfg = get_method("ae_l2").Config
    typed = coerce_options(cfg, {"augment_to": "null", "lr": "1e-3", "rotation": "false", "score": "max",
                                 "epochs": "3", "unknown": "7"})
    assert typed == {"augment_to": None, "lr": 1e-3, "rotation": False, "score": "max", "epochs": 3, "unknown": "7"}
    levels = coerce_options(get_method("padim").Config, {"levels": "stage3,stage4"})["levels"]
    assert levels == ("stage3", "stage4")
    assert coerce_text("1", str, "normal") == "1"
    with pytest.raises(ConfigError, match=r"option epochs=two: expected int"):
        coerce_options(cfg, {"epochs": "two"})
