"""Editing an image (DDS and NFSD-edit) in the core: one batched model call holding the canvas's and
the source's rows, no gradient for a matched image and prompt, the source and a mask checked before
any model call, a mask that holds latents fixed, and a run identity that holds the source."""

import pytest
import torch

from nfsd_core import (DEFAULT_NEGATIVE_PROMPT, LatentCanvas, OptimizerSettings, Prompts, ScoreDistillation,
                       latent_mask, optimize)
from nfsd_core.checkpoint import CheckpointError
from nfsd_core.identity import describe_differences, run_identity

from core_helpers import affine_model, gaussian_model

COEFFICIENTS = {"cat": (0.3, 0.2), "dog": (0.5, -0.3), "": (0.1, -0.1), DEFAULT_NEGATIVE_PROMPT: (-0.2, 0.4)}
MEANS = {"cat": 1.5, "dog": -0.5, "": 0.0, DEFAULT_NEGATIVE_PROMPT: -1.0}


def edit(model, rule, source, target="cat", source_prompt="dog", **settings):
    return ScoreDistillation(model, Prompts.from_text(model, target, source_prompt=source_prompt), rule,
                             source_latents=source, **settings)


@pytest.mark.parametrize("rule, evaluations", [("dds", 2 * 2 * 2), ("nfsd_edit", 2 * 2 * 2 + 2)])
def test_one_model_call_holds_the_canvas_rows_then_the_source_rows(rule, evaluations):
    calls = []
    model = affine_model(COEFFICIENTS, calls)
    guidance = edit(model, rule, torch.randn(1, 4, 3, 3))
    result = guidance(torch.randn(2, 4, 3, 3), 0, 1, t=torch.tensor([150, 650]))
    assert result.evaluations == evaluations and model.forward_calls == 1 and len(calls) == 1
    t_seen, conditions = calls[0]
    rows = sorted(zip(conditions, t_seen.tolist()))
    assert [row for row in rows if row[0] in ("cat", "dog")] == [("cat", 150), ("cat", 650), ("dog", 150), ("dog", 650)]
    negative = [t for condition, t in rows if condition == DEFAULT_NEGATIVE_PROMPT]
    assert negative == ([650, 650] if rule == "nfsd_edit" else [])  # both branches, only where t >= 200


@pytest.mark.parametrize("rule", ["dds", "nfsd_edit"])
def test_a_matched_image_and_prompt_get_no_gradient(rule):
    """DDS's premise: the source under its own prompt is where the edit starts, and nothing moves it."""
    model = gaussian_model(MEANS, std=0.5)
    source = torch.randn(3, 4, 3, 3)
    same = edit(model, rule, source, target="dog")(source.clone(), 0, 1, t=torch.tensor([100, 400, 900]))
    assert torch.equal(same.gradient, torch.zeros_like(source))
    other = edit(model, rule, source)(source.clone(), 0, 1, t=torch.tensor([100, 400, 900]))
    assert other.gradient.abs().amin(dim=(1, 2, 3)).gt(0).all()  # another prompt moves every row


def test_edit_rules_need_a_source_and_other_rules_take_none():
    model = affine_model(COEFFICIENTS)
    with pytest.raises(ValueError, match="dds rule edits an image: give the source latents"):
        ScoreDistillation(model, Prompts.from_text(model, "cat", source_prompt="dog"), "dds")
    with pytest.raises(ValueError, match="nfsd_edit rule edits an image"):
        ScoreDistillation(model, Prompts.from_text(model, "cat"), "nfsd_edit", source_latents=torch.zeros(1, 4, 3, 3))
    with pytest.raises(ValueError, match=r"read by the edit rules \(dds, nfsd_edit\), not by sds"):
        ScoreDistillation(model, Prompts.from_text(model, "cat"), "sds", source_latents=torch.zeros(1, 4, 3, 3))


@pytest.mark.parametrize("source, message", [
    (torch.zeros(1, 4, 4, 4), r"source latents of shape \(1, 4, 4, 4\) do not fit the canvas's latents \(2, 4, 3, 3\)"),
    (torch.zeros(3, 4, 3, 3), "source latents of shape"),
    (torch.zeros(1, 3, 3, 3), "source latents of shape"),
])
def test_a_source_of_another_size_is_refused_before_the_model_runs(source, message):
    model = affine_model(COEFFICIENTS)
    guidance = edit(model, "dds", source)
    with pytest.raises(ValueError, match=message):
        guidance(torch.zeros(2, 4, 3, 3), 0, 1)
    assert model.evaluations == 0


