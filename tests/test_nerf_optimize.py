"""The NeRF in nfsd_core's optimisation loop: guidance views, state, and lossless resumes."""

import pytest
import torch

from nfsd_core import OptimizerSettings, Prompts, ScoreDistillation, optimize
from nfsd_core.checkpoint import CheckpointError, load_checkpoint
from nfsd_core.identity import run_identity
from nfsd_core.nerf import (BackgroundSettings, CameraSettings, NerfRepresentation, NerfSettings, Ramp, make_cameras,
                            sample_cameras, training_views, view_names)
from nfsd_core.preview import LatentToRGB
from nfsd_core.optimize import REPRESENTATION_RANDOMNESS
from nfsd_core.timesteps import NoiseStream

from nerf_helpers import PoolingCodec, pull_towards_denoiser, tiny_settings

STEPS = 6


def guidance(model, rule="nfsd"):
    prompts = Prompts.from_text(model, "a red ball", view_dependent=True)
    return ScoreDistillation(model, prompts, rule=rule, seed=7)


def run(directory, steps=STEPS, interrupt_after=None, settings=None):
    """`optimize` a fresh tiny NeRF, optionally raising KeyboardInterrupt after `interrupt_after` steps."""
    nerf = NerfRepresentation(settings or tiny_settings(), codec=PoolingCodec())

    def on_step(record):
        if interrupt_after is not None and record.step + 1 == interrupt_after:
            raise KeyboardInterrupt

    result = optimize(nerf, guidance(pull_towards_denoiser()), steps, OptimizerSettings(lr=0.01),
                      on_step=on_step, checkpoint_dir=directory, checkpoint_every=4)
    return nerf, result


def test_an_interrupted_and_resumed_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path):
    straight, result = run(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed", interrupt_after=3)
    resumed, resumed_result = run(tmp_path / "resumed")
    assert resumed_result.steps_done == result.steps_done == STEPS
    assert [r.t for r in resumed_result.history] == [r.t for r in result.history]
    expected, actual = straight.state_dict(), resumed.state_dict()
    assert expected.keys() == actual.keys()
    assert "occupancy.estimator.binaries" in actual and "occupancy.estimator.occs" in actual
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    # the run did move the parameters and refresh the occupancy grid
    fresh = NerfRepresentation(tiny_settings()).state_dict()
    assert not torch.equal(fresh["field.encoding.tables.5"], actual["field.encoding.tables.5"])
    assert not torch.equal(fresh["occupancy.estimator.binaries"], actual["occupancy.estimator.binaries"])


def test_the_checkpoint_round_trips_every_tensor_and_refuses_other_settings(tmp_path):
    nerf, _ = run(tmp_path, steps=2)
    again = NerfRepresentation.from_config(nerf.config(), codec=PoolingCodec())
    optimizer = torch.optim.AdamW(again.parameter_groups(0.01))
    identity = run_identity(again, guidance(pull_towards_denoiser()), 2, OptimizerSettings(lr=0.01))
    checkpoint = load_checkpoint(tmp_path, again, optimizer, identity)
    assert checkpoint.step == 2
    for name, value in nerf.state_dict().items():
        assert torch.equal(value, again.state_dict()[name]), name
    other = NerfRepresentation(tiny_settings(samples_per_ray=8))
    other_identity = run_identity(other, guidance(pull_towards_denoiser()), 2, OptimizerSettings(lr=0.01))
    with pytest.raises(CheckpointError, match="representation.settings.samples_per_ray: saved 24, now 8"):
        load_checkpoint(tmp_path, other, torch.optim.AdamW(other.parameter_groups(0.01)), other_identity)


def test_the_codec_is_neither_state_nor_a_parameter():
    codec = PoolingCodec()
    nerf = NerfRepresentation(tiny_settings(), codec=codec)
    assert all(not name.startswith("codec") for name in nerf.state_dict())
    assert all(param is not codec.mix for param in nerf.parameters())
    grouped = sum(len(group["params"]) for group in nerf.parameter_groups(0.01))
    assert grouped == len(list(nerf.parameters()))


def test_parameter_groups_use_threestudio_learning_rates():
    groups = {g["name"]: g for g in NerfRepresentation(tiny_settings()).parameter_groups(0.01)}
    assert {name: g["lr"] for name, g in groups.items()} == pytest.approx(
        {"encoding": 0.01, "networks": 0.001, "background": 0.001}
    )


def test_a_guidance_view_holds_encoded_latents_views_and_regularisers():
    background = BackgroundSettings(kind="environment", random_probability=0.0)  # the map gets every gradient
    nerf = NerfRepresentation(tiny_settings(batch_size=3, background=background), codec=PoolingCodec())
    generator = NoiseStream(0).generator(5, REPRESENTATION_RANDOMNESS)
    view = nerf.render_for_guidance(5, 10, generator)  # the orientation loss ramps up from step 0
    assert view.latents.shape == (3, 4, 8, 8)  # 12 px renders, resized to 32 px, 4x pooled
    assert len(view.views) == 3 and set(view.views) <= {"front", "side", "back", "overhead"}
    assert set(view.stats) >= {"loss_sparsity", "loss_orientation", "opacity", "render_size"}
    (view.latents.sum() + view.regularization).backward()
    assert nerf.field.encoding.tables[0].grad.abs().sum() > 0
    assert nerf.background.net[0].weight.grad.abs().sum() > 0


def test_guidance_views_say_the_elevation_when_the_cameras_name_it(monkeypatch):
    import nfsd_core.nerf.representation as representation

    drawn = []

    def recorded_cameras(*args):
        drawn.append(sample_cameras(*args))
        return drawn[-1]

    monkeypatch.setattr(representation, "sample_cameras", recorded_cameras)
    settings = tiny_settings(batch_size=4, cameras=CameraSettings(view_elevation_step=10))
    nerf = NerfRepresentation(settings, codec=PoolingCodec())
    seen = set()
    for step in range(3):
        views = nerf.render_for_guidance(step, 10, NoiseStream(0).generator(step, REPRESENTATION_RANDOMNESS)).views
        assert views == view_names(drawn[-1].elevation, drawn[-1].azimuth, 10)
        seen.update(views)
    assert len(seen) > 3 and seen <= set(training_views(settings.cameras))
    assert all(", elevation " in view for view in seen)


def test_the_render_size_follows_the_milestones():
    nerf = NerfRepresentation(tiny_settings(render_sizes=(8, 12, 16), size_milestones=(0.25, 0.75)), codec=PoolingCodec())
    sizes = [nerf.render_for_guidance(step, 8, torch.Generator().manual_seed(step)).stats["render_size"]
             for step in (0, 1, 2, 5, 6, 7)]
    assert sizes == [8, 8, 12, 12, 16, 16]


def test_a_latent_nerf_renders_latents_directly_and_previews_them_through_a_linear_map(tmp_path):
    settings = tiny_settings(colour="latent", guidance_size=64)
    matrix = torch.tensor([[0.3, -0.1, 0.1, 0.0], [0.2, 0.2, -0.1, 0.0], [0.2, 0.2, 0.2, -0.3]])
    nerf, result = run(tmp_path, steps=2, settings=settings)
    assert result.steps_done == 2
    view = nerf.render_for_guidance(2, 4, torch.Generator().manual_seed(0))
    assert view.latents.shape == (1, 4, 8, 8)  # guidance_size 64 / latent_downscale 8
    camera = make_cameras([15.0], [0.0], [1.5], [60.0])
    with torch.no_grad():
        latents = nerf.render(camera, 8, 8).colour
        decoded = nerf.to_rgb(latents)  # through the codec: 4x the size
        nerf.attach(latent_rgb=LatentToRGB(matrix, torch.full((3,), 0.5)))
        mapped = nerf.to_rgb(latents)
    assert decoded.shape == (1, 32, 32, 3) and mapped.shape == (1, 8, 8, 3)
    expected = (torch.einsum("oc,bhwc->bhwo", matrix, latents) + 0.5).clamp(0, 1)
    assert torch.allclose(mapped, expected, atol=1e-6)


def test_bad_settings_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="milestone"):
        NerfSettings(render_sizes=(64, 128), size_milestones=())
    with pytest.raises(ValueError, match="environment"):
        NerfRepresentation(tiny_settings(colour="latent", background=BackgroundSettings(kind="random")))
    with pytest.raises(ValueError, match="codec"):
        NerfRepresentation(tiny_settings()).render_for_guidance(0, 2, torch.Generator())


