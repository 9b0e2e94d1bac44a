"""ComfyLatentCodec: a differentiable encoder from a private copy; the shared VAE stays as it was."""

import pytest
import torch

from comfyui_helpers import comfyui, requires_comfyui  # noqa: F401

pytestmark = requires_comfyui
TINY_KL = {"double_z": True, "z_channels": 4, "resolution": 64, "in_channels": 3, "out_ch": 3, "ch": 32,
           "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}


def kl_vae(runtime):
    """A tiny AutoencoderKL VAE, made in inference mode as ComfyUI's loaders make theirs."""
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL

    with torch.inference_mode():
        autoencoder = runtime.tiny.init_random_(AutoencoderKL(ddconfig=TINY_KL, embed_dim=4), std=0.05)
        return comfy.sd.VAE(sd=autoencoder.state_dict(), config={"params": {"ddconfig": TINY_KL, "embed_dim": 4}})


@pytest.mark.parametrize("kind", ["taesd", "autoencoder_kl"])
def test_encode_is_differentiable_and_matches_comfyui(comfyui, kind):
    codec_module = comfyui.module("nodes.adapters.codec")
    autograd = comfyui.module("nodes.adapters.autograd")
    model, _, vae = comfyui.load_checkpoint()
    if kind == "autoencoder_kl":
        vae = kl_vae(comfyui)
    shared = {name: tensor.clone() for name, tensor in vae.first_stage_model.state_dict().items()}
    latent_format = model.get_model_object("latent_format")
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))

    with torch.inference_mode():  # as inside a node
        codec = codec_module.ComfyLatentCodec(vae, latent_format)
        with autograd.autograd_enabled():
            pixels = images.clone().requires_grad_(True)
            latents = codec.encode(pixels)
            latents.square().sum().backward()
            encoder = codec._encoder
            codec.encode(pixels.detach())
            assert codec._encoder is encoder  # one private copy per codec
            decoded = codec.decode(latents)  # a normal tensor, usable next to autograd
        reference = latent_format.process_in(vae.encode(images.movedim(1, -1)))
        reference_images = vae.decode(latent_format.process_out(latents.detach())).movedim(-1, 1)
        assert torch.is_inference_mode_enabled() and not torch.is_grad_enabled()

    assert latents.shape == (2, 4, 8, 8)
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0
    assert torch.allclose(latents.detach(), reference, atol=1e-5)
    assert torch.allclose(decoded, reference_images, atol=1e-5) and not decoded.is_inference()
    assert not any(p.is_inference() for p in encoder.parameters())
    for name, tensor in vae.first_stage_model.state_dict().items():
        assert tensor.is_inference() and torch.equal(tensor, shared[name]), name


@pytest.mark.parametrize("kind", ["taesd", "autoencoder_kl"])
def test_the_encoder_copy_has_no_decoder_and_recomputes_its_blocks_with_the_same_gradients(comfyui, kind):
    codec_module = comfyui.module("nodes.adapters.codec")
    autograd = comfyui.module("nodes.adapters.autograd")
    model, _, vae = comfyui.load_checkpoint()
    if kind == "autoencoder_kl":
        vae = kl_vae(comfyui)
    latent_format = model.get_model_object("latent_format")
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    weights = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))

    def image_gradient(encode) -> torch.Tensor:
        pixels = images.clone().requires_grad_(True)
        (encode(pixels) * weights).sum().backward()
        return pixels.grad

    with torch.inference_mode(), autograd.autograd_enabled():
        codec = codec_module.ComfyLatentCodec(vae, latent_format)
        recomputed = image_gradient(codec.encode)
        plain = autograd.trainable_copy(vae.first_stage_model)  # decoder and all, nothing recomputed
        kept = image_gradient(lambda pixels: latent_format.process_in(plain.encode(vae.process_input(pixels))))
    assert torch.equal(recomputed, kept)
    assert all(getattr(codec._encoder, name, None) is None for name in codec_module.DECODERS)
    assert sum(getattr(block.forward, "recomputes", False) for block in codec._encoder.modules()) >= 4
    copied = sum(p.numel() for p in codec._encoder.parameters())
    assert copied * 4 == codec_module.encoder_copy_bytes(vae) and copied < sum(
        p.numel() for p in vae.first_stage_model.parameters())


def test_image_size_must_fit_the_vae(comfyui):
    codec_module = comfyui.module("nodes.adapters.codec")
    model, _, vae = comfyui.load_checkpoint()
    codec = codec_module.ComfyLatentCodec(vae, model.get_model_object("latent_format"))
    with pytest.raises(ValueError, match="multiple of the VAE's downscale factor 8"):
        codec.encode(torch.rand(1, 3, 60, 64))
