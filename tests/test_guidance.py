"""Each rule against its formula, computed independently row by row on fixed tensors."""

import json

import pytest
import torch

from nfsd_core import DEFAULT_NEGATIVE_PROMPT, NoiseSchedule, Prompts, ScoreDistillation, make_rule
from nfsd_core.guidance import NoisePredictions, finalize_gradient, weight
from nfsd_core.limits import json_ready

from core_helpers import affine_model

T = torch.tensor([10, 199, 200, 650])  # both sides of NFSD's threshold


RULE_NAMES = ["nfsd", "sds", "csd", "sds_negative", "dds", "nfsd_edit"]


def fixed_predictions(seed=0):
    g = torch.Generator().manual_seed(seed)
    e_c, e_u, e_n, eps = (torch.randn(4, 4, 3, 3, generator=g) for _ in range(4))
    return e_c, e_u, e_n, eps


def expected_direction(rule, e_c, e_u, e_n, eps, t, s, source=None):
    """Row by row; `source` = (e_c, e_u, e_n) at the source latents under the source prompt (edit rules)."""
    rows = []
    for i in range(len(t)):
        if rule == "sds":
            rows.append(e_u[i] + s * (e_c[i] - e_u[i]) - eps[i])
        elif rule == "nfsd":
            delta_d = e_u[i] if t[i] < 200 else e_u[i] - e_n[i]
            rows.append(delta_d + s * (e_c[i] - e_u[i]))
        elif rule == "csd":
            rows.append(s * (e_c[i] - e_u[i]))
        elif rule == "sds_negative":
            rows.append(e_n[i] + s * (e_c[i] - e_n[i]) - eps[i])
        elif rule == "dds":  # SDS of the canvas under the target prompt minus SDS of the source: eps cancels
            s_c, s_u, _ = source
            rows.append((e_u[i] + s * (e_c[i] - e_u[i]) - eps[i]) - (s_u[i] + s * (s_c[i] - s_u[i]) - eps[i]))
        elif rule == "nfsd_edit":  # NFSD of the canvas under the target prompt minus NFSD of the source
            s_c, s_u, s_n = source
            delta_d = e_u[i] if t[i] < 200 else e_u[i] - e_n[i]
            source_delta_d = s_u[i] if t[i] < 200 else s_u[i] - s_n[i]
            rows.append(delta_d + s * (e_c[i] - e_u[i]) - (source_delta_d + s * (s_c[i] - s_u[i])))
    return torch.stack(rows)


def predictions_of(name, e_c, e_u, e_n, eps, source):
    if not make_rule(name).edits:
        return NoisePredictions(e_c, e_u, e_n, eps)
    return NoisePredictions(e_c, e_u, e_n, eps, source=NoisePredictions(*source, eps))


@pytest.mark.parametrize("name", RULE_NAMES)
def test_rule_direction_matches_formula(name):
    e_c, e_u, e_n, eps = fixed_predictions()
    source = fixed_predictions(seed=1)[:3]
    terms = make_rule(name).terms(predictions_of(name, e_c, e_u, e_n, eps, source), T, 7.5)
    expected = expected_direction(name, e_c, e_u, e_n, eps, T, 7.5, source)
    assert torch.allclose(terms.direction, expected, atol=1e-5)


@pytest.mark.parametrize("name", ["dds", "nfsd_edit"])
def test_edit_rules_read_no_negative_row_they_did_not_ask_for(name):
    e_c, e_u, e_n, eps = fixed_predictions()
    s_c, s_u, s_n = fixed_predictions(seed=1)[:3]
    for negative in (e_n, s_n):
        negative[:2] = float("nan")  # below the threshold: rows the model was not asked for
    terms = make_rule(name).terms(predictions_of(name, e_c, e_u, e_n, eps, (s_c, s_u, s_n)), T, 7.5)
    assert torch.isfinite(terms.direction).all()


def test_nfsd_components_are_delta_c_and_delta_d():
    e_c, e_u, e_n, eps = fixed_predictions()
    terms = make_rule("nfsd").terms(NoisePredictions(e_c, e_u, e_n, eps), T, 7.5)
    assert torch.allclose(terms.components["delta_C"], e_c - e_u)
    assert torch.allclose(terms.components["delta_D"][:2], e_u[:2])
    assert torch.allclose(terms.components["delta_D"][2:], e_u[2:] - e_n[2:])


