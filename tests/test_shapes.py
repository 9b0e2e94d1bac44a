"""The 3D prior's data: rendered objects agree with the NeRF renderer and keep their exact truth."""

import math

import pytest
import torch

pytest.importorskip("diffusers")

from torchvision_stub import hide_torchvision_stub  # noqa: E402

hide_torchvision_stub()  # run alone too: an import-only torchvision would break the diffusers models

from benchmark_scripts import benchmark_script  # noqa: E402
from nfsd_core.distillation import view_suffix  # noqa: E402
from nfsd_core.nerf import make_cameras, view_names  # noqa: E402
from nfsd_core.nerf.field import FieldSamples  # noqa: E402
from nfsd_core.nerf.rays import camera_rays  # noqa: E402
from nfsd_core.nerf.rendering import render_rays  # noqa: E402
from nfsd_core.priors.tokenizer import build_tokenizer  # noqa: E402
from nfsd_core.shapes.data import (  # noqa: E402
    CAPTION_PROBABILITIES, DATA_CAMERAS, ELEVATION_CAPTION_SHARE, FRAME_HALF_HEIGHT, make_shape_set, real_caption,
    render_samples, vocabulary_words,
)
from nfsd_core.shapes.objects import FRONTED, OBJECTS  # noqa: E402
from nfsd_core.shapes.render import Scene, render_scenes  # noqa: E402

SIZE = 32


class SolidSphere(torch.nn.Module):
    """A NeRF field holding an opaque sphere of radius 0.3 (the objects' sphere)."""

    radius = 1.0

    def density(self, points):
        return 200.0 * (points.norm(dim=-1) < 0.3).float()

    def forward(self, points, normals=False, create_graph=False):
        return FieldSamples(self.density(points), torch.full(points.shape[:-1] + (3,), 0.5), None)


def test_a_sphere_rendered_here_and_by_the_nerf_renderer_covers_the_same_pixels_at_the_same_depth():
    cameras = make_cameras([-10.0, 15.0, 45.0], [0.0, 120.0, -60.0], [1.0, 1.25, 1.5], [40.0, 55.0, 70.0])
    ours = render_scenes([Scene("sphere", "red", (0.0, 0.0, 0.0))] * 3, cameras, SIZE, supersample=1)  # centre rays
    origins, directions = camera_rays(cameras, SIZE, SIZE)
    nerf = render_rays(SolidSphere(), origins.reshape(-1, 3), directions.reshape(-1, 3), samples_per_ray=512)
    nerf_mask = nerf.opacity.view(3, 1, SIZE, SIZE)
    intersection = torch.minimum(ours.mask, nerf_mask).sum()
    union = torch.maximum(ours.mask, nerf_mask).sum()
    assert intersection / union > 0.98
    inside = (ours.mask > 0.99) & (nerf_mask > 0.99)
    nerf_depth = nerf.depth.view(3, 1, SIZE, SIZE) / nerf_mask.clamp_min(1e-6)
    assert (ours.depth[inside] - nerf_depth[inside]).abs().max() < 0.02


def test_the_truth_of_each_image_renders_it_again_and_names_the_nerf_trainers_view():
    shape_set = make_shape_set(12, seed=3)
    samples = shape_set.samples
    cameras = make_cameras(*([getattr(s, name) for s in samples]
                             for name in ("elevation", "azimuth", "distance", "fovy")))
    assert [s.view for s in samples] == cameras.views
    assert torch.allclose(render_samples(samples, cameras), shape_set.images, atol=1e-6)
    assert torch.equal(make_shape_set(12, seed=3).images, shape_set.images)


def test_frame_data_shows_every_object_at_one_size_and_the_trainers_at_many():
    """The half-height a camera frames at the origin: distance x tan(fovy / 2)."""
    def framed(cameras):
        samples = make_shape_set(64, seed=3, size=8, cameras=DATA_CAMERAS[cameras]).samples
        return torch.tensor([s.distance * math.tan(math.radians(s.fovy) / 2) for s in samples])

    frame, trainer = framed("frame"), framed("trainer")
    assert torch.allclose(frame, torch.full_like(frame, FRAME_HALF_HEIGHT), atol=1e-4)
    assert float(trainer.max() / trainer.min()) > 2.0


