"""Mesh texturing measured on the 3D reference prior: every rule paints the same untextured meshes.

    python benchmarks/shapes_texture_benchmark.py       # table + render grid -> benchmarks/results/shapes_texture/

Each object of the prior is given as an untextured mesh (marching cubes of its SDF, y up and front
+z as a mesh file has it, through `Surface.from_mesh` as NFSD Mesh Texture takes it) and textured
from its fine prompt ("a blue house", view prompts on) by each method, from the same initial
texture with the same cameras, timesteps and noise per step. Then it is measured against the
object's true albedo (its colour times each part's albedo: the door is dark, the roof darker than
the walls):

- the judge's reading of a 16-frame turntable, lit as the prior's images are (shape, colour, and
  for the mug and the house view: whether the view it reads is the camera's);
- the albedo's error: the RMS difference to the true albedo over the surface (area-weighted face
  centres), and the chromaticity error of its mean (`shapes.metrics.colour_error`);
- where the geometry puts the details: the house's door against its walls (true ratio 0.30), the
  patch of the back wall behind the door (1.00: no door painted on the back), and for the mug the
  side of the body opposite the handle (1.00: no handle painted on the wrong side), each a ratio of
  mean luminances.

Two rows bound the table: the texture before any step (uniform grey) and the true albedo itself.
Finished runs are journalled, so an interrupted benchmark resumes where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nfsd_core import OptimizerSettings, Prompts, ScoreDistillation, optimize  # noqa: E402
from nfsd_core.batch.journal import Journal  # noqa: E402
from nfsd_core.image_files import save_grid  # noqa: E402
from nfsd_core.nerf import BackgroundSettings, orbit_cameras, render_turntable, view_names, z_up_to_y_up  # noqa: E402
from nfsd_core.shapes.demo import CPU_TIMESTEPS  # noqa: E402
from nfsd_core.shapes.evaluator import ShapeJudge, load_shapes_judge  # noqa: E402
from nfsd_core.shapes.metrics import colour_error  # noqa: E402
from nfsd_core.shapes.objects import COLOURS, FRONTED, OBJECTS, object_mesh  # noqa: E402
from nfsd_core.shapes.prior import SHAPES_PRIOR_DIR, load_shapes_prior  # noqa: E402
from nfsd_core.texture import ColourFieldSettings, Surface, TextureRepresentation, TextureSettings  # noqa: E402
from nfsd_core.timesteps import TimestepSchedule  # noqa: E402

OUTPUT = ROOT / "benchmarks" / "results" / "shapes_texture"
PROMPTS = [("a red mug", "mug", "red"), ("a blue house", "house", "blue"), ("a green cube", "cube", "green"),
           ("a yellow cone", "cone", "yellow"), ("a purple torus", "torus", "purple"),
           ("a white cylinder", "cylinder", "white")]
METHODS = {
    "NFSD 7.5": {"rule": "nfsd", "scale": 7.5},
    "SDS 7.5": {"rule": "sds", "scale": 7.5},
    "SDS 100": {"rule": "sds", "scale": 100.0},
    "NFSD 7.5, albedo shading": {"rule": "nfsd", "scale": 7.5, "shading": "albedo"},
}
START, TRUTH = "start (grey, no step)", "true albedo"
# The CPU settings of workflows/demo_texture_mesh.json: the prior's 32 px images, its light, two cameras a step.
CPU_TEXTURE = TextureSettings(
    render_size=32, guidance_size=32, latent_downscale=4, batch_size=2, shading="lambertian", fit_radius=0.0,
    background=BackgroundSettings(kind="random"),
    colour_field=ColourFieldSettings(levels=8, log2_table_size=15, finest_resolution=64),
)
MESH_RESOLUTION = 64  # about 12k faces per object
TURNTABLE_FRAMES = 16
GRID_VIEWS, GRID_SIZE = 4, 64  # the grid's renders: front, side, back, side, from a closer camera
LUMINANCE = torch.tensor([0.2126, 0.7152, 0.0722])


@dataclass(frozen=True)
class TextureRun:
    rule: str = "nfsd"
    scale: float = 7.5
    steps: int = 600
    lr: float = 0.01
    seed: int = 0
    shading: str = CPU_TEXTURE.shading
    timesteps: TimestepSchedule = CPU_TIMESTEPS


def object_surface(shape: str) -> Surface:
    """The object's untextured mesh as NFSD Mesh Texture sees a y-up file of it (front +z, kept in place)."""
    vertices, faces = object_mesh(shape, MESH_RESOLUTION)
    return Surface.from_mesh(z_up_to_y_up(vertices), faces, front="+z", fit_radius=0.0)


