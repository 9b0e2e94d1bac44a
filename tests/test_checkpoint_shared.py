"""Checkpoints on a shared machine: one run per folder (an OS lock, also across processes), no folder
inside or around another's, states signed with a key only their writer holds, headers checked before
any tensor is read, and a run that diverges never saved as finished."""

import json
import multiprocessing
import os
import signal
import stat
import threading

import pytest
import torch
from safetensors.torch import save_file

from nfsd_core import LatentCanvas, NonFiniteParameters, optimize
from nfsd_core.checkpoint import (LOCK_FILE, MARKER_FILE, RECORD_KEY, STATE_FILE, CheckpointError, checkpoint_key,
                                  claim_checkpoint_dir, hold_checkpoint_dir, read_checkpoint, save_checkpoint)
from nfsd_core.identity import tensors_digest
from nfsd_core.signing import KEY_BYTES, KEY_FILE, load_key

from test_checkpoint import STEPS, canvas, guidance, run, stop_after

FORK = pytest.mark.skipif(os.name != "posix" or "fork" not in multiprocessing.get_all_start_methods(),
                          reason="needs fork and SIGKILL")


# --- one run per folder -------------------------------------------------------------------------------------------

def run_holding(directory, holding, release, steps=STEPS):
    """A whole run in a child process that pauses after its first step (the folder locked) until `release`."""
    def on_step(record):
        if record.step == 0:
            holding.set()
            release.wait(60)

    torch.set_num_threads(1)
    optimize(canvas(), guidance(), steps, checkpoint_dir=directory, checkpoint_every=1, on_step=on_step)
    os._exit(0)


@FORK
def test_a_second_process_on_a_folder_in_use_is_refused_and_the_first_runs_on_intact(tmp_path):
    context = multiprocessing.get_context("fork")
    holding, release = context.Event(), context.Event()
    shared = tmp_path / "shared"
    first = context.Process(target=run_holding, args=(str(shared), holding, release))
    first.start()
    try:
        assert holding.wait(60), "the first run never started"
        saved = (shared / STATE_FILE).read_bytes()
        with pytest.raises(CheckpointError) as refused:
            run(shared)
        message = str(refused.value)
        assert f"the checkpoint folder {shared} is in use by another run" in message
        assert "choose another checkpoint folder" in message
        assert (shared / STATE_FILE).read_bytes() == saved  # the second run wrote nothing
    finally:
        release.set()
        first.join(60)
    assert first.exitcode == 0
    alone = run(tmp_path / "alone")
    finished = read_checkpoint(shared)
    assert finished.step == STEPS  # the first run went on and finished: its state is its own
    assert torch.equal(finished.tensors["representation.latents"], alone.representation.latents)


@FORK
def test_the_lock_dies_with_its_process(tmp_path):
    context = multiprocessing.get_context("fork")
    holding, release = context.Event(), context.Event()
    first = context.Process(target=run_holding, args=(str(tmp_path), holding, release))
    first.start()
    assert holding.wait(60)
    with pytest.raises(CheckpointError, match="in use by another run"):
        claim_checkpoint_dir(tmp_path)
    os.kill(first.pid, signal.SIGKILL)
    first.join(60)
    assert run(tmp_path).steps_done == STEPS  # kill -9 left no lock behind


def test_a_second_thread_is_refused_while_the_holding_thread_may_claim_again(tmp_path):
    refusals = []
    with hold_checkpoint_dir(tmp_path):
        assert claim_checkpoint_dir(tmp_path) == tmp_path  # the holder's own saves claim it again

        def other():
            try:
                claim_checkpoint_dir(tmp_path)
            except CheckpointError as error:
                refusals.append(str(error))

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert len(refusals) == 1 and "in use by another run" in refusals[0]
    claim_checkpoint_dir(tmp_path)  # released with the block


def test_a_run_holds_its_folder_from_before_its_first_step_to_its_last_save(tmp_path):
    seen = []

    def on_step(record):
        other = threading.Thread(target=lambda: seen.append(_refused(tmp_path)))
        other.start()
        other.join()

    run_result = optimize(canvas(), guidance(), 3, checkpoint_dir=tmp_path, on_step=on_step)
    assert run_result.steps_done == 3 and seen == [True, True, True]
    assert not _refused(tmp_path)


def _refused(directory) -> bool:
    try:
        claim_checkpoint_dir(directory)
    except CheckpointError as error:
        assert "in use by another run" in str(error)
        return True
    return False


# --- no folder inside or around another's ------------------------------------------------------------------------

