"""The mesh texture as a representation: the mesh it takes, its renders, guidance views, state and resumes."""

import dataclasses

import pytest
import torch

from nfsd_core import OptimizerSettings, Prompts, ScoreDistillation, optimize
from nfsd_core.checkpoint import CheckpointError, load_checkpoint
from nfsd_core.identity import run_identity
from nfsd_core.nerf import (BackgroundSettings, CameraSettings, make_cameras, render_turntable, training_views,
                            z_up_to_y_up)
from nfsd_core.optimize import REPRESENTATION_RANDOMNESS
from nfsd_core.preview import LatentToRGB
from nfsd_core.texture import MAX_FACES, Surface, TextureRepresentation, TextureSettings, check_mesh
from nfsd_core.texture.surface import y_up_to_renderer
from nfsd_core.timesteps import NoiseStream

from nerf_helpers import PoolingCodec, pull_towards_denoiser
from texture_helpers import icosphere, position_colours, tiny_texture_settings

STEPS = 6


def sphere_surface(**mesh) -> Surface:
    vertices, faces = icosphere(subdivisions=2, radius=0.4)
    return Surface.from_mesh(vertices, faces, **mesh)


def guidance(model):
    return ScoreDistillation(model, Prompts.from_text(model, "a red ball", view_dependent=True), rule="nfsd", seed=7)


def run(directory, steps=STEPS, interrupt_after=None, settings=None):
    """`optimize` a fresh tiny texture, optionally raising KeyboardInterrupt inside step `interrupt_after`'s render."""
    texture = TextureRepresentation(sphere_surface(), settings or tiny_texture_settings(), codec=PoolingCodec())
    steps_started = []

    def check_interrupt():
        if interrupt_after is not None and len(steps_started) > interrupt_after:
            raise KeyboardInterrupt

    texture.attach(check_interrupt=check_interrupt)
    result = optimize(texture, guidance(pull_towards_denoiser()), steps, OptimizerSettings(lr=0.01),
                      should_stop=lambda: steps_started.append(1) and False, checkpoint_dir=directory,
                      checkpoint_every=4)
    return texture, result


@pytest.mark.parametrize("bank", [0, 5])
def test_an_interrupted_and_resumed_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path, bank):
    settings = tiny_texture_settings(camera_bank=bank)
    straight, result = run(tmp_path / "straight", settings=settings)
    with pytest.raises(KeyboardInterrupt):  # Cancel inside the fourth step's render
        run(tmp_path / "resumed", interrupt_after=3, settings=settings)
    resumed, resumed_result = run(tmp_path / "resumed", settings=settings)
    assert resumed_result.steps_done == result.steps_done == STEPS
    assert [r.t for r in resumed_result.history] == [r.t for r in result.history]
    expected, actual = straight.state_dict(), resumed.state_dict()
    assert expected.keys() == actual.keys() and not any(name.startswith(("vertices", "faces")) for name in actual)
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    fresh = TextureRepresentation(sphere_surface(), settings).state_dict()
    assert not torch.equal(fresh["field.encoding.tables.3"], actual["field.encoding.tables.3"])


def test_cancel_stops_a_steps_backward_through_the_render():
    texture = TextureRepresentation(sphere_surface(), tiny_texture_settings(), codec=PoolingCodec())
    cancelled = []

    def check_interrupt():
        if cancelled:
            raise KeyboardInterrupt

    texture.attach(check_interrupt=check_interrupt)
    view = texture.render_for_guidance(0, 1, torch.Generator().manual_seed(0))
    cancelled.append(True)  # Cancel pressed after the render, while the step goes on
    with pytest.raises(KeyboardInterrupt):
        view.latents.sum().backward()
    assert all(parameter.grad is None for parameter in texture.field.parameters())  # stopped before reaching them


def test_guidance_views_say_the_elevation_when_the_texture_cameras_name_it():
    """The texture's cameras name their views as a NeRF's do: with view_elevation_step, each name says
    the elevation, one of the names the Optimizer checks View Prompts against (training_views)."""
    cameras = dataclasses.replace(TextureSettings().cameras, view_elevation_step=10)
    texture = TextureRepresentation(sphere_surface(), tiny_texture_settings(batch_size=4, cameras=cameras),
                                    codec=PoolingCodec())
    seen = set()
    for step in range(3):
        generator = NoiseStream(0).generator(step, REPRESENTATION_RANDOMNESS)
        seen.update(texture.render_for_guidance(step, 10, generator).views)
    assert len(seen) > 3 and seen <= set(training_views(cameras))
    assert all(", elevation " in view for view in seen)