def test_nfsd_never_reads_negative_rows_below_threshold():
    e_c, e_u, e_n, eps = fixed_predictions()
    e_n[:2] = float("nan")  # rows the model was not asked for
    terms = make_rule("nfsd").terms(NoisePredictions(e_c, e_u, e_n, eps), T, 7.5)
    assert torch.isfinite(terms.direction).all()


def test_default_scales_follow_the_paper():
    assert make_rule("nfsd").default_scale == 7.5
    assert make_rule("sds").default_scale == 100.0


def test_unknown_rule_names_the_choices():
    with pytest.raises(ValueError, match="nfsd, sds, csd, sds_negative, dds, nfsd_edit"):
        make_rule("vsd")


def test_the_nfsd_threshold_reaches_both_nfsd_rules():
    assert make_rule("nfsd", 300).threshold == 300 and make_rule("nfsd_edit", 300).threshold == 300
    assert make_rule("dds").default_scale == make_rule("nfsd_edit").default_scale == 7.5


@pytest.mark.parametrize(
    "weighting, expected",
    [("sds", lambda ab: 1 - ab), ("uniform", lambda ab: torch.ones_like(ab)),
     ("fantasia3d", lambda ab: ab.sqrt() * (1 - ab))],
)
def test_weightings(weighting, expected):
    ab = torch.tensor([0.99, 0.5, 0.01])
    assert torch.allclose(weight(ab, weighting), expected(ab))


def test_non_finite_gradients_never_pass_are_counted_and_clip_bounds():
    g = torch.tensor([1.0, float("nan"), float("inf"), -float("inf"), -5.0])
    assert finalize_gradient(g)[0].tolist() == [1.0, 0.0, 0.0, 0.0, -5.0]
    cleaned, nonfinite = finalize_gradient(g, clip=2.0)
    assert cleaned.tolist() == [1.0, 0.0, 0.0, 0.0, -2.0] and nonfinite == 3
    assert finalize_gradient(torch.ones(4))[1] == 0


@pytest.mark.parametrize("settings", [{"grad_clip": float("nan")}, {"grad_clip": float("inf")}, {"grad_clip": 0.0},
                                      {"scale": float("nan")}, {"scale": float("-inf")}])
def test_non_finite_guidance_settings_are_refused(settings):
    model = affine_model(COEFFICIENTS)
    with pytest.raises(ValueError, match=next(iter(settings))):
        ScoreDistillation(model, Prompts.from_text(model, "cat"), "nfsd", **settings)


COEFFICIENTS = {"cat": (0.3, 0.2), "dog": (0.5, -0.3), "": (0.1, -0.1), DEFAULT_NEGATIVE_PROMPT: (-0.2, 0.4)}


@pytest.mark.parametrize("name", RULE_NAMES)
def test_distillation_step_end_to_end(name):
    """Through the model, with exact predictions e = a_c x_t + b_c, against the formula by hand; the
    edit rules turn a "dog" (the source latents) into a "cat", the source noised with the same eps and t."""
    model = affine_model(COEFFICIENTS)
    z, eps, z_source = torch.randn(4, 4, 3, 3), torch.randn(4, 4, 3, 3), torch.randn(1, 4, 3, 3)
    edits = make_rule(name).edits
    guidance = ScoreDistillation(model, Prompts.from_text(model, "cat", source_prompt="dog" if edits else None), name,
                                 scale=5.0, source_latents=z_source if edits else None)
    result = guidance(z, step=0, steps=1, t=T, noise=eps)

    schedule = NoiseSchedule.scaled_linear()
    ab = schedule.alpha_bar(T).view(-1, 1, 1, 1)

    def predicted(latents, prompt):
        x_t = ab.sqrt() * latents + (1 - ab).sqrt() * eps
        return tuple(a * x_t + b for a, b in (COEFFICIENTS[prompt], COEFFICIENTS[""],
                                              COEFFICIENTS[DEFAULT_NEGATIVE_PROMPT]))

    source = predicted(z_source.expand_as(z), "dog") if edits else None
    expected = (1 - ab) * expected_direction(name, *predicted(z, "cat"), eps, T, 5.0, source)
    assert torch.allclose(result.gradient, expected, atol=1e-5)


@pytest.mark.parametrize("t, evaluations", [(150, 2), (199, 2), (200, 3), (800, 3)])
def test_nfsd_evaluates_the_negative_prompt_only_from_t_200(t, evaluations):
    calls = []
    model = affine_model(COEFFICIENTS, calls)
    guidance = ScoreDistillation(model, Prompts.from_text(model, "cat"), "nfsd")
    result = guidance(torch.randn(1, 4, 3, 3), step=0, steps=1, t=torch.tensor([t]))
    assert result.evaluations == evaluations
    assert model.forward_calls == 1 and len(calls) == 1
    assert (DEFAULT_NEGATIVE_PROMPT in calls[0][1]) == (t >= 200)


