"""Which object size the 3D prior, and each distillation rule on it, asks for: no NeRF involved.

    python benchmarks/experiments/size_prior.py      # -> benchmarks/results/experiments/size_prior.{json,md}

Two measurements on the shipped prior (issue 18: is the size error in the prior, the rules or the NeRF?):

1. **Samples against data.** DDIM-50 samples of every fine prompt with a camera view at several guidance
   scales, and renders of the same objects from the training cameras, measured alike: the share of the
   image that differs from the background (estimated from the image's border). Relative to the data, a
   sample's linear size is sqrt(its area / the data's area).
2. **Pull on the true object.** The analytic object rendered from training cameras at scales s around its
   true size (a camera at distance d / s sees the object scaled by s), encoded by the prior's VAE; for
   each guidance component c (the weighted delta_C = e_c - e_u, SDS's e_u - eps, NFSD's delta_D) the
   rate at which a gradient step along it grows the object: pull(s) = -E[<w(t) c, dz/ds>] over cameras,
   t (the demo's schedule) and noise, with dz/ds from renders at s +- h. A rule's pull is its
   combination (SDS: e_u - eps + scale delta_C; NFSD: delta_D + scale delta_C; CSD: scale delta_C), and
   the size it settles on alone is where its pull crosses zero. The sparsity regulariser's push
   (-weight d(mean opacity)/ds, in the same units: both are per image) is given beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from nfsd_core.distillation import Prompts, ScoreDistillation  # noqa: E402
from nfsd_core.guidance import weight  # noqa: E402
from nfsd_core.nerf import make_cameras, sample_cameras  # noqa: E402
from nfsd_core.sampling import ddim_sample  # noqa: E402
from nfsd_core.shapes.data import CAMERA_VIEWS, TRAINER_CAMERAS, fine_prompt, make_shape_set  # noqa: E402
from nfsd_core.shapes.demo import CPU_TIMESTEPS, TextToNerf  # noqa: E402
from nfsd_core.shapes.objects import COLOURS, OBJECTS  # noqa: E402
from nfsd_core.shapes.prior import SHAPES_PRIOR_DIR, load_shapes_prior  # noqa: E402
from nfsd_core.shapes.render import Scene, render_scenes  # noqa: E402

OUTPUT = ROOT / "benchmarks" / "results" / "experiments"
DDIM_SCALES = (1.0, 3.0, 7.5, 15.0, 30.0)
PULL_PROMPTS = [("a red mug", "mug", "red"), ("a blue house", "house", "blue"), ("a green cube", "cube", "green"),
                ("a yellow cone", "cone", "yellow"), ("a purple torus", "torus", "purple"),
                ("a white cylinder", "cylinder", "white")]
SCALES = (0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.65, 1.8)
STEP = 0.04  # the finite difference of dz/ds
RULES = {"SDS 100": ("sds", 100.0), "SDS 7.5": ("sds", 7.5), "NFSD 7.5": ("nfsd", 7.5), "CSD 1": ("csd", 1.0),
         "CSD 7.5": ("csd", 7.5)}
SPARSITY_WEIGHT = 10.0  # the NeRF's default sparsity weight (RegularizerSettings)
GUIDANCE_COMPONENTS = ("delta_C", "sds_residual", "nfsd_delta_D")
BAND_EDGE = 500  # the pull is also averaged over the draws with t below and from this timestep
LOW, HIGH = f" (t < {BAND_EDGE})", f" (t >= {BAND_EDGE})"
BANDS = ("", LOW, HIGH)


def object_area(images: torch.Tensor, tolerance: float = 0.08) -> torch.Tensor:
    """The share [N] of each image [N, 3, H, W] whose colour differs from the background's by more than
    `tolerance` in some channel; the background is the median colour of the image's one-pixel border."""
    border = torch.cat([images[..., 0, :], images[..., -1, :], images[..., 1:-1, 0], images[..., 1:-1, -1]], dim=-1)
    background = border.median(dim=-1).values  # [N, 3]
    differs = (images - background[..., None, None]).abs().amax(dim=1) > tolerance
    return differs.float().mean(dim=(1, 2))