def test_fronted_objects_look_different_from_the_front_and_the_back():
    cameras = make_cameras([10.0] * 2, [0.0, 180.0], [1.25] * 2, [50.0] * 2)
    background = (0.5, 0.5, 0.5)
    mug = render_scenes([Scene("mug", "white", background)] * 2, cameras, SIZE).mask
    assert torch.allclose(mug[0], mug[1].flip(-1), atol=0.05)  # the handle changes sides
    assert (mug[0] - mug[1]).abs().sum() > 10
    house = render_scenes([Scene("house", "white", background)] * 2, cameras, SIZE).image
    dark = (house.mean(dim=1) < 0.3).sum(dim=(1, 2))  # the door
    assert dark[0] > 15 and dark[1] == 0
    assert set(FRONTED) <= set(OBJECTS) and len(OBJECTS) >= 6


def test_captions_name_colour_shape_and_view_in_words_the_tokenizer_keeps_whole():
    shape_set = make_shape_set(40, seed=0)
    generator = torch.Generator().manual_seed(0)
    captions = [real_caption(shape_set.samples[i % 40], generator) for i in range(2000)]
    empty = sum(c == "" for c in captions) / len(captions)
    assert abs(empty - (1 - sum(CAPTION_PROBABILITIES.values()))) < 0.03
    sample = shape_set.samples[0]
    assert {f"a {sample.colour} {sample.shape}, {sample.view} view", f"a {sample.shape}"} <= set(captions[::40])
    tokenizer = build_tokenizer(vocabulary_words())
    for caption in {c for c in captions if c}:
        words = caption.replace(",", " ").split()
        assert len(tokenizer(caption, add_special_tokens=False).input_ids) == len(words) + caption.count(",")


def test_elevation_captions_use_the_words_the_nerf_cameras_view_names_ask_with():
    shape_set = make_shape_set(40, seed=0, size=8)
    generator = torch.Generator().manual_seed(0)
    rows = [i % 40 for i in range(2000)]
    captions = [real_caption(shape_set.samples[row], generator, elevation_step=10) for row in rows]
    with_view = [(row, caption) for row, caption in zip(rows, captions) if " view" in caption]
    named = [(row, caption) for row, caption in with_view if "elevation" in caption]
    assert abs(len(named) / len(with_view) - ELEVATION_CAPTION_SHARE) < 0.05
    for row, caption in named:
        sample = shape_set.samples[row]
        (name,) = view_names(torch.tensor([sample.elevation]), torch.tensor([sample.azimuth]), elevation_step=10)
        assert caption.endswith(", " + view_suffix(name))
    assert {caption.split(", elevation ")[1] for _, caption in named} >= {"minus 10", "0", "20", "40"}
    words = set(vocabulary_words(10))
    tokenizer = build_tokenizer(sorted(words))
    for caption in {caption for _, caption in named}:
        tokens = tokenizer.convert_ids_to_tokens(tokenizer(caption, add_special_tokens=False).input_ids)
        assert all(token.removesuffix("</w>") in words | set(",0123456789") for token in tokens), tokens
    # without the step, one draw a caption: the shipped prior's captions are drawn as they were
    generator, reference = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for sample in shape_set.samples:
        real_caption(sample, generator)
        torch.rand((), generator=reference)
    assert torch.equal(generator.get_state(), reference.get_state())


def tiny_training():
    """The shipped prior's training settings cut to a couple of steps."""
    from dataclasses import replace

    from nfsd_core.shapes.training import SHAPES_TRAINING

    return replace(SHAPES_TRAINING, vae_steps=2, vae_batch=8, denoiser_steps=2, denoiser_batch=8, warmup_steps=1)


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    """A shapes prior and judge trained for a couple of steps: the real path, at test size."""
    from nfsd_core.shapes.evaluator import ShapeJudge
    from nfsd_core.shapes.training import train_shapes_prior

    directory = tmp_path_factory.mktemp("shapes-prior")
    record = train_shapes_prior(directory, tiny_training(), images=16, log=lambda entry: None)
    ShapeJudge.fit(32, 16, seed=0, steps=3).save(directory / "evaluator")
    return directory, record