def test_a_checkpoint_of_another_mesh_is_refused(tmp_path):
    texture, _ = run(tmp_path, steps=2)
    vertices, faces = icosphere(subdivisions=2, radius=0.3)
    other = TextureRepresentation(Surface.from_mesh(vertices, faces), tiny_texture_settings())
    identity = run_identity(other, guidance(pull_towards_denoiser()), 2, OptimizerSettings(lr=0.01))
    with pytest.raises(CheckpointError, match="representation.mesh.digest"):
        load_checkpoint(tmp_path, other, torch.optim.AdamW(other.parameter_groups(0.01)), identity)
    again = TextureRepresentation.from_config(texture.config(), sphere_surface())
    assert again.config() == texture.config()
    with pytest.raises(ValueError, match="another mesh"):
        TextureRepresentation.from_config(texture.config(), other.surface)


def test_a_guidance_view_holds_encoded_latents_views_and_gradients():
    texture = TextureRepresentation(sphere_surface(), tiny_texture_settings(batch_size=3), codec=PoolingCodec())
    view = texture.render_for_guidance(0, 10, NoiseStream(0).generator(0, REPRESENTATION_RANDOMNESS))
    assert view.latents.shape == (3, 4, 8, 8)  # 16 px renders, resized to 32 px, 4x pooled
    assert len(view.views) == 3 and set(view.views) <= {"front", "side", "back", "overhead"}
    assert 0.1 < view.stats["coverage"] < 0.9
    view.latents.sum().backward()
    assert texture.field.encoding.tables[0].grad.abs().sum() > 0 and texture.field.net[0].weight.grad.abs().sum() > 0
    assert texture.background.net[0].weight.grad.abs().sum() > 0
    groups = {group["name"]: group["lr"] for group in texture.parameter_groups(0.01)}
    assert groups == pytest.approx({"encoding": 0.01, "networks": 0.001, "background": 0.001})


def test_the_texture_starts_from_the_meshs_colours_and_renders_them():
    vertices, faces = icosphere(subdivisions=3, radius=0.4)
    colours = position_colours(vertices)
    texture = TextureRepresentation(Surface.from_mesh(vertices, faces, colours, fit_radius=0.0), tiny_texture_settings(
        background=BackgroundSettings(kind="random"), shading="albedo"))
    with torch.no_grad():
        assert (texture.vertex_colour() - colours).abs().max() < 1e-3  # the field adds ~0 at the start
        render = texture.render(make_cameras([0.0], [0.0], [1.5], [40.0]), 32, 32)
    covered = render.opacity[0, ..., 0] > 0
    centre = render.colour[0, 16, 16]  # the front of the sphere: renderer +x is the mesh's +z (y up)
    front = colours[vertices[:, 2].argmax()]
    assert (centre - front).abs().max() < 0.05
    assert torch.equal(render.colour[0][~covered], torch.ones(int((~covered).sum()), 3))  # white evaluation background


def test_lambertian_shading_darkens_the_side_turned_from_the_light():
    settings = tiny_texture_settings(shading="lambertian", light=(0.0, 0.0, 1.0), ambient=0.2,
                                     background=BackgroundSettings(kind="random"))
    texture = TextureRepresentation(sphere_surface(), settings)
    with torch.no_grad():
        render = texture.render(make_cameras([0.0], [0.0], [1.5], [40.0]), 32, 32, normals=True)
    top, bottom = render.colour[0, 10, 16], render.colour[0, 22, 16]
    assert top.mean() > 2 * bottom.mean()  # lit from above: the lower half only sees the ambient light
    assert render.normal[0, 10, 16, 2] > 0.3 and render.normal[0, 22, 16, 2] < -0.3


def test_a_latent_texture_renders_latents_and_starts_from_colours_through_the_preview_map():
    matrix = torch.tensor([[0.3, -0.1, 0.1, 0.0], [0.2, 0.2, -0.1, 0.0], [0.2, 0.2, 0.2, -0.3]])
    latent_rgb = LatentToRGB(matrix, torch.full((3,), 0.5))
    vertices, faces = icosphere(subdivisions=2, radius=0.4)
    colours = position_colours(vertices)
    texture = TextureRepresentation(Surface.from_mesh(vertices, faces, colours), tiny_texture_settings(colour="latent"),
                                    latent_rgb=latent_rgb)
    view = texture.render_for_guidance(0, 2, torch.Generator().manual_seed(0))
    assert view.latents.shape == (2, 4, 8, 8)  # guidance_size 32 / latent_downscale 4
    with torch.no_grad():
        mapped = latent_rgb(texture.vertex_colour()[:, :, None, None])[:, :, 0, 0]
    assert (mapped - colours).abs().max() < 1e-3
    with pytest.raises(ValueError, match="latent-to-RGB map"):
        TextureRepresentation(Surface.from_mesh(vertices, faces, colours), tiny_texture_settings(colour="latent"))