def test_a_folder_inside_a_checkpoint_folder_is_refused_and_not_created(tmp_path):
    stop_after(tmp_path / "ck", 2)
    with pytest.raises(CheckpointError) as refused:
        run(tmp_path / "ck" / "inner" / "deeper")
    assert f"would lie inside {tmp_path / 'ck'}, the checkpoint folder of another run" in str(refused.value)
    assert not (tmp_path / "ck" / "inner").exists()
    assert run(tmp_path / "ck").steps_done == STEPS  # the outer run still resumes


def test_a_folder_around_a_checkpoint_folder_is_refused_naming_it(tmp_path):
    stop_after(tmp_path / "ck" / "inner", 2)
    with pytest.raises(CheckpointError, match=r"holds the checkpoint folder of another run \(inner\)"):
        run(tmp_path / "ck")
    assert sorted(os.listdir(tmp_path / "ck")) == ["inner"]
    assert run(tmp_path / "ck" / "inner").steps_done == STEPS


# --- signed states -----------------------------------------------------------------------------------------------

def test_the_key_is_made_once_with_secure_randomness_and_only_its_owner_may_read_it(tmp_path):
    folder = tmp_path / "config"
    key = load_key(folder)
    assert len(key) == KEY_BYTES and load_key(folder) == key and load_key(tmp_path / "other") != key
    if os.name == "posix":
        assert stat.S_IMODE((folder / KEY_FILE).stat().st_mode) == 0o600
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert sorted(os.listdir(folder)) == [KEY_FILE]  # no staging file left behind


@FORK
def test_processes_making_the_key_at_once_all_get_the_same_one(tmp_path):
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    processes = [context.Process(target=lambda: queue.put(load_key(tmp_path / "config"))) for _ in range(6)]
    for process in processes:
        process.start()
    keys = {queue.get(timeout=60) for _ in processes}
    for process in processes:
        process.join(60)
    assert len(keys) == 1 and keys == {load_key(tmp_path / "config")}


def test_a_damaged_key_file_is_refused_naming_it(tmp_path):
    (tmp_path / KEY_FILE).write_bytes(b"short")
    with pytest.raises(CheckpointError, match="checkpoint signing key .* is damaged"):
        checkpoint_key(tmp_path)


def test_a_state_signed_with_another_key_is_refused_and_left_as_it_was(tmp_path):
    stop_after(tmp_path, 2)
    saved = (tmp_path / STATE_FILE).read_bytes()
    with pytest.raises(CheckpointError) as refused:
        optimize(canvas(), guidance(), STEPS, checkpoint_dir=tmp_path, signing_key=os.urandom(KEY_BYTES),
                 on_step=lambda record: pytest.fail("a step ran"))
    assert "does not carry this server's signature" in str(refused.value)
    assert (tmp_path / STATE_FILE).read_bytes() == saved


def forged_state(directory, tensors, record) -> None:
    """What anyone who can write into the folder can make: a consistent file, unsigned."""
    claim_checkpoint_dir(directory)
    save_file(tensors, str(directory / STATE_FILE), metadata={RECORD_KEY: json.dumps(record)})


def test_a_forged_state_with_a_recomputed_digest_is_refused(tmp_path):
    """The issue's forgery: finite but insane moments, with the digest anyone can recompute."""
    stop_after(tmp_path, 2)
    real = read_checkpoint(tmp_path)
    tensors = dict(real.tensors, **{"optimizer.0.step": torch.tensor(1e30), "optimizer.0.exp_avg":
                                    torch.full_like(real.tensors["optimizer.0.exp_avg"], 3e38),
                                    "optimizer.0.exp_avg_sq": torch.full_like(real.tensors["optimizer.0.exp_avg"], -1)})
    record = {"format": 3, "step": 2, "identity": real.identity, "history": real.history,
              "tensors_sha256": tensors_digest(tensors), "signature": "0" * 64}
    forged_state(tmp_path, tensors, record)
    forged = (tmp_path / STATE_FILE).read_bytes()
    with pytest.raises(CheckpointError, match="does not carry this server's signature"):
        run(tmp_path)
    assert (tmp_path / STATE_FILE).read_bytes() == forged  # nothing overwritten, nothing run


def test_a_state_of_the_earlier_unsigned_format_is_refused_with_the_reason(tmp_path):
    stop_after(tmp_path, 2)
    real = read_checkpoint(tmp_path)
    forged_state(tmp_path, real.tensors, {"format": 2, "step": 2, "identity": real.identity, "history": real.history,
                                          "sha256": "0" * 64})
    with pytest.raises(CheckpointError) as refused:
        run(tmp_path)
    assert "earlier NFSD (checkpoint format 2), whose states carry no signature" in str(refused.value)
    assert "Delete it (or its folder) to start the run over" in str(refused.value)


# --- headers before tensors ----------------------------------------------------------------------------------------