def test_the_prior_building_path_saves_a_loadable_shapes_prior_and_a_judge(tiny_prior):
    from nfsd_core.shapes.evaluator import load_shapes_judge
    from nfsd_core.shapes.prior import load_shapes_prior

    directory, record = tiny_prior
    assert [entry["stage"] for entry in record["log"]] == ["vae", "vae", "vae", "denoiser", "denoiser"]
    assert 0 < record["log"][2]["reconstruction_rmse"] < 1
    model, codec = load_shapes_prior(directory=directory)
    images = make_shape_set(2, seed=5).images
    latents = codec.encode(images)
    assert latents.shape == (2, 4, 8, 8) and codec.decode(latents).shape == (2, 3, 32, 32)
    red_mug, blue_mug = model.encode_prompt("a red mug, front view"), model.encode_prompt("a blue mug, front view")
    assert red_mug.shape == (1, 77, 64) and not torch.equal(red_mug, blue_mug)
    judge = load_shapes_judge(directory)
    assert set(judge.predict(images)) == {"shape", "colour", "view"} and judge.info["train_size"] == 32


def test_a_prior_can_take_another_priors_vae_and_name_elevations_in_its_captions(tiny_prior, tmp_path):
    from nfsd_core.priors.architecture import MiniatureSD
    from nfsd_core.priors.training import saved_vae
    from nfsd_core.shapes.prior import load_shapes_prior
    from nfsd_core.shapes.training import SHAPES_SD, train_shapes_prior

    directory, _ = tiny_prior
    record = train_shapes_prior(tmp_path / "elevations", tiny_training(), images=16, log=lambda entry: None,
                                elevation_step=10, vae_from=directory)
    assert record["log"][0] == {"stage": "vae", "from": str(directory)}
    own, taken = saved_vae(directory, SHAPES_SD), saved_vae(tmp_path / "elevations", SHAPES_SD)
    assert all(torch.equal(a, b) for a, b in zip(own.state_dict().values(), taken.state_dict().values()))
    model, _ = load_shapes_prior(directory=tmp_path / "elevations")
    assert len(model.tokenizer("elevation", add_special_tokens=False).input_ids) == 1
    with pytest.raises(ValueError, match="no prior's VAE in"):
        saved_vae(tmp_path, SHAPES_SD)
    with pytest.raises(ValueError, match="has other layers than this prior's architecture"):
        saved_vae(directory, MiniatureSD(vae_channels=(16, 32, 32)))


def test_demo3d_writes_a_turntable_a_coloured_mesh_and_the_judges_reading(tiny_prior, tmp_path, capsys):
    import json

    import numpy as np
    import trimesh
    from PIL import Image

    from nfsd_core import cli

    directory, _ = tiny_prior
    output = tmp_path / "demo3d"
    assert cli.main(["demo3d", "--prompt", "a red mug", "--steps", "3", "--frames", "4", "--prior", str(directory),
                     "--output", str(output)]) == 0
    assert Image.open(output / "turntable.png").size == (4 * 32, 32)
    strip = np.asarray(Image.open(output / "turntable.png"))
    frames = [strip[:, 32 * i : 32 * (i + 1)] for i in range(4)]
    animation = Image.open(output / "turntable.webp")  # lossless; identical neighbours may merge into one frame
    for index in range(animation.n_frames):
        animation.seek(index)
        assert any(np.array_equal(np.asarray(animation.convert("RGB")), frame) for frame in frames)
    report = json.loads((output / "run.json").read_text())
    assert report["judge"]["shape"] in OBJECTS and report["steps"] == 3
    mesh = trimesh.load(output / "mesh.glb", force="mesh")
    assert len(mesh.faces) == report["mesh"]["faces"] > 0 and mesh.visual.vertex_colors.shape[0] == len(mesh.vertices)
    assert "text to NeRF" in capsys.readouterr().err  # the progress bar


