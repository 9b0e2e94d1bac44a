"""Checkpoints: one run identity decides what may resume; folders NFSD does not own are never written;
unreadable, damaged, foreign and tampered states are refused with the file, the cause and the fix."""

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from nfsd_core import (LatentCanvas, OptimizerSettings, Prompts, ScoreDistillation, StepRecord, TimestepSchedule,
                       optimize)
from nfsd_core.checkpoint import (
    FORMAT_VERSION,
    LOCK_FILE,
    MARKER_FILE,
    PARTIAL_FILE,
    RECORD_KEY,
    STATE_FILE,
    CheckpointError,
    checkpoint_key,
    claim_checkpoint_dir,
    load_checkpoint,
    read_checkpoint,
    signed_content,
)
from nfsd_core.identity import describe_differences, identity_digest, run_identity, tensors_digest
from nfsd_core.signing import sign
from nfsd_core.nerf import NerfRepresentation

from core_helpers import gaussian_model
from nerf_helpers import PoolingCodec, pull_towards_denoiser, tiny_settings
from permissions import unwritable

MODEL = gaussian_model({"cat": 1.5, "": 0.0, "ugly": -1.0}, std=0.5)
STEPS = 6


def guidance(rule="nfsd", seed=0, **settings):
    return ScoreDistillation(MODEL, Prompts.from_text(MODEL, "cat", negative_prompt="ugly"), rule, seed=seed,
                             **settings)


def canvas(seed=1, batch=1):
    return LatentCanvas.random(batch, 4, 4, 4, seed=seed)


def run(directory, steps=STEPS, lr=0.01, rule="nfsd", seed=0, canvas_seed=1, **guidance_settings):
    return optimize(canvas(canvas_seed), guidance(rule, seed, **guidance_settings), steps, OptimizerSettings(lr=lr),
                    checkpoint_dir=directory)


def stop_after(directory, done, steps=STEPS):
    """Run `done` of `steps` steps and stop (saved): an unfinished checkpoint."""
    calls = iter([False] * done + [True])
    optimize(canvas(), guidance(), steps, checkpoint_dir=directory, should_stop=lambda: next(calls))


# --- run identity -------------------------------------------------------------------------------------------------

CHANGES = {  # what a resume changes -> the setting the refusal must name
    "lr": (dict(lr=5.0), "optimizer.lr: saved 0.01, now 5.0"),
    "steps": (dict(steps=STEPS + 1), f"steps: saved {STEPS}, now {STEPS + 1}"),
    "rule": (dict(rule="sds"), "guidance.rule: saved 'nfsd', now 'sds'"),
    "seed": (dict(seed=3), "guidance.seed: saved 0, now 3"),
    "scale": (dict(scale=20.0), "guidance.scale: saved 7.5, now 20.0"),
    "timesteps": (dict(timesteps=TimestepSchedule(kind="sqrt_anneal")), "guidance.timesteps.kind"),
    "starting canvas": (dict(canvas_seed=2), "starting_state: saved"),
}


@pytest.mark.parametrize("change", CHANGES)
def test_a_resume_with_any_other_setting_is_refused_naming_it(tmp_path, change):
    overrides, named = CHANGES[change]
    stop_after(tmp_path, 2)
    before = (tmp_path / STATE_FILE).read_bytes()
    with pytest.raises(CheckpointError, match="belongs to another run") as refused:
        run(tmp_path, **overrides)
    assert named in str(refused.value) and str(tmp_path / STATE_FILE) in str(refused.value)
    assert (tmp_path / STATE_FILE).read_bytes() == before  # refused before any step or save


def test_a_resume_with_a_higher_learning_rate_does_not_slip_through_as_before(tmp_path):
    # Formerly the saved param groups silently overrode OptimizerSettings(lr=5.0).
    stop_after(tmp_path, 3)
    with pytest.raises(CheckpointError, match=r"optimizer\.lr: saved 0\.01, now 5\.0"):
        run(tmp_path, lr=5.0)