def sparse_state(path, record, gib=2) -> None:
    """A state file whose header announces one `gib` GiB tensor, its bytes a sparse hole (no disk used)."""
    size = gib * 2**30
    header = {"representation.latents": {"dtype": "F32", "shape": [size // 4], "data_offsets": [0, size]},
              "__metadata__": {RECORD_KEY: json.dumps(record)}}
    encoded = json.dumps(header).encode()
    with open(path, "wb") as file:
        file.write(len(encoded).to_bytes(8, "little") + encoded)
        file.truncate(8 + len(encoded) + size)


@pytest.mark.parametrize("signed", [False, True])
def test_a_2_gib_tensor_is_refused_before_any_tensor_is_read(tmp_path, monkeypatch, signed):
    from nfsd_core import checkpoint
    from nfsd_core.signing import sign

    stop_after(tmp_path, 2)
    real = read_checkpoint(tmp_path)
    record = {"format": 3, "step": 2, "identity": real.identity, "history": real.history,
              "tensors_sha256": "0" * 64}
    record["signature"] = sign(checkpoint_key(), checkpoint.signed_content(record)) if signed else "0" * 64
    sparse_state(tmp_path / STATE_FILE, record)
    monkeypatch.setattr(checkpoint, "safe_open", lambda *args, **kwargs: pytest.fail("a tensor was read"))
    with pytest.raises(CheckpointError) as refused:
        run(tmp_path)
    # unsigned: the signature refuses it; signed (a leaked key, a bug): the shape does, against this run's
    cause = "representation tensor 'latents' is torch.float32 [536870912]" if signed else "signature"
    assert cause in str(refused.value)


@pytest.mark.parametrize("header, cause", [
    (b"\xff" * 8, "header size is"),
    ((10**9).to_bytes(8, "little"), "header size is"),
    ((80).to_bytes(8, "little") + b"[" * 40 + b"]" * 40, "nests lists or objects more than 4 deep"),
    ((12).to_bytes(8, "little") + b'{"a": "\xff"}', "not a readable safetensors file"),
])
def test_a_damaged_header_is_refused_with_the_pack_s_message(tmp_path, header, cause):
    claim_checkpoint_dir(tmp_path)
    (tmp_path / STATE_FILE).write_bytes(header + b"\0" * 64)
    with pytest.raises(CheckpointError) as refused:
        run(tmp_path)
    assert cause in str(refused.value) and "cannot be resumed" in str(refused.value)


def test_a_record_nested_50000_deep_is_refused_with_the_pack_s_message(tmp_path):
    claim_checkpoint_dir(tmp_path)
    save_file({"x": torch.zeros(1)}, str(tmp_path / STATE_FILE),
              metadata={RECORD_KEY: "[" * 50000 + "]" * 50000})
    with pytest.raises(CheckpointError, match="its record nests lists or objects more than 32 deep"):
        run(tmp_path)


# --- a run that diverges ---------------------------------------------------------------------------------------------

class DivergingCanvas(LatentCanvas):
    """A canvas whose regulariser turns its gradient NaN from step index 3 on (as an overflow would)."""

    def render_for_guidance(self, step, steps, generator):
        view = super().render_for_guidance(step, steps, generator)
        if step >= 3:
            view.regularization = (self.latents * float("nan")).sum()
        return view


def test_a_run_that_makes_its_parameters_non_finite_fails_and_keeps_the_last_finite_state(tmp_path):
    def diverging_run():
        optimize(DivergingCanvas.random(1, 4, 4, 4, seed=1), guidance(), STEPS, checkpoint_dir=tmp_path,
                 checkpoint_every=1)

    with pytest.raises(NonFiniteParameters, match=r"step 4 left NaN or infinite values in the representation's"):
        diverging_run()
    kept = read_checkpoint(tmp_path)
    assert kept.step == 3 and all(torch.isfinite(value).all() for value in kept.tensors.values())
    with pytest.raises(NonFiniteParameters):  # resumed, it fails at the same step again: never saved as finished
        diverging_run()
    assert read_checkpoint(tmp_path).step == 3


def test_save_refuses_non_finite_values(tmp_path):
    broken = canvas()
    with torch.no_grad():
        broken.latents[0, 0, 0, 0] = float("nan")
    with pytest.raises(CheckpointError, match=r"refusing to save a state holding NaN or infinite values"):
        save_checkpoint(tmp_path, broken, None, 1, {}, [])
    assert not (tmp_path / STATE_FILE).exists() and sorted(os.listdir(tmp_path)) == []


def test_a_claimed_folder_holds_only_nfsd_s_own_files(tmp_path):
    run(tmp_path)
    assert sorted(os.listdir(tmp_path)) == sorted([MARKER_FILE, LOCK_FILE, STATE_FILE])