def test_demo3d_regularizer_weights_follow_the_guidance_scale(tiny_prior, tmp_path):
    """They are set for NFSD 7.5: SDS at its 100 takes them 100 / 7.5 times larger, as run.json says."""
    import json

    from nfsd_core import cli
    from nfsd_core.shapes.demo import CPU_NERF, TextToNerf

    directory, _ = tiny_prior

    def regularizers(*options: str) -> dict:
        output = tmp_path / "-".join(options)
        assert cli.main(["demo3d", "--steps", "1", "--frames", "1", "--prior", str(directory), "--output", str(output),
                         *options]) == 0
        return json.loads((output / "run.json").read_text())["regularizers"]

    demo = CPU_NERF.to_config()["regularizers"]
    assert regularizers() == regularizers("--rule", "sds", "--scale", "7.5") == demo
    sds = regularizers("--rule", "sds")
    assert sds["sparsity"]["end"] == pytest.approx(demo["sparsity"]["end"] * 100 / 7.5)
    assert sds["opaque"] == {**demo["opaque"], "end": pytest.approx(demo["opaque"]["end"] * 100 / 7.5)}
    assert TextToNerf(rule="sds", regularizers_follow_scale=False).nerf_settings() == CPU_NERF


def test_geometry_metrics_tell_the_right_object_from_a_wrong_one():
    from nfsd_core.shapes.metrics import grid_points, mesh_chamfer, occupancy_iou, surface_points
    from nfsd_core.shapes.objects import object_sdf

    def density_of(shape, resolution=48, radius=1.0):
        distances, _ = object_sdf(shape, grid_points(resolution, radius))
        return (100.0 * (distances < 0)).view(resolution, resolution, resolution)

    assert occupancy_iou(density_of("cube"), 50.0, "cube", 1.0) == 1.0
    assert occupancy_iou(density_of("sphere"), 50.0, "cube", 1.0) < 0.8
    assert occupancy_iou(density_of("torus"), 50.0, "cylinder", 1.0) < 0.5
    cube = surface_points("cube", resolution=64)
    assert mesh_chamfer(cube, "cube") < 0.01
    assert mesh_chamfer(surface_points("sphere", resolution=64), "cube") > 3 * mesh_chamfer(cube, "cube")


def test_colour_metrics_ignore_brightness_and_see_hue_and_saturation():
    from nfsd_core.shapes.metrics import colour_error, janus_rate, object_colour, saturation
    from nfsd_core.shapes.objects import COLOURS

    red = torch.tensor(COLOURS["red"])
    colour = torch.zeros(2, 4, 4, 3)
    opacity = torch.zeros(2, 4, 4, 1)
    colour[:, :2], opacity[:, :2] = 0.6 * red, 1.0  # the object, lit at 60 %
    mean = object_colour(colour, opacity)
    assert torch.allclose(mean, 0.6 * red)
    assert colour_error(mean, "red") < 1e-6 < 0.5 < colour_error(mean, "blue")
    assert abs(saturation(mean) - saturation(red)) < 1e-6
    assert saturation(torch.tensor([0.5, 0.5, 0.5])) == 0.0
    assert janus_rate(["front", "front", "side", "front"], ["front", "back", "side", "side"]) == 2 / 3