def samples_against_data(model, codec, seed: int) -> dict:
    """Mean object area of DDIM samples per guidance scale and of the training data, per shape."""
    rows = [(shape, colour, view) for shape in OBJECTS for colour in COLOURS for view in CAMERA_VIEWS]
    texts = [fine_prompt(colour, shape, view) for shape, colour, view in rows]
    prompts = Prompts(positive={text: model.encode_prompt(text) for text in dict.fromkeys(texts)},
                      unconditional=model.encode_prompt(""), negative=model.encode_prompt(""))
    noise = torch.randn((len(rows), 4, 8, 8), generator=torch.Generator().manual_seed(seed))
    data = make_shape_set(2000, seed=seed + 1, cameras=TRAINER_CAMERAS)
    data_area = object_area(data.images)
    true_area = render_scenes_mask(data)
    result = {"estimator_on_data": {"estimated": float(data_area.mean()), "true": float(true_area.mean())},
              "data": {shape: float(data_area[[s.shape == shape for s in data.samples]].mean()) for shape in OBJECTS}}
    for scale in DDIM_SCALES:
        images = codec.decode(ddim_sample(model, prompts, noise, scale=scale, views=texts))
        area = object_area(images)
        result[f"ddim {scale:g}"] = {shape: float(area[[r[0] == shape for r in rows]].mean()) for shape in OBJECTS}
    return result


def render_scenes_mask(shape_set) -> torch.Tensor:
    """The true object coverage [N] of each image of `shape_set` (rendered again for its mask)."""
    samples = shape_set.samples
    cameras = make_cameras(*([getattr(s, name) for s in samples] for name in ("elevation", "azimuth", "distance", "fovy")))
    scenes = [Scene(s.shape, s.colour, s.background) for s in samples]
    return render_scenes(scenes, cameras, 32).mask.mean(dim=(1, 2, 3))


def scaled_renders(shape: str, colour: str, cameras, backgrounds: torch.Tensor, scale: float):
    """Renders [N, 3, 32, 32] and coverage [N] of `shape` scaled by `scale` (cameras moved to d / scale)."""
    moved = make_cameras(cameras.elevation, cameras.azimuth, cameras.distance / scale, cameras.fovy)
    scenes = [Scene(shape, colour, tuple(b)) for b in backgrounds.tolist()]
    render = render_scenes(scenes, moved, 32, supersample=4)
    return render.image, render.mask.mean(dim=(1, 2, 3))


