"""The shipped 3D reference prior: what its samples show, and that text to NeRF on it reaches the object.

The rates are the measured ones (README, Reference prior and benchmark) less a margin: the sampler
and the distillation are seeded, so a drop below them is a change in the prior or the pipeline.
"""

import pytest

pytest.importorskip("diffusers")

from torchvision_stub import hide_torchvision_stub  # noqa: E402

hide_torchvision_stub()  # run alone too: an import-only torchvision would break the diffusers models

from benchmark_scripts import benchmark_script  # noqa: E402
from nfsd_core import SHIPPED_PRIORS  # noqa: E402
from nfsd_core.shapes.evaluator import load_shapes_judge  # noqa: E402

PRIOR = SHIPPED_PRIORS["shapes"]
# DDIM-50 at CFG 7.5, one sample per fine prompt and camera view (126): measured shape 90%, colour 97%,
# view of the mug and the house 92%.
SAMPLE_SHAPE, SAMPLE_COLOUR, SAMPLE_VIEW = 0.85, 0.9, 0.8
# NFSD 7.5, 300 steps, the demo's settings (benchmarks/experiments/size_band.py, results/experiments/size_band.md):
# measured occupancy IoU 0.52, rendered size 1.09 (the cube's own silhouettes from the turntable's cameras),
# judged a green cube in every turntable frame. The untrained NeRF (the floor): IoU 0.13, rendered size 1.45,
# judged a cube in no frame. Before issue 18's fix (cameras drawn as the prior's data): IoU 0.33, rendered size
# 1.27, so the size band fails it.
DISTILL_PROMPT, DISTILL_SHAPE, DISTILL_COLOUR, DISTILL_STEPS = "a green cube", "cube", "green", 300
DISTILL_IOU, DISTILL_JUDGE = 0.35, 0.75
SIZE_BAND = (0.8, 1.25)


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
    """NFSD 7.5 with view prompts, the demo's CPU settings cut to DISTILL_STEPS steps."""
    from dataclasses import replace

    from nfsd_core.shapes.demo import TextToNerf

    run_one = benchmark_script("shapes_benchmark").run_one
    model, codec = PRIOR.load()
    record, _ = run_one(model, codec, judge, DISTILL_PROMPT, DISTILL_SHAPE, DISTILL_COLOUR,
                        replace(TextToNerf(), steps=DISTILL_STEPS))
    print(record)
    assert record["iou"] >= DISTILL_IOU
    assert record["judge_shape"] >= DISTILL_JUDGE and record["judge_colour"] >= DISTILL_JUDGE
    assert SIZE_BAND[0] <= record["rendered_size"] <= SIZE_BAND[1]