def test_demo3d_without_a_prior_says_how_to_make_one(tmp_path, capsys):
    from nfsd_core import cli

    assert cli.main(["demo3d", "--prior", str(tmp_path), "--output", str(tmp_path / "out")]) == 2
    assert "python -m nfsd_core.shapes.training" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_3d_benchmark_measures_every_method_and_resumes(tiny_prior, tmp_path):
    import json

    shapes_benchmark = benchmark_script("shapes_benchmark")
    directory, _ = tiny_prior
    floor = "untrained NeRF (floor)"
    arguments = ["--prior", str(directory), "--steps", "2", "--prompts", "1", "--methods", "SDS 100", "NFSD 7.5", floor,
                 "--seeds", "0", "1", "--output", str(tmp_path), "--in-process"]
    assert shapes_benchmark.main(arguments) == 0
    records = json.loads((tmp_path / "results.json").read_text())["records"]
    assert set(records) == {"SDS 100", "NFSD 7.5", floor} and set(records["NFSD 7.5"]["a red mug"]) == {"seed 0", "seed 1"}
    assert records[floor]["a red mug"]["seed 0"]["evaluations_per_step"] is None  # nothing distilled
    mug = records["NFSD 7.5"]["a red mug"]["seed 1"]
    assert 0 <= mug["iou"] <= mug["best_rescaled_iou"] <= 1 and mug["janus"] is not None
    assert mug["volume_ratio"] > 0 and mug["nearest_object"] in OBJECTS and mug["colour_error"] is not None
    assert mug["evaluations_per_step"] > records["SDS 100"]["a red mug"]["seed 0"]["evaluations_per_step"] == 2.0
    table = (tmp_path / "results.md").read_text()
    assert (tmp_path / "grid.png").is_file() and "| NFSD 7.5 |" in table and " ± " in table
    journal = (tmp_path / "runs.jsonl").read_text()
    assert shapes_benchmark.main(arguments) == 0  # resumed: nothing run again
    assert (tmp_path / "runs.jsonl").read_text() == journal


def test_the_3d_benchmark_takes_a_sparsity_weight_or_ramp_and_fixed_regularizers(tiny_prior, tmp_path):
    import json

    shapes_benchmark = benchmark_script("shapes_benchmark")
    directory, _ = tiny_prior
    arguments = ["--prior", str(directory), "--steps", "1", "--prompts", "1", "--methods", "NFSD 7.5", "--seeds", "0",
                 "--output", str(tmp_path), "--in-process"]
    with pytest.raises(SystemExit):  # two numbers are neither a weight nor a ramp
        shapes_benchmark.main([*arguments, "--sparsity", "30", "10"])
    assert shapes_benchmark.main([*arguments, "--sparsity", "30", "10", "0", "0.5"]) == 0
    settings = json.loads((tmp_path / "runs.jsonl").read_text().splitlines()[0])
    assert settings["nerf"]["regularizers"]["sparsity"] == {"start": 30.0, "end": 10.0, "start_at": 0.0, "end_at": 0.5}
    assert settings["regularizers_follow_scale"] is True  # the demo's: weights times the scale / 7.5
    fixed = tmp_path / "fixed"
    assert shapes_benchmark.main([*arguments, "--fixed-regularizers", "--output", str(fixed)]) == 0
    assert json.loads((fixed / "runs.jsonl").read_text().splitlines()[0])["regularizers_follow_scale"] is False


def test_the_2d_canvas_benchmark_on_the_3d_prior_measures_every_method_and_resumes(tiny_prior, tmp_path):
    import json

    shapes_canvas_benchmark = benchmark_script("shapes_canvas_benchmark")
    directory, _ = tiny_prior
    arguments = ["--prior", str(directory), "--steps", "2", "--output", str(tmp_path), "--in-process"]
    assert shapes_canvas_benchmark.main(arguments) == 0
    records = json.loads((tmp_path / "results.json").read_text())["records"]
    assert list(records) == [method.label for method in shapes_canvas_benchmark.METHODS] + [
        shapes_canvas_benchmark.FLOOR]
    floor = records[shapes_canvas_benchmark.FLOOR]["metrics"]
    assert set(floor["fine"]) == {"shape", "view", "colour", "saturation", "pixel_std"}
    assert set(floor["coarse"]) == {"shape", "view", "colours", "saturation", "pixel_std"}
    assert 1 <= floor["coarse"]["colours"] <= 6
    assert records["NFSD 7.5"]["evaluations_per_step"] > records["SDS 100"]["evaluations_per_step"] == 2.0
    assert (tmp_path / "grid.png").is_file() and "| NFSD 7.5 |" in (tmp_path / "results.md").read_text()
    journal = (tmp_path / "runs.jsonl").read_text()
    assert shapes_canvas_benchmark.main(arguments) == 0  # resumed: nothing run again
    assert (tmp_path / "runs.jsonl").read_text() == journal


