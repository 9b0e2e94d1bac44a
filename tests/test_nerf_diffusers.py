"""The README's text-to-NeRF example, end to end, on a tiny random Stable Diffusion directory."""

import torch
import trimesh

from diffusers_helpers import tiny_sd_dir  # noqa: F401 (fixture)
from nfsd_core import OptimizerSettings, Prompts, ScoreDistillation, TimestepSchedule, load_diffusers, optimize
from nfsd_core.nerf import BackgroundSettings, NerfRepresentation, export_mesh, extract_mesh, render_turntable

from nerf_helpers import tiny_settings


def test_text_to_nerf_to_turntable_and_mesh_with_the_diffusers_backend(tiny_sd_dir, tmp_path):  # noqa: F811
    model, codec = load_diffusers(tiny_sd_dir)
    prompts = Prompts.from_text(model, "a hamburger", view_dependent=True)
    guidance = ScoreDistillation(model, prompts, rule="nfsd", seed=0,
                                 timesteps=TimestepSchedule(t_max=0.98, t_max_end=0.5, anneal_at=0.5))
    # no random solid backgrounds, so the environment map sees every step's gradient
    settings = tiny_settings(guidance_size=64, background=BackgroundSettings(kind="environment", random_probability=0))
    nerf = NerfRepresentation(settings, codec=codec)
    before = [p.detach().clone() for p in nerf.parameters()]
    result = optimize(nerf, guidance, steps=3, settings=OptimizerSettings(lr=0.01),
                      checkpoint_dir=tmp_path / "run", checkpoint_every=2)
    assert result.steps_done == 3 and all(record.evaluations >= 2 for record in result.history)
    assert all(not torch.equal(a, b) for a, b in zip(before, nerf.parameters()))  # every group moved
    assert not any("vae" in name or "codec" in name for name in nerf.state_dict())

    frames = render_turntable(nerf, frames=2, size=12)
    assert frames.colour.shape == (2, 12, 12, 3)
    path = export_mesh(extract_mesh(nerf, resolution=24, threshold="auto"), tmp_path / "mesh.glb")
    assert len(trimesh.load(path, force="mesh").faces) > 0
