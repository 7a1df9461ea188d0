"""The shared trainer: a run interrupted after a checkpoint and resumed equals an uninterrupted run."""

import torch
from torch import nn

from latentad.training import CHECKPOINT_JSON, TrainSchedule, lr_at, train_model


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))


def _loss(model, x):
    noise = torch.randn_like(x) * 0.01  # uses the global RNG, like a VAE's sampling
    return {"loss": ((model(x + noise) - x) ** 2).mean()}


SCHEDULE = TrainSchedule(epochs=4, lr=1e-2, batch_size=4, augment_to=12, max_angle=30, channels_last=False)


def test_resume_after_a_kill_reproduces_the_uninterrupted_run(tmp_path):
    images = torch.rand(10, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    full = _model()
    train_model(full, images, _loss, SCHEDULE, seed=3, checkpoint_dir=tmp_path / "a")

    calls = {"n": 0}

    def dying_loss(model, x):
        calls["n"] += 1
        if calls["n"] == 3 * 2 + 1:  # first step of the third epoch (3 steps per epoch)
            raise KeyboardInterrupt
        return _loss(model, x)

    cut = _model()
    try:
        train_model(cut, images, dying_loss, SCHEDULE, seed=3, checkpoint_dir=tmp_path / "b")
    except KeyboardInterrupt:
        pass
    assert (tmp_path / "b" / CHECKPOINT_JSON).is_file()
    resumed = _model()
    history = train_model(resumed, images, _loss, SCHEDULE, seed=3, checkpoint_dir=tmp_path / "b", resume=True)
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert len(list((tmp_path / "b").glob("checkpoint-epoch*.safetensors"))) == 1


def test_different_seeds_train_differently():
    images = torch.rand(6, 1, 16, 16)
    a, b = _model(), _model()
    sched = TrainSchedule(epochs=1, lr=1e-2, batch_size=3, channels_last=False)
    train_model(a, images, _loss, sched, seed=0)
    train_model(b, images, _loss, sched, seed=1)
    assert not torch.equal(a[0].weight, b[0].weight)


def test_cosine_schedule_warms_up_then_decays_to_its_floor():
    s = TrainSchedule(lr=1.0, warmup_epochs=1, min_lr_ratio=0.1)
    assert lr_at(s, 0, 100, 10) == 0.1
    assert lr_at(s, 9, 100, 10) == 1.0
    assert abs(lr_at(s, 100, 100, 10) - 0.1) < 1e-12
    assert lr_at(s, 50, 100, 10) < lr_at(s, 20, 100, 10)


def test_deterministic_algorithms_restores_the_callers_setting():
    from torch.utils import deterministic

    from latentad.training import deterministic_algorithms

    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              deterministic.fill_uninitialized_memory)
    with deterministic_algorithms():
        assert torch.are_deterministic_algorithms_enabled()
        assert not deterministic.fill_uninitialized_memory  # a pass over every new tensor, read by no kernel here
    assert (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            deterministic.fill_uninitialized_memory) == before


def _vqvae_weights_after_training(threads: int) -> list[torch.Tensor]:
    from latentad.registry import create

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        images = torch.rand(32, 3, 64, 64, generator=gen)
        det = create("vqvae_ssim_am", image_size=64, n_down=3, width=64, code_dim=64, codebook_size=512,
                     epochs=2, augment_to=64, batch_size=16)
        torch.manual_seed(0)
        model = det.build_model()
        train_model(model, images, det.loss, det.schedule(), seed=0)
        return [v.detach().clone() for v in model.state_dict().values()]
    finally:
        torch.set_num_threads(previous)


