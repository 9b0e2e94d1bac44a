import pytest
import torch

from nfsd_core import CallableScoreModel, LatentCanvas, OptimizerSettings, Prompts, ScoreDistillation, optimize
from nfsd_core.checkpoint import CheckpointError, has_checkpoint, read_checkpoint
from nfsd_core.identity import describe_differences

from core_helpers import gaussian_model

MEANS = {"cat": 1.5, "": 0.0, "ugly": -1.0}


def make_guidance(rule="sds", seed=0, scale=None):
    model = gaussian_model(MEANS, std=0.5)
    return ScoreDistillation(model, Prompts.from_text(model, "cat", negative_prompt="ugly"), rule, scale=scale, seed=seed)


def test_canvas_converges_to_the_mode_of_a_gaussian_prior():
    # With e_c = e_u (scale 1 makes SDS plain score matching), the fixed point of SDS is the prior mean.
    canvas = LatentCanvas.random(2, 4, 4, 4, seed=0)
    start = (canvas.latents.detach() - MEANS["cat"]).norm()
    optimize(canvas, make_guidance("sds", scale=1.0), steps=300, settings=OptimizerSettings(lr=0.05))
    end = (canvas.latents.detach() - MEANS["cat"]).norm()
    assert end < 0.2 * start


def test_nfsd_moves_the_canvas_towards_the_prompt_and_away_from_the_negative():
    canvas = LatentCanvas.random(1, 4, 4, 4, seed=0)
    before = canvas.latents.detach().mean()
    optimize(canvas, make_guidance("nfsd"), steps=100, settings=OptimizerSettings(lr=0.05))
    assert canvas.latents.detach().mean() > before + 1.0


def test_runs_are_bit_identical_when_repeated():
    results = []
    for _ in range(2):
        canvas = LatentCanvas.random(2, 4, 4, 4, seed=3)
        run = optimize(canvas, make_guidance("nfsd", seed=5), steps=30)
        results.append((canvas.latents.detach().clone(), [r.t for r in run.history]))
    assert torch.equal(results[0][0], results[1][0]) and results[0][1] == results[1][1]


def test_history_reports_every_step():
    seen = []
    run = optimize(LatentCanvas.random(1, 4, 4, 4), make_guidance("nfsd"), steps=5, on_step=seen.append)
    assert [r.step for r in run.history] == [0, 1, 2, 3, 4] == [r.step for r in seen]
    assert all(r.evaluations in (2, 3) and set(r.components) == {"delta_C", "delta_D"} for r in run.history)
    assert all(r.loss == pytest.approx(0.5 * r.grad_norm**2) for r in run.history)


def test_canvas_logs_the_rms_of_the_latents_each_step_sees():
    canvas = LatentCanvas(torch.full((1, 4, 4, 4), 2.0))
    seen = []
    optimize(canvas, make_guidance("nfsd"), steps=2, on_step=seen.append)
    assert seen[0].stats["latent_rms"] == pytest.approx(2.0)  # before the first update
    assert seen[1].stats["latent_rms"] != pytest.approx(2.0)  # after it


def test_previews_arrive_every_n_steps_and_at_the_end():
    shown = []
    optimize(LatentCanvas.random(1, 4, 4, 4), make_guidance(), steps=7, preview_every=3,
             on_preview=lambda done, rep: shown.append(done))
    assert shown == [3, 6, 7]


def test_should_stop_ends_the_run_before_the_next_step(tmp_path):
    calls = iter([False, False, True])
    run = optimize(LatentCanvas.random(1, 4, 4, 4), make_guidance(), steps=10,
                   should_stop=lambda: next(calls), checkpoint_dir=tmp_path)
    assert run.stopped and run.steps_done == 2
    assert read_checkpoint(tmp_path).step == 2


class Interrupted(Exception):
    pass


def interrupt_after(n):
    def on_step(record):
        if record.step + 1 == n:
            raise Interrupted

    return on_step


def test_an_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path):
    reference = LatentCanvas.random(2, 4, 4, 4, seed=1)
    optimize(reference, make_guidance("nfsd", seed=9), steps=40)

    first = LatentCanvas.random(2, 4, 4, 4, seed=1)
    with pytest.raises(Interrupted):
        optimize(first, make_guidance("nfsd", seed=9), steps=40, checkpoint_dir=tmp_path, on_step=interrupt_after(17))
    assert has_checkpoint(tmp_path)

    resumed = LatentCanvas.random(2, 4, 4, 4, seed=1)  # a fresh process would start from scratch like this
    run = optimize(resumed, make_guidance("nfsd", seed=9), steps=40, checkpoint_dir=tmp_path)
    assert torch.equal(resumed.latents, reference.latents)
    assert [r.step for r in run.history] == list(range(40))


def test_periodic_checkpoints_survive_a_hard_stop(tmp_path):
    class HardStop(BaseException):
        pass

    def crash(record):
        if record.step == 12:
            raise HardStop

    with pytest.raises(HardStop):
        optimize(LatentCanvas.random(1, 4, 4, 4), make_guidance(), steps=20, checkpoint_dir=tmp_path,
                 checkpoint_every=5, on_step=crash)
    assert read_checkpoint(tmp_path).step == 13


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    optimize(LatentCanvas.random(1, 4, 4, 4), make_guidance("nfsd"), steps=3, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match="belongs to another run") as refused:
        optimize(LatentCanvas.random(1, 4, 4, 4), make_guidance("sds"), steps=3, checkpoint_dir=tmp_path)
    assert "guidance.rule: saved 'nfsd', now 'sds'" in str(refused.value)  # what differs, not two whole dicts
    with pytest.raises(CheckpointError, match="belongs to another run") as refused:
        optimize(LatentCanvas.random(2, 4, 4, 4), make_guidance("nfsd"), steps=3, checkpoint_dir=tmp_path)
    assert "representation.shape: saved [1, 4, 4, 4], now [2, 4, 4, 4]" in str(refused.value)


def test_describe_differences_names_each_differing_leaf():
    saved = {"a": 1, "b": {"c": [1, 2], "d": "x"}, "gone": True}
    current = {"a": 1, "b": {"c": [1, 3], "d": "x"}, "new": 0}
    assert describe_differences(saved, current) == ("b.c: saved [1, 2], now [1, 3]; gone: saved True, now None; "
                                                    "new: saved None, now 0")


@pytest.mark.parametrize("steps", [0, -3])
def test_non_positive_steps_are_refused(steps):
    with pytest.raises(ValueError, match="steps must be at least 1"):
        optimize(LatentCanvas.random(1, 4, 4, 4), make_guidance(), steps=steps)


def test_each_step_records_how_many_gradient_entries_were_not_finite():
    """A model whose prediction overflows in one entry: the parameters stay finite, the history says so."""

    def overflowing(x_t, t, conditions):
        prediction = x_t.clone()
        prediction[0, 0, 0, 0] = float("inf")  # the first image's prompt prediction
        return prediction

    model = CallableScoreModel(overflowing)
    guidance = ScoreDistillation(model, Prompts.from_text(model, "cat", negative_prompt="ugly"), "sds")
    canvas = LatentCanvas.random(2, 4, 4, 4, seed=0)
    run = optimize(canvas, guidance, steps=3)
    assert [record.nonfinite_gradient for record in run.history] == [1, 1, 1]
    assert torch.isfinite(canvas.latents).all()
