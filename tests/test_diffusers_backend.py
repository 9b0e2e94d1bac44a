"""The diffusers backend against the diffusers models it wraps (tiny random models, saved locally)."""

import shutil
import sys

import pytest
import torch

from diffusers_helpers import diffusers, save_tiny_sd, tiny_scheduler, tiny_sd_dir  # noqa: F401
from nfsd_core.models import NoiseRequest, noise_from_v
from nfsd_core.models.diffusers import DiffusersLatentCodec, load_diffusers, vae_downscale_factor


@pytest.fixture(scope="module")
def loaded(tiny_sd_dir):
    return load_diffusers(tiny_sd_dir)


def count_calls(module: torch.nn.Module) -> list:
    calls = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_loader_reads_schedule_prediction_type_and_vae_geometry(tiny_sd_dir, loaded):
    model, codec = loaded
    scheduler = tiny_scheduler()
    assert torch.allclose(model.schedule.alphas_cumprod, scheduler.alphas_cumprod.double())
    assert model.prediction_type == "epsilon"
    assert (codec.downscale_factor, codec.latent_channels, codec.scaling_factor) == (8, 4, 0.18215)
    assert vae_downscale_factor(tiny_sd_dir) == 8


def test_predictions_equal_the_unet_called_directly_in_one_forward(loaded):
    model, _ = loaded
    cat, empty = model.encode_prompt("a cat"), model.encode_prompt("")
    x_t, t = torch.randn(3, 4, 8, 8), torch.tensor([5, 400, 900])
    calls, before = count_calls(model.unet), model.forward_calls
    rows = torch.tensor([0, 2])
    e_c, e_u = model.predict_noise(x_t, t, [NoiseRequest(cat), NoiseRequest(empty, rows)])
    assert len(calls) == 1 and model.forward_calls == before + 1
    with torch.no_grad():
        direct_c = model.unet(x_t, t, encoder_hidden_states=cat.expand(3, -1, -1)).sample
        direct_u = model.unet(x_t[rows], t[rows], encoder_hidden_states=empty.expand(2, -1, -1)).sample
    torch.testing.assert_close(e_c, direct_c, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(e_u, direct_u, atol=1e-5, rtol=1e-5)


def test_text_embeddings_are_encoded_once_per_prompt(tiny_sd_dir):
    model, _ = load_diffusers(tiny_sd_dir)
    calls = count_calls(model.text_encoder)
    first = model.encode_prompt("a red cube")
    assert model.encode_prompt("a red cube") is first and len(calls) == 1
    other = model.encode_prompt("a blue sphere")
    assert len(calls) == 2 and not torch.equal(first, other)
    assert first.shape == (1, 128, 32)


def test_v_prediction_model_returns_the_true_noise(tmp_path):
    """A UNet whose output is exactly v = 0 describes x0 = sqrt(ab / (1 - ab)) eps; its eps must be eps."""
    model, _ = load_diffusers(save_tiny_sd(tmp_path, prediction_type="v_prediction"))
    assert model.prediction_type == "v_prediction"
    torch.nn.init.zeros_(model.unet.conv_out.weight)
    torch.nn.init.zeros_(model.unet.conv_out.bias)
    t, eps = torch.tensor([50, 500, 950]), torch.randn(3, 4, 8, 8)
    ab = model.schedule.alpha_bar(t).view(-1, 1, 1, 1)
    x_t = model.schedule.add_noise((ab / (1 - ab)).sqrt() * eps, eps, t)
    (predicted,) = model.predict_noise(x_t, t, [NoiseRequest(model.encode_prompt("x"))])
    torch.testing.assert_close(predicted, eps, atol=1e-5, rtol=1e-5)


def test_v_to_noise_conversion_inverts_diffusers_velocity():
    scheduler = tiny_scheduler("v_prediction")
    z, eps, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([10, 800])
    v = scheduler.get_velocity(z, eps, t)
    x_t = scheduler.add_noise(z, eps, t)
    torch.testing.assert_close(noise_from_v(v, x_t, scheduler.alphas_cumprod[t]), eps, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype, tolerance", [("fp16", 0.01), ("bf16", 0.05)])
def test_half_precision_runs_and_matches_fp32(tiny_sd_dir, loaded, dtype, tolerance):
    reference_model, reference_codec = loaded
    model, codec = load_diffusers(tiny_sd_dir, dtype=dtype)
    assert next(model.unet.parameters()).dtype == model.dtype != torch.float32
    x_t, t = torch.randn(2, 4, 8, 8), torch.tensor([100, 700])
    (half,) = model.predict_noise(x_t, t, [NoiseRequest(model.encode_prompt("a cat"))])
    (full,) = reference_model.predict_noise(x_t, t, [NoiseRequest(reference_model.encode_prompt("a cat"))])
    assert half.dtype == torch.float32
    assert (half - full).abs().max() <= tolerance * full.abs().max()
    images = torch.rand(1, 3, 32, 32)
    assert codec.decode(codec.encode(images)).dtype == torch.float32
    # The tiny VAE's config asks for force_upcast, like Stable Diffusion's: fp16 runs it in fp32.
    assert codec.dtype == (torch.float32 if dtype == "fp16" else torch.bfloat16)


def test_codec_encode_is_differentiable_and_scaled(loaded):
    _, codec = loaded
    images = torch.rand(2, 3, 64, 48, requires_grad=True)
    latents = codec.encode(images)
    assert latents.shape == (2, 4, 8, 6)
    latents.square().sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    with torch.no_grad():
        mean = codec.vae.encode(images * 2 - 1).latent_dist.mean
    torch.testing.assert_close(latents.detach(), mean * 0.18215)
    decoded = codec.decode(latents.detach())
    assert decoded.shape == (2, 3, 64, 48) and 0 <= decoded.min() and decoded.max() <= 1


def test_the_encoder_recomputes_its_blocks_in_backward_and_gives_the_same_gradients(loaded):
    """The codec's encoder keeps only its blocks' inputs for backward; its gradients equal those of the
    plain encoder bit for bit (a copy of the VAE without the recomputing wrappers)."""
    import copy

    _, codec = loaded
    plain = copy.deepcopy(codec.vae)
    for module in plain.encoder.modules():
        module.__dict__.pop("forward", None)  # back to the class's forward
    images = torch.rand(1, 3, 64, 48, requires_grad=True)
    weights = torch.randn(1, 4, 8, 6)

    def image_gradient(encode) -> torch.Tensor:
        images.grad = None
        (encode(images) * weights).sum().backward()
        return images.grad

    recomputed = image_gradient(codec.encode)
    kept = image_gradient(lambda x: plain.encode(x * 2 - 1).latent_dist.mean * codec.scaling_factor)
    assert torch.equal(recomputed, kept)
    assert sum(getattr(module.forward, "recomputes", False) for module in codec.vae.encoder.modules()) >= 3


def test_codec_applies_the_shift_factor(loaded):
    _, codec = loaded
    shifted = DiffusersLatentCodec(codec.vae)
    shifted.shift_factor = 0.5
    images = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(shifted.encode(images), codec.encode(images) - 0.5 * codec.scaling_factor)


def config_only_copy(source, destination, drop=()):
    """A copy of an SD directory without weights (and without the subfolders in `drop`)."""
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns("*.safetensors", *drop))
    return destination


def test_loader_refuses_what_is_not_a_diffusers_sd_directory(tiny_sd_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_diffusers(tmp_path / "nowhere")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="is a file.*from_single_file"):
        load_diffusers(tmp_path / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="unet/config.json is missing"):
        load_diffusers(config_only_copy(tiny_sd_dir, tmp_path / "no-unet", drop=("unet",)))
    with pytest.raises(FileNotFoundError, match="tokenizer/ is missing"):
        load_diffusers(config_only_copy(tiny_sd_dir, tmp_path / "no-tokenizer", drop=("tokenizer",)))
    sdxl = config_only_copy(tiny_sd_dir, tmp_path / "sdxl")
    (sdxl / "text_encoder_2").mkdir()
    with pytest.raises(ValueError, match="SDXL"):
        load_diffusers(sdxl)


def test_loader_refuses_sample_prediction_before_loading_weights(tiny_sd_dir, tmp_path):
    broken = config_only_copy(tiny_sd_dir, tmp_path / "x0")
    config = broken / "scheduler" / "scheduler_config.json"
    config.write_text(config.read_text().replace('"epsilon"', '"sample"'))
    with pytest.raises(ValueError, match="prediction_type 'sample'"):
        load_diffusers(broken)
    assert vae_downscale_factor(broken) == 8  # read from the config alone


def test_missing_diffusers_names_the_extra_to_install(tiny_sd_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(ImportError, match=r"\[diffusers\]"):
        load_diffusers(tiny_sd_dir)