def test_two_thread_training_repeats_bit_for_bit():
    """Multi-threaded CPU backward kernels otherwise accumulate in a thread-dependent order."""
    a, b = _vqvae_weights_after_training(2), _vqvae_weights_after_training(2)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def _ae_ssim_training(threads: int, tmp_path, kill_at: int | None = None, resume: bool = False) -> list[torch.Tensor]:
    """A small channels-last AE SSIM (the NCHW weight gradient of its transposed convolutions included)."""
    from latentad.registry import create

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    calls = {"n": 0}
    det = create("ae_ssim", image_size=32, n_down=3, base_width=8, latent_dim=8, epochs=3, augment_to=16, batch_size=8)

    def loss(model, x):
        calls["n"] += 1
        if calls["n"] == kill_at:
            raise KeyboardInterrupt
        return det.loss(model, x)

    try:
        torch.manual_seed(0)
        model = det.build_model()
        images = torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        try:
            train_model(model, images, loss, det.schedule(), seed=0, checkpoint_dir=tmp_path, resume=resume)
        except KeyboardInterrupt:
            pass
        return [v.detach().clone() for v in model.state_dict().values()]
    finally:
        torch.set_num_threads(previous)


def test_ae_ssim_two_thread_training_repeats_and_resumes_bit_for_bit(tmp_path):
    full = _ae_ssim_training(2, tmp_path / "a")
    assert all(torch.equal(x, y) for x, y in zip(full, _ae_ssim_training(2, tmp_path / "b"), strict=True))
    _ae_ssim_training(2, tmp_path / "c", kill_at=2 * 2 + 1)  # first step of the third epoch
    resumed = _ae_ssim_training(2, tmp_path / "c", resume=True)
    assert all(torch.equal(x, y) for x, y in zip(full, resumed, strict=True))


def test_flips_run_without_augment_to():
    """paper_cifar sets flips=True and augment_to=None: the flips must still happen."""
    from latentad.registry import create
    from latentad.training import augment_batch

    cifar = create("vqvae_ssim", "paper_cifar").schedule()
    assert cifar.flips and cifar.augment_to is None
    images = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    out = augment_batch(images, cifar, torch.Generator().manual_seed(1))
    assert not torch.equal(out, images)
    flipped = {i for i in range(64) for j in range(64)
               if torch.equal(out[i], images[j].flip(-1)) or torch.equal(out[i], images[j].flip(-2))}
    assert len(flipped) > 16  # about three images in four are flipped one way or the other
    still = TrainSchedule(rotation=False, flips=False, augment_to=None)
    assert torch.equal(augment_batch(images, still, torch.Generator().manual_seed(1)), images)


def test_resume_refuses_a_checkpoint_written_with_another_schedule(tmp_path):
    import dataclasses

    import pytest

    from latentad.errors import ConfigError

    images = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    short = dataclasses.replace(SCHEDULE, epochs=2)
    train_model(_model(), images, _loss, short, seed=3, checkpoint_dir=tmp_path)
    for change, word in [({"epochs": 5}, "epochs 2 -> 5"), ({"lr": 0.1}, "lr 0.01 -> 0.1"),
                         ({"batch_size": 2}, "batch_size 4 -> 2")]:
        with pytest.raises(ConfigError, match=word):
            train_model(_model(), images, _loss, dataclasses.replace(short, **change), seed=3,
                        checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ConfigError, match="seed 3 -> 4"):
        train_model(_model(), images, _loss, short, seed=4, checkpoint_dir=tmp_path, resume=True)
    train_model(_model(), images, _loss, short, seed=3, checkpoint_dir=tmp_path, resume=True)  # same: fine


def test_a_detector_refuses_resume_with_other_settings_before_training(tmp_path):
    import pytest

    from latentad.data.synthetic import make_synthetic
    from latentad.errors import ConfigError
    from latentad.registry import create

    split = make_synthetic(n_train=6, n_test_good=1, n_test_defect=1, size=32, seed=0)
    tiny = {"image_size": 32, "augment_to": 8, "batch_size": 4, "base_width": 4, "latent_dim": 4}
    det = create("ae_l2", epochs=1, **tiny)
    det.set_checkpointing(tmp_path)
    det.fit(split.train)
    again = create("ae_l2", epochs=3, **tiny)
    with pytest.raises(ConfigError, match="epochs 1 -> 3"):
        again.set_checkpointing(tmp_path, resume=True)
