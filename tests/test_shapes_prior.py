"""The shipped 3D reference prior: what its samples show, and that text to NeRF on it reaches the object.

The rates are the measured ones (README, Reference prior and benchmark) less a margin: the sampler
and the distillation are seeded, so a drop below them is a change in the prior or the pipeline.
"""

import pytest

pytest.importorskip("diffusers")

from torchvision_stub import hide_torchvision_stub  # noqa: E402

hide_torchvision_stub()  # run alone too: an import-only torchvision would break the diffusers models

from benchmark_scripts import benchmark_script  # noqa: E402
from torchvision_stub import hide_torchvision_stub  # noqa: E402
from nfsd_core import SHIPPED_PRIORS  # noqa: E402
from nfsd_core.shapes.evaluator import load_shapes_judge  # noqa: E402

hide_torchvision_stub()  # before diffusers imports its models (alone, this module would meet the stand-in)

PRIOR = SHIPPED_PRIORS["shapes"]
# DDIM-50 at CFG 7.5, one sample per fine prompt and camera view (126): measured shape 90%, colour 97%,
# view of the mug and the house 92% (`benchmarks/shapes_prior_samples.py --per-prompt 1`,
# results/shapes_prior/per_prompt_1). Chance: 14%, 17%, 33%.
SAMPLE_SHAPE, SAMPLE_COLOUR, SAMPLE_VIEW = 0.85, 0.9, 0.8
# NFSD 7.5, 300 steps, the demo's settings, *a yellow cone* (benchmarks/experiments/size_band.py,
# results/experiments/size_band_cone.md): measured occupancy IoU 0.52, rendered size 1.11 (the cone's own
# silhouettes from the turntable's cameras), nearest analytic object the cone, judged a yellow cone in every
# turntable frame. The untrained NeRF (the floor): IoU 0.06, rendered size 1.84, nearest a sphere, judged a cone
# in no frame. At threestudio's sparsity weight 10 (the demo's before issue 18's second fix) the cone fills the
# frame (rendered size 4.32, 56 times the true volume), and with the prior's data cameras as well it is 1.43 and
# nearest the house: the size band fails both. The mesh at the "auto" level against the render (linear size of their
# silhouettes from the turntable's cameras): measured 1.03; the untrained NeRF's 1.29. The cone, not the cube:
# at the demo's sparsity 30 the cube comes out a ball of its size (nearest a sphere at every setting measured,
# judged a cube in 6% of frames; size_band_cube.md).
DISTILL_PROMPT, DISTILL_SHAPE, DISTILL_COLOUR, DISTILL_STEPS = "a yellow cone", "cone", "yellow", 300
DISTILL_IOU, DISTILL_JUDGE = 0.35, 0.75
SIZE_BAND = (0.8, 1.25)
MESH_AT_RENDER = 0.1


@pytest.fixture(scope="module")
def judge():
    return load_shapes_judge(PRIOR.directory)


def test_ddim_samples_show_the_prompted_shape_colour_and_view(judge):
    from nfsd_core.shapes.training import check_samples

    scores = check_samples(PRIOR.directory, judge, per_prompt=1)["ddim_50_cfg_7.5"]
    print(scores)
    assert scores["shape"] >= SAMPLE_SHAPE and scores["colour"] >= SAMPLE_COLOUR
    assert scores["view_of_fronted"] >= SAMPLE_VIEW


def test_a_short_nfsd_distillation_reaches_the_object_at_its_size(judge):
    """NFSD 7.5 with view prompts, the demo's CPU settings cut to DISTILL_STEPS steps: the prompted object,
    nearer it than any other analytic object, at its size; its mesh at the "auto" level is where its renders are."""
    from dataclasses import replace

    from nfsd_core.shapes.demo import TextToNerf

    run_one = benchmark_script("shapes_benchmark").run_one
    model, codec = PRIOR.load()
    record, _ = run_one(model, codec, judge, DISTILL_PROMPT, DISTILL_SHAPE, DISTILL_COLOUR,
                        replace(TextToNerf(), steps=DISTILL_STEPS))
    print(record)
    assert record["iou"] >= DISTILL_IOU and record["nearest_object"] == DISTILL_SHAPE
    assert record["judge_shape"] >= DISTILL_JUDGE and record["judge_colour"] >= DISTILL_JUDGE
    assert SIZE_BAND[0] <= record["rendered_size"] <= SIZE_BAND[1]
    assert abs(record["mesh_size_vs_render"] - 1.0) <= MESH_AT_RENDER, "the mesh is not where the render is"


# Colour edits of every 4th source of the edit benchmark (11 objects and colours), 200 steps, seed 0: measured
# judged new colour 100% (DDS) and 100% (NFSD-edit) against 0% for the unedited sources, judged shape kept 91% and
# 91% against 91%; with the object's mask the pixels of the latents outside it change by 0.029 (mean absolute, in
# [0, 1]) against 0.093 without: the VAE decoder of an 8x8 latent grid spreads every latent's change widely.
EDIT_ROWS, EDIT_STEPS = slice(None, None, 4), 200
EDIT_TARGET, EDIT_KEPT_MARGIN = 0.8, 0.2
MASK_OUTSIDE, MASK_SHARE = 0.05, 0.5


@pytest.fixture(scope="module")
def colour_edits():
    bench = benchmark_script("shapes_edit_benchmark")
    model, codec = PRIOR.load()
    rows = bench.edits("colour")[EDIT_ROWS]
    methods = {"dds": bench.Method("DDS", "dds"), "nfsd_edit": bench.Method("NFSD-edit", "nfsd_edit"),
               "dds_masked": bench.Method("DDS, object mask", "dds", masked=True)}
    edited = {key: bench.run_edit(model, codec, rows, method, seed=0, steps=EDIT_STEPS)[0]
              for key, method in methods.items()}
    return bench, codec, rows, edited


@pytest.mark.parametrize("rule", ["dds", "nfsd_edit"])
def test_a_colour_edit_changes_the_judged_colour_and_keeps_the_judged_shape(judge, colour_edits, rule):
    bench, codec, rows, edited = colour_edits
    untouched = bench.no_edit(codec, judge, rows, "colour")
    scores = bench.measure(judge, edited[rule], rows, "colour")
    print(rule, scores, untouched)
    assert untouched["target"] == 0 and scores["target"] >= EDIT_TARGET
    assert scores["kept"] >= untouched["kept"] - EDIT_KEPT_MARGIN


def test_a_mask_keeps_the_pixels_outside_it(colour_edits):
    """Outside the latents the object's mask touches, pixels move a fraction of what they move unmasked."""
    import torch.nn.functional as F

    from nfsd_core import latent_mask

    bench, _, rows, edited = colour_edits
    images, masks = bench.renders(rows)
    outside = F.interpolate(latent_mask(masks[:, 0], 8, 8), scale_factor=4, mode="nearest") == 0

    def change(result):
        return float((result - images).abs().mean(dim=1, keepdim=True)[outside].mean())

    masked, unmasked = change(edited["dds_masked"]), change(edited["dds"])
    print(masked, unmasked)
    assert masked <= MASK_OUTSIDE and masked <= MASK_SHARE * unmasked