def nearest_part(shape: str, points: torch.Tensor) -> torch.Tensor:
    """Index [P] of the part of `shape` nearest each point (objects.OBJECTS order)."""
    return torch.stack([part.sdf(points) for part in OBJECTS[shape]], dim=-1).argmin(dim=-1)


def face_centres(surface: Surface) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres [F, 3] and areas [F] of the surface's faces."""
    corners = surface.vertices[surface.faces]
    areas = 0.5 * torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]).norm(dim=-1)
    return corners.mean(dim=1), areas


def true_albedo(shape: str, colour: str, points: torch.Tensor) -> torch.Tensor:
    """RGB [P, 3]: the object's colour times the albedo of the part at each point."""
    factor = torch.tensor([part.albedo for part in OBJECTS[shape]])[nearest_part(shape, points)]
    return torch.tensor(COLOURS[colour]) * factor.unsqueeze(-1)


@torch.no_grad()
def albedo_at_faces(texture: TextureRepresentation) -> torch.Tensor:
    """The texture's colour [F, 3] at each face's centre."""
    faces = torch.arange(len(texture.surface.faces))
    return texture.surface_colour(faces, torch.full((len(faces), 2), 1.0 / 3.0)).clamp(0.0, 1.0)


def luminance_ratio(luminance: torch.Tensor, areas: torch.Tensor, region: torch.Tensor,
                    reference: torch.Tensor) -> float | None:
    """Area-weighted mean luminance over `region` divided by that over `reference` (face masks)."""
    if not region.any() or not reference.any():
        return None
    mean = lambda mask: float((luminance[mask] * areas[mask]).sum() / areas[mask].sum())  # noqa: E731
    return mean(region) / max(mean(reference), 1e-6)


def detail_ratios(shape: str, centres: torch.Tensor, areas: torch.Tensor, albedo: torch.Tensor) -> dict:
    """Where the details end up (see the module doc); None for objects without them."""
    luminance = albedo @ LUMINANCE
    part = nearest_part(shape, centres)
    x, y, z = centres.unbind(-1)
    ratios = {"door": None, "back_door": None, "handle_opposite": None}
    if shape == "house":  # parts: walls, roof, door (on +x: |y| < 0.06, z from -0.28 to -0.06)
        walls, door = part == 0, part == 2
        behind_door = walls & (x < -0.19) & (y.abs() < 0.06) & (z < -0.06)
        back_wall = walls & (x < -0.19) & ~behind_door
        ratios.update(door=luminance_ratio(luminance, areas, door, walls & ~door),
                      back_door=luminance_ratio(luminance, areas, behind_door, back_wall))
    if shape == "mug":  # parts: body, handle (on +y: x near 0, z from -0.155 to 0.155)
        body = (part == 0) & (x.pow(2) + y.pow(2) > 0.19**2)  # the outside of the body
        opposite = body & (y < -0.15) & (x.abs() < 0.06) & (z.abs() < 0.155)
        ratios.update(handle_opposite=luminance_ratio(luminance, areas, opposite, body & ~opposite))
    return ratios


def measure(texture: TextureRepresentation, shape: str, colour: str, judge: ShapeJudge) -> tuple[dict, torch.Tensor]:
    """The metrics of one texture, and its grid renders [GRID_VIEWS, 3, GRID_SIZE, GRID_SIZE]."""
    with torch.no_grad():
        turntable = render_turntable(texture, frames=TURNTABLE_FRAMES, size=32)
        cameras = texture.settings.cameras
        orbit = orbit_cameras(TURNTABLE_FRAMES, cameras.eval_elevation, cameras.eval_distance, cameras.eval_fovy)
        judged = judge.predict(turntable.colour.permute(0, 3, 1, 2))
        close = orbit_cameras(GRID_VIEWS, cameras.eval_elevation, 1.2, 40.0)
        grid = texture.render(close, GRID_SIZE, GRID_SIZE).colour.clamp(0, 1).permute(0, 3, 1, 2)
    centres, areas = face_centres(texture.surface)
    albedo, truth = albedo_at_faces(texture), true_albedo(shape, colour, centres)
    weights = areas / areas.sum()
    record = {
        "judge_shape": sum(name == shape for name in judged["shape"]) / TURNTABLE_FRAMES,
        "judge_colour": sum(name == colour for name in judged["colour"]) / TURNTABLE_FRAMES,
        "judge_view": (sum(a == b for a, b in zip(judged["view"], view_names(orbit.elevation, orbit.azimuth)))
                       / TURNTABLE_FRAMES if shape in FRONTED else None),
        "albedo_rmse": float((weights.unsqueeze(-1) * (albedo - truth).pow(2)).sum().div(3).sqrt()),
        "colour_error": colour_error((weights.unsqueeze(-1) * albedo).sum(0), colour),
        **detail_ratios(shape, centres, areas, albedo),
    }
    return record, grid