def test_a_nerf_setting_refuses_the_resume():
    def identity(**settings):
        nerf = NerfRepresentation(tiny_settings(**settings), codec=PoolingCodec())
        model = pull_towards_denoiser()
        rule = ScoreDistillation(model, Prompts.from_text(model, "a ball", view_dependent=True), seed=7)
        return run_identity(nerf, rule, 4, OptimizerSettings())

    base = identity()
    assert identity() == base and identity_digest(identity()) == identity_digest(base)  # the temp folder's name
    for changed, named in ((dict(samples_per_ray=8), "representation.settings.samples_per_ray: saved 24, now 8"),
                           (dict(seed=5), "representation.settings.seed: saved 0, now 5")):
        other = identity(**changed)
        assert identity_digest(other) != identity_digest(base)
        assert named in describe_differences(base, other)


def test_the_same_run_resumes_and_a_finished_one_is_restored_without_its_moments(tmp_path):
    straight = canvas()
    optimize(straight, guidance(), STEPS)
    stop_after(tmp_path, 2)
    unfinished = read_checkpoint(tmp_path)
    assert unfinished.step == 2 and any(name.startswith("optimizer.") for name in unfinished.tensors)
    resumed = run(tmp_path)
    assert torch.equal(resumed.representation.latents, straight.latents)
    finished = read_checkpoint(tmp_path)
    assert finished.step == STEPS and not any(name.startswith("optimizer.") for name in finished.tensors)
    restored = run(tmp_path)
    assert torch.equal(restored.representation.latents, straight.latents) and len(restored.history) == STEPS


def test_a_non_finite_setting_is_named_instead_of_being_saved_as_invalid_json():
    with pytest.raises(ValueError, match="grad_clip must be a positive finite number"):
        guidance(grad_clip=float("nan"))  # refused where it is made
    tampered = guidance()
    tampered.grad_clip = float("nan")  # changed afterwards: the run identity still names it
    with pytest.raises(ValueError, match=r"run settings guidance\.grad_clip are not finite numbers"):
        run_identity(canvas(), tampered, STEPS, OptimizerSettings())


# --- the folder is NFSD's own -------------------------------------------------------------------------------------

def test_a_folder_holding_other_files_is_refused_and_left_untouched(tmp_path):
    (tmp_path / "state.json").write_text('{"another": "tool"}')
    with pytest.raises(CheckpointError, match=r"holds files NFSD did not write \(state.json\)"):
        run(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["state.json"]
    assert (tmp_path / "state.json").read_text() == '{"another": "tool"}'


def test_a_marked_folder_that_gained_a_foreign_file_is_refused_too(tmp_path):
    run(tmp_path, steps=1)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="notes.txt"):
        run(tmp_path, steps=1)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_an_own_name_that_is_a_symlink_is_refused(tmp_path):
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"precious")
    folder = tmp_path / "run"
    claim_checkpoint_dir(folder)
    os.symlink(outside, folder / STATE_FILE)
    with pytest.raises(CheckpointError, match="holds files NFSD did not write"):
        run(folder)
    assert outside.read_bytes() == b"precious"


def test_a_file_in_place_of_the_folder_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        claim_checkpoint_dir(tmp_path / "file")


def test_an_unwritable_folder_is_refused_before_the_first_step(tmp_path):
    claim_checkpoint_dir(tmp_path / "run")
    with unwritable(tmp_path / "run"), pytest.raises(CheckpointError, match="cannot write to the checkpoint folder"):
        optimize(canvas(), guidance(), STEPS, checkpoint_dir=tmp_path / "run",
                 on_step=lambda record: pytest.fail("a step ran"))


def test_a_partial_save_left_by_a_crash_is_removed_when_the_folder_is_next_claimed(tmp_path):
    stop_after(tmp_path, 2)
    (tmp_path / PARTIAL_FILE).write_bytes(b"half a save")
    run(tmp_path)
    assert sorted(os.listdir(tmp_path)) == sorted([MARKER_FILE, LOCK_FILE, STATE_FILE])


# --- damaged, foreign and tampered states -------------------------------------------------------------------------

def history(steps):
    """A plausible history of `steps` steps, as a checkpoint records it."""
    return [dataclasses.asdict(StepRecord(i, [500], 0.1, 0.2, {"delta_C": 0.3}, 0.0, 2, 0.01)) for i in range(steps)]