def pull_on_true_object(model, codec, cameras_per_prompt: int, draws: int, seed: int) -> dict:
    """pull(s) per component and prompt, and the sparsity push, as described in the module doc."""
    run = TextToNerf()
    generator = torch.Generator().manual_seed(seed)
    result: dict[str, dict] = {}
    for prompt, shape, colour in PULL_PROMPTS:
        cameras = sample_cameras(TRAINER_CAMERAS, cameras_per_prompt, generator)
        backgrounds = torch.rand(cameras_per_prompt, 3, generator=generator)
        prompts = Prompts.from_text(model, prompt, view_dependent=True)
        guidance = ScoreDistillation(model, prompts, "nfsd", scale=1.0, timesteps=CPU_TIMESTEPS)
        steps = torch.randint(run.steps, (draws,), generator=generator)
        uniform = torch.rand(draws, cameras_per_prompt, generator=generator)
        noise = torch.randn((draws, cameras_per_prompt, 4, 8, 8), generator=generator)
        views = cameras.views
        per_scale = {}
        for s in SCALES:
            with torch.no_grad():
                images, coverage = scaled_renders(shape, colour, cameras, backgrounds, s)
                z = codec.encode(images)
                up, coverage_up = scaled_renders(shape, colour, cameras, backgrounds, s + STEP)
                down, coverage_down = scaled_renders(shape, colour, cameras, backgrounds, s - STEP)
                dz = (codec.encode(up) - codec.encode(down)) / (2 * STEP)
            sums = {f"{name}{band}": torch.zeros(cameras_per_prompt) for name in GUIDANCE_COMPONENTS for band in BANDS}
            counts = {band: torch.zeros(cameras_per_prompt) for band in BANDS}
            for k in range(draws):
                t = CPU_TIMESTEPS.timesteps(int(steps[k]), run.steps, uniform[k], model.schedule.num_timesteps)
                with torch.no_grad():
                    predictions = guidance.predictions(z, t, noise[k], views)
                w = weight(model.schedule.alpha_bar(t)).view(-1, 1, 1, 1)
                e_u, e_c, e_n = predictions.unconditional, predictions.conditional, predictions.negative
                high = (t >= 200).view(-1, 1, 1, 1)
                components = {"delta_C": e_c - e_u, "sds_residual": e_u - noise[k],
                              "nfsd_delta_D": torch.where(high, e_u - torch.nan_to_num(e_n), e_u)}
                in_band = {"": torch.ones_like(t, dtype=torch.bool), LOW: t < BAND_EDGE, HIGH: t >= BAND_EDGE}
                for band, rows in in_band.items():
                    counts[band] += rows
                    for name, value in components.items():
                        sums[f"{name}{band}"] += -(w * value * dz).sum(dim=(1, 2, 3)) * rows
            per_scale[f"{s:g}"] = {f"{name}{band}": (sums[f"{name}{band}"] / counts[band]).tolist()
                                   for name in GUIDANCE_COMPONENTS for band in BANDS}
            per_scale[f"{s:g}"]["sparsity"] = (-SPARSITY_WEIGHT * (coverage_up - coverage_down) / (2 * STEP)).tolist()
            per_scale[f"{s:g}"]["coverage"] = coverage.tolist()
        apparent = 1.0 / (cameras.distance * torch.tan(torch.deg2rad(cameras.fovy) / 2))
        result[prompt] = {"apparent_size": apparent.tolist(), "scales": per_scale}
    return result


COMPONENTS = ("delta_C", "sds_residual", "nfsd_delta_D", "sparsity", "coverage")


def rule_pull(components: dict, rule: str, scale: float, sparsity: bool = False) -> float:
    """A rule's pull from its components' (with `sparsity`: plus the sparsity regulariser's push)."""
    domain = {"sds": components["sds_residual"], "nfsd": components["nfsd_delta_D"], "csd": 0.0}[rule]
    return domain + scale * components["delta_C"] + (components["sparsity"] if sparsity else 0.0)


def crossing(values: list[tuple[float, float]]) -> float | None:
    """The first s where a pull falls through zero (linear between grid points); None if it never does."""
    for (s0, p0), (s1, p1) in zip(values, values[1:]):
        if p0 > 0 >= p1:
            return s0 + (s1 - s0) * p0 / (p0 - p1)
    return None


