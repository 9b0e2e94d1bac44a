"""Training the digits prior: a few seeded steps lower the loss and save a loadable SD directory."""

import json

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("sklearn")

from torchvision_stub import hide_torchvision_stub  # noqa: E402

hide_torchvision_stub()  # run alone too: an import-only torchvision would break the diffusers models

from nfsd_core.digits.data import load_digit_split, to_digits, to_images  # noqa: E402
from nfsd_core.priors.degradation import degrade  # noqa: E402
from nfsd_core.digits.prior import load_digits_prior  # noqa: E402
from nfsd_core.digits.training import digits_training_data, train_digits_prior  # noqa: E402
from nfsd_core.priors.training import VAE_STAGE, TrainingSettings, train_prior  # noqa: E402

TINY = TrainingSettings(vae_steps=25, vae_batch=16, denoiser_steps=40, denoiser_batch=32, warmup_steps=5,
                        log_every=1, degraded_copies=1)


@pytest.fixture(scope="module")
def small_split():
    split = load_digit_split()
    return type(split)(split.train_digits[:96], split.train_labels[:96], split.held_out_digits, split.held_out_labels)


def mean_loss(log, stage, key, rows):
    values = [entry[key] for entry in log if entry["stage"] == stage and key in entry][rows]
    return sum(values) / len(values)


def test_split_is_fixed_stratified_and_disjoint():
    split = load_digit_split()
    assert len(split.train_labels) + len(split.held_out_labels) == 1797
    assert split.held_out_labels.bincount().tolist() == [round(0.25 * n) for n in
                                                         (split.held_out_labels.bincount()
                                                          + split.train_labels.bincount()).tolist()]
    assert torch.equal(load_digit_split().train_digits, split.train_digits)


def test_images_are_rgb_32px_and_map_back_to_8x8():
    digits = load_digit_split().train_digits[:8]
    images = to_images(digits)
    assert images.shape == (8, 3, 32, 32) and 0 <= images.min() and images.max() <= 1
    assert torch.equal(images[:, 0], images[:, 2])
    assert (to_digits(images) - digits).abs().mean() < 0.1  # a blur, the same for real and generated
    degraded = degrade(images, torch.Generator().manual_seed(0))
    assert (degraded.std(dim=(1, 2, 3)) < 0.6 * images.std(dim=(1, 2, 3))).all()


def test_a_few_training_steps_reduce_the_loss_and_save_a_loadable_prior(small_split, tmp_path):
    record = train_digits_prior(tmp_path, TINY, small_split, log=lambda entry: None)
    log = record["log"]
    assert mean_loss(log, "vae", "mse", slice(-5, None)) < 0.5 * mean_loss(log, "vae", "mse", slice(0, 5))
    assert mean_loss(log, "denoiser", "loss", slice(-10, None)) < 0.8 * mean_loss(log, "denoiser", "loss", slice(0, 5))
    assert json.loads((tmp_path / "training_log.json").read_text())["settings"]["seed"] == 0
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (tmp_path / part).is_dir()

    model, codec = load_digits_prior(directory=tmp_path)
    latents = codec.encode(to_images(small_split.train_digits[:4]))
    assert latents.shape == (4, 4, 8, 8)
    assert codec.decode(latents).shape == (4, 3, 32, 32)
    assert model.schedule.num_timesteps == 1000
    condition = model.encode_prompt("a handwritten digit seven")
    assert condition.shape == (1, 77, 64)


def test_a_training_stopped_after_the_vae_stage_resumes_to_the_same_prior(small_split, tmp_path):
    whole, split_run = tmp_path / "whole", tmp_path / "split"
    train_digits_prior(whole, TINY, small_split, log=lambda entry: None)
    assert train_prior(split_run, digits_training_data(small_split), TINY, lambda entry: None, vae_only=True) is None
    assert (split_run / VAE_STAGE).is_file() and not (split_run / "unet").exists()
    record = train_digits_prior(split_run, TINY, small_split, log=lambda entry: None)
    assert {"stage": "vae", "resumed_from": VAE_STAGE} in record["log"] and not (split_run / VAE_STAGE).exists()
    for part in ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                 "text_encoder/model.safetensors"):
        assert (split_run / part).read_bytes() == (whole / part).read_bytes(), part