def write_signed(directory, tensors, step, identity, records, key=None, **record_changes):
    """A state signed as save_checkpoint signs it, whatever it holds (save_checkpoint itself refuses
    non-finite values): what a holder of the key, or a bug, could write."""
    claim_checkpoint_dir(directory)
    record = {"format": FORMAT_VERSION, "step": step, "identity": identity, "history": records,
              "tensors_sha256": tensors_digest(tensors), **record_changes}
    record["signature"] = sign(key or checkpoint_key(), signed_content(record))
    save_file(tensors, str(Path(directory) / STATE_FILE), metadata={RECORD_KEY: json.dumps(record)})


def forge(directory, representation, step, steps=STEPS, records=None, with_moments=True, moments=None):
    """A signed checkpoint of this test's run whose contents are insane; `moments` edits the AdamW state."""
    optimizer = torch.optim.AdamW(representation.parameter_groups(0.01), betas=OptimizerSettings().betas)
    if with_moments:
        representation.latents.grad = torch.ones_like(representation.latents)
        optimizer.step()
    tensors = {f"representation.{k}": v.detach().clone() for k, v in representation.state_dict().items()}
    if with_moments:
        for name, value in optimizer.state_dict()["state"][0].items():
            tensors[f"optimizer.0.{name}"] = value.detach().clone()
    for name, value in (moments or {}).items():
        tensors[f"optimizer.0.{name}"] = torch.as_tensor(value, dtype=torch.float32).expand_as(
            tensors[f"optimizer.0.{name}"]).clone()
    identity = run_identity(canvas(), guidance(), steps, OptimizerSettings())  # the identity of the real run
    write_signed(directory, tensors, step, identity, records if records is not None else history(step))


def rewrite_bytes(path, change):
    data = bytearray(path.read_bytes())
    change(data)
    path.write_bytes(bytes(data))


def truncate_to(fraction):
    return lambda data: data.__delitem__(slice(int(len(data) * fraction), None))


def flip_byte_at(fraction):
    def flip(data):
        data[int(len(data) * fraction)] ^= 0xFF
    return flip


def rewrite_record(change):
    """Edit the JSON record in the header, keeping the header length (spaces pad it)."""
    def edit(data):
        length = int.from_bytes(data[:8], "little")
        header = json.loads(bytes(data[8:8 + length]))
        record = json.loads(header["__metadata__"]["nfsd_checkpoint"])
        change(record)
        header["__metadata__"]["nfsd_checkpoint"] = json.dumps(record)
        encoded = json.dumps(header, separators=(",", ":")).encode()
        assert len(encoded) <= length
        data[8:8 + length] = encoded + b" " * (length - len(encoded))
    return edit


def set_in(record, key, value):
    record[key] = value