def textured(model, codec, prompt: str, shape: str, run: TextureRun, on_step=None) -> TextureRepresentation:
    """`prompt` painted on the object's mesh by `run` (no steps: the untrained, grey texture)."""
    settings = replace(CPU_TEXTURE, shading=run.shading)
    texture = TextureRepresentation(object_surface(shape), settings, codec=codec)
    if run.steps:
        prompts = Prompts.from_text(model, prompt, view_dependent=True)
        guidance = ScoreDistillation(model, prompts, run.rule, scale=run.scale, seed=run.seed, timesteps=run.timesteps)
        optimize(texture, guidance, run.steps, OptimizerSettings(lr=run.lr), on_step=on_step)
    return texture


def truth_texture(shape: str, colour: str) -> TextureRepresentation:
    """A texture that starts from the true albedo at the mesh's vertices (the untrained field keeps it)."""
    surface = object_surface(shape)
    albedo = true_albedo(shape, colour, surface.vertices)
    return TextureRepresentation(replace(surface, colours=albedo), CPU_TEXTURE)


COLUMNS = [("judge: shape", "judge_shape", "{:.0%}"), ("judge: colour", "judge_colour", "{:.0%}"),
           ("judge: view", "judge_view", "{:.0%}"), ("albedo RMSE", "albedo_rmse", "{:.3f}"),
           ("colour error", "colour_error", "{:.2f}"), ("house: door / walls", "door", "{:.2f}"),
           ("house: behind the door / back wall", "back_door", "{:.2f}"),
           ("mug: opposite the handle / body", "handle_opposite", "{:.2f}"), ("s / step", "seconds_per_step", "{:.3f}")]


def markdown_table(records: dict[str, dict[str, dict]]) -> str:
    """One row per method: each metric averaged over the objects that define it."""
    lines = ["| method | " + " | ".join(title for title, _, _ in COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    for method, by_prompt in records.items():
        cells = []
        for _, key, form in COLUMNS:
            values = [record.get(key) for record in by_prompt.values() if record.get(key) is not None]
            cells.append(form.format(sum(values) / len(values)) if values else "-")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prior", type=Path, default=SHAPES_PRIOR_DIR)
    parser.add_argument("--steps", type=int, default=TextureRun.steps)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompts", type=int, default=len(PROMPTS), help="the first N prompts (a smaller run)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    prompts = PROMPTS[: args.prompts]
    model, codec = load_shapes_prior(directory=args.prior)
    judge = load_shapes_judge(args.prior)
    base = TextureRun(steps=args.steps, seed=args.seed)
    settings = {"steps": args.steps, "seed": args.seed, "prior": str(args.prior), "mesh_resolution": MESH_RESOLUTION,
                "texture": CPU_TEXTURE.to_config(), "timesteps": asdict(base.timesteps)}
    journal = Journal(args.output / "runs.jsonl", settings)
    frames_dir = args.output / "frames"
    frames_dir.mkdir(parents=True, exist_ok=True)
    records: dict[str, dict[str, dict]] = {}
    grids: dict[str, dict[str, torch.Tensor]] = {}
    todo = [(method, prompt) for method in [START, *args.methods, TRUTH] for prompt in prompts]
    with tqdm(total=len(todo), desc="texture benchmark", unit="run") as bar:
        for method, (prompt, shape, colour) in todo:
            key = f"{method} | {prompt}"
            grid_file = frames_dir / (hashlib.sha256(key.encode()).hexdigest()[:16] + ".pt")
            if key not in journal.done:
                seconds = []
                started = time.perf_counter()
                if method == TRUTH:
                    texture = truth_texture(shape, colour)
                else:
                    run = replace(base, steps=0) if method == START else replace(base, **METHODS[method])
                    texture = textured(model, codec, prompt, shape, run, lambda step: seconds.append(step.seconds))
                record, grid = measure(texture, shape, colour, judge)
                record.update(seconds_per_step=sum(seconds) / len(seconds) if seconds else None,
                              minutes=(time.perf_counter() - started) / 60)
                torch.save(grid, grid_file)
                journal.add(key, [record])
            bar.update()
            records.setdefault(method, {})[prompt] = journal.done[key][0]
            grids.setdefault(method, {})[prompt] = torch.load(grid_file)
    table = markdown_table(records)
    (args.output / "results.md").write_text(table + "\n")
    (args.output / "results.json").write_text(json.dumps({"settings": settings, "records": records}, indent=1))
    images = torch.stack([torch.cat([grids[method][prompt] for prompt, _, _ in prompts]) for method in grids])
    labels = [prompt.removeprefix("a ") if view == 0 else "" for prompt, _, _ in prompts for view in range(GRID_VIEWS)]
    save_grid(images, args.output / "grid.png", column_labels=labels, row_labels=list(grids))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