def averaged(pulls: dict, s: float, prompts: list[str], keep=lambda apparent, median: True, band: str = "") -> dict:
    """Each component at scale `s`, averaged over `prompts` and their cameras that `keep` (apparent size
    against the prompt's median camera), over the draws of t in `band` (all by default)."""
    totals = {name: [] for name in COMPONENTS}
    for prompt in prompts:
        apparent = pulls[prompt]["apparent_size"]
        median = sorted(apparent)[len(apparent) // 2]
        rows = [i for i, a in enumerate(apparent) if keep(a, median)]
        for name in COMPONENTS:
            column = f"{name}{band}" if name in GUIDANCE_COMPONENTS else name
            totals[name] += [pulls[prompt]["scales"][f"{s:g}"][column][i] for i in rows]
    return {name: sum(values) / len(values) for name, values in totals.items()}


def settles_at(pulls: dict, rule: str, scale: float, prompts: list[str], keep=lambda apparent, median: True,
               band: str = "", sparsity: bool = False) -> str:
    c = crossing([(s, rule_pull(averaged(pulls, s, prompts, keep, band), rule, scale, sparsity)) for s in SCALES])
    return f">{SCALES[-1]:g}" if c is None else f"{c:.2f}"


def markdown(result: dict) -> str:
    samples = result["samples_against_data"]
    lines = ["## 1. DDIM-50 samples against the data: linear size sqrt(sample area / data area), per shape", "",
             "| guidance | " + " | ".join(OBJECTS) + " | mean |", "|---|" + "---|" * (len(OBJECTS) + 1)]
    for key in [k for k in samples if k.startswith("ddim")]:
        ratios = [(samples[key][s] / samples["data"][s]) ** 0.5 for s in OBJECTS]
        lines.append(f"| {key} | " + " | ".join(f"{r:.2f}" for r in ratios) + f" | {sum(ratios) / len(ratios):.2f} |")
    estimator = samples["estimator_on_data"]
    lines += ["", f"Area estimator on 2000 data renders: {estimator['estimated']:.4f} estimated, "
              f"{estimator['true']:.4f} true coverage.", "",
              "## 2. Pull on the true object's renders (positive: the step grows the object), mean over prompts "
              "and cameras", "",
              "| s | coverage | " + " | ".join(RULES) + " | sparsity 10 |", "|---|---|" + "---|" * (len(RULES) + 1)]
    pulls = result["pull"]
    prompts = list(pulls)
    for s in SCALES:
        mean = averaged(pulls, s, prompts)
        cells = [f"{rule_pull(mean, rule, scale):+.3f}" for rule, scale in RULES.values()]
        lines.append(f"| {s:g} | {mean['coverage']:.3f} | " + " | ".join(cells) + f" | {mean['sparsity']:+.3f} |")
    near = lambda apparent, median: apparent >= median  # noqa: E731: cameras that see the object larger
    far = lambda apparent, median: apparent < median  # noqa: E731
    lines += ["", "Size each rule settles on alone: the zero crossing of its mean pull ('>' if it still grows at "
              "the largest s); by camera: the half of each prompt's cameras that see the object larger "
              "(closer, narrower) and the other half:", "",
              f"| rule | all cameras | larger-view half | smaller-view half | t < {BAND_EDGE} | t >= {BAND_EDGE} | "
              "all, with sparsity 10 | larger-view half, with sparsity 10 | per prompt |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, (rule, scale) in RULES.items():
        per_prompt = ", ".join(f"{p.split()[-1]} {settles_at(pulls, rule, scale, [p])}" for p in prompts)
        lines.append(f"| {name} | {settles_at(pulls, rule, scale, prompts)} | "
                     f"{settles_at(pulls, rule, scale, prompts, near)} | {settles_at(pulls, rule, scale, prompts, far)} | "
                     f"{settles_at(pulls, rule, scale, prompts, band=LOW)} | "
                     f"{settles_at(pulls, rule, scale, prompts, band=HIGH)} | "
                     f"{settles_at(pulls, rule, scale, prompts, sparsity=True)} | "
                     f"{settles_at(pulls, rule, scale, prompts, near, sparsity=True)} | {per_prompt} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prior", type=Path, default=SHAPES_PRIOR_DIR)
    parser.add_argument("--cameras", type=int, default=12, help="training cameras per prompt")
    parser.add_argument("--draws", type=int, default=48, help="(t, noise) draws per camera and scale")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, codec = load_shapes_prior(directory=args.prior)
    result = {"settings": {"cameras": args.cameras, "draws": args.draws, "seed": args.seed, "scales": SCALES,
                           "ddim_scales": DDIM_SCALES},
              "samples_against_data": samples_against_data(model, codec, args.seed),
              "pull": pull_on_true_object(model, codec, args.cameras, args.draws, args.seed)}
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "size_prior.json").write_text(json.dumps(result, indent=1))
    table = markdown(result)
    (args.output / "size_prior.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