DAMAGE = {  # how the saved state is damaged -> what the refusal must say
    "empty file": (lambda d: d.clear(), "not a readable safetensors file"),
    "truncated to 10 bytes": (lambda d: d.__delitem__(slice(10, None)), "not a readable safetensors file"),
    "truncated to half": (truncate_to(0.5), "not a readable safetensors file"),
    "truncated by one byte": (truncate_to(0.9999), "not a readable safetensors file"),
    "garbage": (lambda d: d.__setitem__(slice(None), os.urandom(len(d))), "not a readable safetensors file"),
    "flipped tensor byte": (flip_byte_at(0.99), "do not match the digest"),
    "step edited": (rewrite_record(lambda r: set_in(r, "step", 3)), "does not carry this server's signature"),
    "step and history edited": (rewrite_record(lambda r: (set_in(r, "step", 1), set_in(r, "history", [{}]))),
                                "does not carry this server's signature"),
    "identity edited": (rewrite_record(lambda r: set_in(r, "identity", {})), "does not carry this server's signature"),
    "tensors' digest edited": (rewrite_record(lambda r: set_in(r, "tensors_sha256", "0" * 64)),
                               "does not carry this server's signature"),
    "signature removed": (rewrite_record(lambda r: r.pop("signature")), "does not carry this server's signature"),
    "format 1": (rewrite_record(lambda r: set_in(r, "format", 1)), "it has format 1, this version reads 3"),
    "no record": (rewrite_record(lambda r: r.clear()), "it has format None"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_state_is_refused_with_its_path_and_what_to_do(tmp_path, damage):
    change, cause = DAMAGE[damage]
    stop_after(tmp_path, 2)
    rewrite_bytes(tmp_path / STATE_FILE, change)
    with pytest.raises(CheckpointError) as refused:
        run(tmp_path)
    message = str(refused.value)
    assert str(tmp_path / STATE_FILE) in message and cause in message
    assert "Delete it (or its folder) to start the run over, or choose another checkpoint folder" in message


TAMPERED = {  # a consistent file (valid digest) whose contents are insane -> what the refusal must say
    "step beyond the run": (lambda d: forge(d, canvas(), STEPS + 4), f"it is at step {STEPS + 4} of a {STEPS}-step"),
    "NaN latents": (lambda d: forge(d, LatentCanvas(torch.full((1, 4, 4, 4), float("nan"))), 2),
                    "representation tensor 'latents' holds NaN or infinite values"),
    "infinite latents": (lambda d: forge(d, LatentCanvas(torch.full((1, 4, 4, 4), float("inf"))), 2),
                         "holds NaN or infinite values"),
    "another shape": (lambda d: forge(d, canvas(batch=2), 2), "'latents' is torch.float32 [2, 4, 4, 4]"),
    "no moments for an unfinished run": (lambda d: forge(d, canvas(), 2, with_moments=False), "no optimiser state"),
    "history of another version": (lambda d: forge(d, canvas(), 2, records=[{"step": 0}, {"step": 1}]),
                                   "its history is not of this version"),
    "a string where a number belongs": (
        lambda d: forge(d, canvas(), 2, records=[history(2)[0], {**history(2)[1], "loss": "0.1"}]),
        "its history's step 1 has loss = '0.1', not a value of that kind"),
    "history steps out of order": (lambda d: forge(d, canvas(), 2, records=history(2)[::-1]),
                                   "its history's step 0 is numbered 1"),
    "negative second moments": (lambda d: forge(d, canvas(), 2, moments={"exp_avg_sq": -1.0}),
                                "negative second moments"),
    "first moments of 3e38": (lambda d: forge(d, canvas(), 2, moments={"exp_avg": 3e38}),
                              "first moments (exp_avg) larger than its second moments allow"),
    "step count of 1e30": (lambda d: forge(d, canvas(), 2, moments={"step": 1e30}),
                           "counts 1e+30 steps, not a whole number from 1 to the 2"),
    "step count of 0": (lambda d: forge(d, canvas(), 2, moments={"step": 0.0}), "counts 0 steps"),
    "step count of 1.5": (lambda d: forge(d, canvas(), 2, moments={"step": 1.5}), "counts 1.5 steps"),
    "infinite moments": (lambda d: forge(d, canvas(), 2, moments={"exp_avg_sq": float("inf")}),
                         "optimiser state of parameter 0 holds NaN or infinite values"),
}


@pytest.mark.parametrize("tampered", TAMPERED)
def test_a_tampered_state_is_refused_before_any_step(tmp_path, tampered):
    make, cause = TAMPERED[tampered]
    make(tmp_path)
    with pytest.raises(CheckpointError) as refused:
        optimize(canvas(), guidance(), STEPS, checkpoint_dir=tmp_path, on_step=lambda r: pytest.fail("a step ran"))
    assert cause in str(refused.value) and str(tmp_path / STATE_FILE) in str(refused.value)


def test_a_foreign_safetensors_file_is_refused_as_not_ours(tmp_path):
    from safetensors.torch import save_file

    claim_checkpoint_dir(tmp_path)
    save_file({"weight": torch.zeros(3)}, str(tmp_path / STATE_FILE))
    with pytest.raises(CheckpointError, match="it holds no NFSD record"):
        run(tmp_path)


def test_loading_changes_nothing_when_it_refuses(tmp_path):
    forge(tmp_path, LatentCanvas(torch.full((1, 4, 4, 4), float("nan"))), 2)
    target = canvas()
    before = target.latents.detach().clone()
    optimizer = torch.optim.AdamW(target.parameter_groups(0.01))
    identity = run_identity(target, guidance(), STEPS, OptimizerSettings())
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path, target, optimizer, identity)
    assert torch.equal(target.latents, before) and not optimizer.state