@pytest.mark.parametrize("bad, message", [
    (dict(source=torch.full((1, 4, 3, 3), float("nan"))), "source latents hold NaN"),
    (dict(source=torch.zeros(4, 3, 3)), r"source latents must be \[batch, channels, height, width\]"),
    (dict(scale=float("nan")), "scale must be a finite number"),
    (dict(mask=torch.full((1, 1, 3, 3), 0.5)), "only 0 and 1"),
])
def test_bad_edit_settings_are_refused_where_the_guidance_is_made(bad, message):
    model = affine_model(COEFFICIENTS)
    source = bad.pop("source", torch.zeros(1, 4, 3, 3))
    with pytest.raises(ValueError, match=message):
        edit(model, "dds", source, **bad)


def test_a_pixel_mask_becomes_a_latent_mask_of_the_latents_it_touches():
    pixels = torch.zeros(12, 12)
    pixels[0:2, 7:9] = 1.0  # touches latents (0, 1) and (0, 2) at 4 pixels per latent
    mask = latent_mask(pixels, 3, 3)
    assert mask.shape == (1, 1, 3, 3) and mask.flatten().tolist() == [0, 1, 1, 0, 0, 0, 0, 0, 0]
    assert latent_mask(torch.ones(2, 12, 12), 3, 3).shape == (2, 1, 3, 3)


@pytest.mark.parametrize("pixels, message", [
    (torch.zeros(12, 12), "selects nothing"),
    (torch.ones(12, 24), "the mask is 24x12 pixels but the latents are 3x3, another aspect ratio"),
    (torch.ones(12), r"mask must be \[height, width\]"),
    (torch.full((12, 12), float("nan")), "NaN"),
])
def test_a_pixel_mask_that_cannot_be_used_is_refused(pixels, message):
    with pytest.raises(ValueError, match=message):
        latent_mask(pixels, 3, 3)


@pytest.mark.parametrize("rule", ["dds", "nfsd_edit", "sds"])
def test_latents_outside_the_mask_never_move(rule):
    model = gaussian_model(MEANS, std=0.5)
    source = torch.randn(1, 4, 3, 3, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(1, 1, 3, 3)
    mask[..., 1:, 1:] = 1.0
    settings = dict(mask=mask, seed=2)
    guidance = (edit(model, rule, source, **settings) if rule != "sds"
                else ScoreDistillation(model, Prompts.from_text(model, "cat"), rule, **settings))
    canvas = LatentCanvas(source)
    optimize(canvas, guidance, 20, OptimizerSettings(lr=0.05))
    moved = (canvas.latents.detach() != source).expand(1, 4, 3, 3)
    assert not moved[mask.expand_as(moved) == 0].any() and moved[mask.expand_as(moved) == 1].all()


def test_the_mask_must_fit_the_canvas():
    model = affine_model(COEFFICIENTS)
    guidance = edit(model, "dds", torch.zeros(1, 4, 3, 3), mask=torch.ones(1, 1, 4, 4))
    with pytest.raises(ValueError, match="mask latents of shape"):
        guidance(torch.zeros(1, 4, 3, 3), 0, 1)


def test_the_source_and_the_mask_are_part_of_the_run_identity(tmp_path):
    model = gaussian_model(MEANS, std=0.5)
    source = torch.randn(1, 4, 3, 3, generator=torch.Generator().manual_seed(1))

    def run(guidance_source, mask=None, steps=4):
        return optimize(LatentCanvas(source), edit(model, "dds", guidance_source, mask=mask), steps,
                        checkpoint_dir=tmp_path)

    def identity(guidance_source, mask=None):
        return run_identity(LatentCanvas(source), edit(model, "dds", guidance_source, mask=mask), 4,
                            OptimizerSettings())

    assert "guidance.source_latents: saved" in describe_differences(identity(source), identity(source + 1))
    masked = identity(source, torch.ones(1, 1, 3, 3))
    assert "guidance.mask: saved None" in describe_differences(identity(source), masked)
    calls = iter([False, False, True])
    optimize(LatentCanvas(source), edit(model, "dds", source), 4, checkpoint_dir=tmp_path,
             should_stop=lambda: next(calls))
    with pytest.raises(CheckpointError, match="guidance.source_latents: saved"):
        run(source + 1)
    assert run(source).steps_done == 4  # the same source resumes