def test_mixed_batch_evaluates_negative_rows_only_where_needed():
    calls = []
    model = affine_model(COEFFICIENTS, calls)
    guidance = ScoreDistillation(model, Prompts.from_text(model, "cat"), "nfsd")
    result = guidance(torch.randn(4, 4, 3, 3), step=0, steps=1, t=T)
    assert result.evaluations == 4 + 4 + 2 and model.forward_calls == 1
    t_seen, conditions = calls[0]
    assert t_seen[[c == DEFAULT_NEGATIVE_PROMPT for c in conditions]].tolist() == [200, 650]


@pytest.mark.parametrize("name, evaluations", [("sds", 2), ("csd", 2), ("sds_negative", 2)])
def test_other_rules_make_two_evaluations(name, evaluations):
    model = affine_model(COEFFICIENTS)
    guidance = ScoreDistillation(model, Prompts.from_text(model, "cat"), name)
    assert guidance(torch.randn(1, 4, 3, 3), 0, 1, t=torch.tensor([500])).evaluations == evaluations


def test_view_dependent_prompts_give_each_row_its_view():
    calls = []
    model = affine_model({**COEFFICIENTS, **{f"cat, {v} view": (0.3, 0.2) for v in ("front", "side", "back", "overhead")}}, calls)
    guidance = ScoreDistillation(model, Prompts.from_text(model, "cat", view_dependent=True), "sds")
    guidance(torch.randn(3, 4, 2, 2), 0, 1, views=["back", "front", "back"], t=torch.tensor([300, 400, 500]))
    t_seen, conditions = calls[0]
    assert sorted(zip(t_seen[:3].tolist(), conditions[:3])) == [
        (300, "cat, back view"), (400, "cat, front view"), (500, "cat, back view")]
    with pytest.raises(ValueError, match="no prompt for view"):
        guidance(torch.randn(1, 4, 2, 2), 0, 1, views=["top"])


def test_view_names_with_an_elevation_prompt_with_it():
    views = ["side, elevation 20", "front, elevation minus 10"]
    calls = []
    model = affine_model({**COEFFICIENTS, "cat, side view, elevation 20": (0.3, 0.2),
                          "cat, front view, elevation minus 10": (0.1, 0.4)}, calls)
    prompts = Prompts.from_text(model, "cat", view_dependent=True, views=views)
    assert list(prompts.positive) == views
    guidance = ScoreDistillation(model, prompts, "sds")
    guidance(torch.randn(2, 4, 2, 2), 0, 1, views=views[::-1], t=torch.tensor([300, 400]))
    t_seen, conditions = calls[0]
    assert sorted(zip(t_seen[:2].tolist(), conditions[:2])) == [
        (300, "cat, front view, elevation minus 10"), (400, "cat, side view, elevation 20")]
    with pytest.raises(ValueError, match="unknown view 'top, elevation 20': a view name starts with one of front"):
        Prompts.from_text(model, "cat", view_dependent=True, views=["top, elevation 20"])


def test_rules_that_need_a_negative_prompt_refuse_to_start_without_one():
    model = affine_model(COEFFICIENTS)
    with pytest.raises(ValueError, match="needs a negative prompt"):
        ScoreDistillation(model, Prompts.from_text(model, "cat", negative_prompt=None), "nfsd")


def test_distillation_loss_hands_the_gradient_to_the_latents():
    from nfsd_core import distillation_loss

    z = torch.randn(3, 4, 2, 2, requires_grad=True)
    gradient = torch.randn(3, 4, 2, 2)
    loss = distillation_loss(z, gradient)
    loss.backward()
    assert torch.allclose(z.grad, gradient / 3)
    assert loss.item() == pytest.approx(0.5 * gradient.pow(2).sum().item() / 3, rel=1e-5)


def test_json_ready_statistics_have_no_bare_nan():
    record = {"loss": [1.0, float("nan")], "grad_norm": (float("inf"), 2.0), "rule": "nfsd", "steps": 2}
    text = json.dumps(json_ready(record), allow_nan=False)
    assert json.loads(text) == {"loss": [1.0, None], "grad_norm": [None, 2.0], "rule": "nfsd", "steps": 2}
