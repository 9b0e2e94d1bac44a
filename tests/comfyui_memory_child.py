"""Measures, in a process of its own, what ComfyUI's Stable Diffusion classes take, next to the pack's estimates.

Run by test_comfyui_memory.py with MALLOC_MMAP_THRESHOLD_ in the environment (freed tensors leave
the resident set, see benchmarks/memory_probe.py). Small sizes, seconds in all: the UNets of SD 2.1
and SDXL with 64 channels at the first level instead of 320 (every other dimension of the
architecture kept), on 3 rows of 64 x 64 latents, each after a first call (the process's first, SD 2.1's, is a case
of its own: the workspace it keeps); SD's VAE (its real channels) encoding 128 px
with a graph. Prints one JSON object: per case the measured and the estimated bytes.
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
sys.path[:0] = [str(TESTS), str(TESTS.parent / "benchmarks")]

from torchvision_stub import hide_torchvision_stub  # noqa: E402

hide_torchvision_stub()

import torch  # noqa: E402

from benchmark_scripts import benchmark_script  # noqa: E402
from comfyui_helpers import comfy_runtime  # noqa: E402
from memory_probe import peak_rss, reset_peak, rss  # noqa: E402

LATENT_SIDE, ROWS, CHANNELS, IMAGE_SIDE = 64, 3, 64, 128


def rise(work) -> tuple[object, int, int]:
    """(result, peak rise, lasting rise) of resident memory over `work()`."""
    gc.collect()
    start = rss()
    reset_peak()
    result = work()
    return result, peak_rss() - start, rss() - start


def unet_case(runtime, real_size, name: str) -> dict:
    import comfy.model_detection
    import comfy.model_patcher
    import diffusers

    with torch.device("meta"):
        shapes = diffusers.UNet2DConditionModel(**real_size.ARCHITECTURES[name].unet).state_dict()
    config = comfy.model_detection.unet_config_from_diffusers_unet(shapes, torch.float32)
    model_config = comfy.model_detection.model_config_from_unet_config(config)
    model_config.set_inference_dtype(torch.float32, None)
    model_config.unet_config["model_channels"] = CHANNELS
    base = model_config.get_model({}, "", device=torch.device("cpu"))
    runtime.tiny.init_random_(base.diffusion_model)
    patcher = comfy.model_patcher.ModelPatcher(base, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))
    unet = base.diffusion_model
    inputs = {"x": torch.randn(ROWS, 4, LATENT_SIDE, LATENT_SIDE), "timesteps": torch.full((ROWS,), 500.0),
              "context": torch.randn(ROWS, 77, config["context_dim"])}
    if config.get("adm_in_channels"):
        inputs["y"] = torch.randn(ROWS, config["adm_in_channels"])
    with torch.no_grad():
        _, first, _ = rise(lambda: unet(**inputs))
        _, peak, _ = rise(lambda: unet(**inputs))
    limits, shape = runtime.module("nodes.guards.limits"), [ROWS, 4, LATENT_SIDE, LATENT_SIDE]
    return {"measured": peak, "estimate": limits.model_activation_bytes(patcher, shape),
            "first_call": {"measured": first, "estimate": limits.model_call_bytes(patcher, shape)}}


def vae_case(runtime, real_size) -> dict:
    import comfy.latent_formats

    codec_module = runtime.module("nodes.adapters.codec")
    vae = real_size.comfy_vae("sd21", torch.float32)
    codec = codec_module.ComfyLatentCodec(vae, comfy.latent_formats.SD15())
    images = torch.rand(1, 3, IMAGE_SIDE, IMAGE_SIDE, requires_grad=True)
    codec.encode(images).sum().backward()  # warm-up; makes the trainable copy
    latents, _, kept = rise(lambda: codec.encode(images))
    loss = (latents * torch.randn_like(latents)).sum()
    _, backward, _ = rise(loss.backward)
    weights, kept_estimate, backward_estimate = codec_module.encode_memory(vae, 1, IMAGE_SIDE, IMAGE_SIDE)
    copy = sum(t.numel() * t.element_size() for t in [*codec._encoder.parameters(), *codec._encoder.buffers()])
    return {"kept": {"measured": kept, "estimate": kept_estimate},
            "backward": {"measured": kept + backward, "estimate": backward_estimate},
            "weights": {"measured": copy, "estimate": weights}}


def main() -> None:
    torch.set_num_threads(1)
    runtime = comfy_runtime()
    real_size = benchmark_script("real_size")
    with torch.inference_mode(False), torch.enable_grad():
        sd21 = unet_case(runtime, real_size, "sd21")  # the process's first UNet call: its workspace too
        sdxl = unet_case(runtime, real_size, "sdxl")
        results = {"unet_sd21_first_call": sd21.pop("first_call"), "unet_sd21": sd21, "unet_sdxl": sdxl,
                   **{f"vae_{name}": value for name, value in vae_case(runtime, real_size).items()}}
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    main()