def test_the_camera_bank_casts_each_camera_once_and_keeps_azimuths_spread():
    texture = TextureRepresentation(sphere_surface(), tiny_texture_settings(camera_bank=8, batch_size=2))
    casts = []
    original = texture.visibility
    texture.visibility = lambda *args: casts.append(1) or original(*args)
    for step in range(20):
        cameras, hits = texture.training_views(torch.Generator().manual_seed(step))
        assert hits.face.shape == (2, 16, 16)
        azimuths = sorted(((cameras.azimuth + 180) % 360).tolist())
        assert azimuths[0] < 180 <= azimuths[1]  # one camera from each half of the bank
    assert len(casts) == len(texture._bank_hits) <= 8


def test_turntables_render_the_texture_from_the_front_around():
    texture = TextureRepresentation(sphere_surface(), tiny_texture_settings())
    frames = render_turntable(texture, frames=4, size=24, normals=True)
    assert frames.colour.shape == (4, 24, 24, 3) and frames.normal.shape == (4, 24, 24, 3)
    assert ((frames.opacity > 0) == (frames.depth > 0)).all()


def test_meshes_are_checked_before_anything_of_their_size_is_made():
    vertices, faces = icosphere(subdivisions=1)
    with pytest.raises(ValueError, match="is empty"):
        check_mesh(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.int64))
    bad = vertices.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        check_mesh(bad, faces)
    with pytest.raises(ValueError, match=f"index vertices 0 to {len(vertices)}"):
        check_mesh(vertices, torch.cat([faces, torch.tensor([[0, 1, len(vertices)]])]))
    with pytest.raises(ValueError, match="not whole numbers"):
        check_mesh(vertices, faces.float() + 0.5)
    huge = torch.zeros(1, 3, dtype=torch.int64).expand(10_000_000, 3)  # a view: no memory
    with pytest.raises(ValueError, match=f"more than the {MAX_FACES} faces"):
        check_mesh(vertices, huge)
    with pytest.raises(ValueError, match="no triangle of any area"):
        check_mesh(vertices, torch.zeros(4, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="vertex colours"):
        check_mesh(vertices, faces, torch.zeros(3, 3))
    float_faces = check_mesh(vertices, faces.float())[1]  # VoxelToMesh's faces are floats
    assert float_faces.dtype == torch.int64 and torch.equal(float_faces, faces)


def test_cameras_inside_the_mesh_are_refused_with_the_fix():
    vertices, faces = icosphere(subdivisions=1, radius=2.0)
    with pytest.raises(ValueError, match="lower fit_radius"):
        TextureRepresentation(Surface.from_mesh(vertices, faces, fit_radius=0.0), tiny_texture_settings())
    fitted = Surface.from_mesh(vertices, faces, fit_radius=0.5)
    assert fitted.radius == pytest.approx(0.5, abs=1e-5)
    TextureRepresentation(fitted, tiny_texture_settings())


@pytest.mark.parametrize("front", ["+z", "-z", "+x", "-x"])
def test_the_front_named_faces_the_front_camera(front):
    axis = {"+z": (0.0, 0.0, 1.0), "-z": (0.0, 0.0, -1.0), "+x": (1.0, 0.0, 0.0), "-x": (-1.0, 0.0, 0.0)}[front]
    assert torch.allclose(y_up_to_renderer(torch.tensor([axis]), front), torch.tensor([[1.0, 0.0, 0.0]]))
    up = y_up_to_renderer(torch.tensor([[0.0, 1.0, 0.0]]), front)
    assert torch.allclose(up, torch.tensor([[0.0, 0.0, 1.0]]))
    points = torch.randn(5, 3)
    assert torch.allclose(y_up_to_renderer(z_up_to_y_up(points)), points)  # the NeRF's meshes come back


def test_bad_settings_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="shading 'albedo' with colour 'latent'"):
        TextureSettings(colour="latent", shading="lambertian")
    with pytest.raises(ValueError, match="choose one of \\+z, -z, \\+x, -x"):
        TextureSettings(front="up")
    with pytest.raises(ValueError, match="camera_bank must be a whole number"):
        TextureSettings(camera_bank=-1)
    with pytest.raises(ValueError, match="light must be a direction"):
        TextureSettings(light=(0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="codec"):
        TextureRepresentation(sphere_surface(), tiny_texture_settings()).render_for_guidance(0, 2, torch.Generator())
    assert TextureSettings.from_config(TextureSettings(cameras=CameraSettings(fovy_range=(30.0, 50.0))).to_config()) \
        == TextureSettings(cameras=CameraSettings(fovy_range=(30.0, 50.0)))