def test_a_k_times_larger_scale_moves_the_nerf_as_k_times_larger_regularizers_do():
    """What `RegularizerSettings.scaled` rests on: AdamW without weight decay is blind to a common factor of
    the loss, so CSD (whose gradient is the scale times e_c - e_u) at scale 7.5 takes the steps CSD at scale 1
    takes with its regulariser weights divided by 7.5, and not the steps of scale 1 with the weights kept."""
    model = pull_towards_denoiser()
    prompts = Prompts.from_text(model, "a red ball", view_dependent=True)
    regularizers = tiny_settings().regularizers

    def floats(nerf: NerfRepresentation) -> dict[str, torch.Tensor]:
        return {name: value for name, value in nerf.state_dict().items() if value.is_floating_point()}

    def trained(scale: float, factor: float) -> dict[str, torch.Tensor]:
        nerf = NerfRepresentation(tiny_settings(regularizers=regularizers.scaled(factor)), codec=PoolingCodec())
        optimize(nerf, ScoreDistillation(model, prompts, rule="csd", scale=scale, seed=7), STEPS,
                 OptimizerSettings(lr=0.01))
        return floats(nerf)

    def distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
        return sum(float((a[name] - b[name]).abs().sum()) for name in a)

    start, reference = floats(NerfRepresentation(tiny_settings(), codec=PoolingCodec())), trained(7.5, 1.0)
    divided, kept = trained(1.0, 1 / 7.5), trained(1.0, 1.0)
    moved = distance(reference, start)
    assert distance(divided, reference) < 1e-4 * moved  # float rounding only
    assert distance(kept, reference) > 0.02 * moved  # the regularisers' share matters (measured: 0.08)
    assert regularizers.scaled(2.0).opaque == Ramp(0.0, 20.0, 0.5, 0.5)  # weights scale, their timing does not