def test_the_edit_benchmark_measures_every_method_and_resumes(tiny_prior, tmp_path):
    import json

    shapes_edit_benchmark = benchmark_script("shapes_edit_benchmark")
    directory, _ = tiny_prior
    arguments = ["--prior", str(directory), "--steps", "2", "--rows", "2", "--seeds", "0", "--output", str(tmp_path)]
    assert shapes_edit_benchmark.main(arguments) == 0
    records = json.loads((tmp_path / "results.json").read_text())["records"]
    assert list(records) == [shapes_edit_benchmark.NO_EDIT] + [m.label for m in shapes_edit_benchmark.METHODS]
    for label, record in records.items():
        assert set(record) >= {"colour"} and ("shape" in record) == ("mask" not in label)
        assert 0 <= record["colour"]["target"] <= 1 and record["colour"]["outside_change"] >= 0
    assert records[shapes_edit_benchmark.NO_EDIT]["colour"]["target"] == 0  # the source has the source's colour
    assert records["SDS 100 (from the image)"]["evaluations_per_step"] == 2.0
    assert records["DDS 7.5"]["evaluations_per_step"] == 4.0 < records["NFSD-edit 7.5"]["evaluations_per_step"] <= 6
    assert (tmp_path / "grid.png").is_file() and "| NFSD-edit 7.5 |" in (tmp_path / "results.md").read_text()
    journal = (tmp_path / "runs.jsonl").read_text()
    assert shapes_edit_benchmark.main(arguments) == 0  # resumed: nothing run again
    assert (tmp_path / "runs.jsonl").read_text() == journal


def test_an_object_rendered_for_a_view_is_seen_from_that_view_with_its_mask():
    from nfsd_core import render_shape, shape_choices
    from nfsd_core.shapes.render import view_cameras

    choices = shape_choices()
    assert set(choices["object"]) == set(OBJECTS) and choices["view"] == ("front", "side", "back")
    assert view_cameras(list(choices["view"])).views == ["front", "side", "back"]
    image, mask = render_shape("mug", "blue", "side", 32)
    assert image.shape == (1, 3, 32, 32) and mask.shape == (1, 1, 32, 32)
    on_object = mask[0, 0] > 0.99
    assert 0.05 < on_object.float().mean() < 0.6
    blue = image[0][:, on_object].mean(dim=1)
    assert blue[2] > blue[0] and blue[2] > blue[1]
    assert torch.allclose(image[0][:, mask[0, 0] == 0], torch.tensor(0.5))  # the mid-grey background
    with pytest.raises(ValueError, match="unknown colour 'teal'"):
        render_shape("mug", "teal")
    with pytest.raises(ValueError, match=r"unknown view\(s\) \['top'\]"):
        render_shape("mug", "blue", "top")


def test_the_texture_benchmark_measures_every_method_against_the_truth_and_resumes(tiny_prior, tmp_path):
    import json

    shapes_texture_benchmark = benchmark_script("shapes_texture_benchmark")
    directory, _ = tiny_prior
    arguments = ["--prior", str(directory), "--steps", "2", "--prompts", "2", "--methods", "NFSD 7.5",
                 "--output", str(tmp_path)]
    assert shapes_texture_benchmark.main(arguments) == 0
    records = json.loads((tmp_path / "results.json").read_text())["records"]
    assert list(records) == [shapes_texture_benchmark.START, "NFSD 7.5", shapes_texture_benchmark.TRUTH]
    assert set(records["NFSD 7.5"]) == {"a red mug", "a blue house"}
    truth, start = records[shapes_texture_benchmark.TRUTH], records[shapes_texture_benchmark.START]
    assert truth["a red mug"]["albedo_rmse"] < 0.01 < start["a red mug"]["albedo_rmse"]  # the truth is its own albedo
    assert truth["a blue house"]["door"] < 0.6 and start["a blue house"]["door"] == pytest.approx(1.0, abs=0.05)
    assert records["NFSD 7.5"]["a red mug"]["seconds_per_step"] > 0
    assert (tmp_path / "grid.png").is_file() and "| NFSD 7.5 |" in (tmp_path / "results.md").read_text()
    journal = (tmp_path / "runs.jsonl").read_text()
    assert shapes_texture_benchmark.main(arguments) == 0  # resumed: nothing run again
    assert (tmp_path / "runs.jsonl").read_text() == journal
