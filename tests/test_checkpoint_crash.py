"""kill -9 at random instants of a run that saves after every step: the folder always holds the previous
complete state or the new one, and the resumed run always ends bit-identical to an uninterrupted one."""

import multiprocessing
import os
import random
import signal
import time

import pytest
import torch

from nfsd_core import LatentCanvas, OptimizerSettings, Prompts, ScoreDistillation, optimize
from nfsd_core.checkpoint import LOCK_FILE, MARKER_FILE, PARTIAL_FILE, STATE_FILE, has_checkpoint, read_checkpoint

from core_helpers import gaussian_model

STEPS = 40
TRIALS = int(os.environ.get("NFSD_KILL_TRIALS", 15))  # more for a soak, e.g. 200
KILLS_PER_TRIAL = 3
SETTINGS = OptimizerSettings(lr=0.05)


def fresh_run():
    """The canvas and guidance every process builds alike (a fresh process starts from scratch like this)."""
    model = gaussian_model({"cat": 1.5, "": 0.0, "ugly": -1.0}, std=0.5)
    guidance = ScoreDistillation(model, Prompts.from_text(model, "cat", negative_prompt="ugly"), "nfsd", seed=11)
    return LatentCanvas.random(2, 4, 32, 32, seed=4), guidance


def worker(directory: str) -> None:
    torch.set_num_threads(1)
    canvas, guidance = fresh_run()
    optimize(canvas, guidance, STEPS, SETTINGS, checkpoint_dir=directory, checkpoint_every=1)
    os._exit(0)


@pytest.mark.skipif(os.name != "posix" or "fork" not in multiprocessing.get_all_start_methods(),
                    reason="needs fork and SIGKILL")
def test_kill_9_at_random_instants_always_resumes_to_the_uninterrupted_result(tmp_path):
    reference, guidance = fresh_run()
    reference_run = optimize(reference, guidance, STEPS, SETTINGS)
    started = time.perf_counter()
    worker_process = multiprocessing.get_context("fork").Process(target=worker, args=(str(tmp_path / "timing"),))
    worker_process.start()
    worker_process.join()
    run_seconds = time.perf_counter() - started  # a whole run with a save after every step, fork included

    generator = random.Random(0)
    kills = partial_files_seen = 0
    for trial in range(TRIALS):
        directory = tmp_path / f"trial{trial}"
        for _ in range(KILLS_PER_TRIAL):
            process = multiprocessing.get_context("fork").Process(target=worker, args=(str(directory),))
            process.start()
            time.sleep(generator.uniform(0.0, 0.6 * run_seconds))
            if process.is_alive():
                os.kill(process.pid, signal.SIGKILL)
                kills += 1
            process.join()
            partial_files_seen += (directory / PARTIAL_FILE).exists()
            if has_checkpoint(directory):
                saved = read_checkpoint(directory)  # whole and consistent, whatever the instant of the kill
                assert 0 <= saved.step <= STEPS and len(saved.history) == saved.step
        canvas, guidance = fresh_run()
        resumed = optimize(canvas, guidance, STEPS, SETTINGS, checkpoint_dir=directory)
        assert torch.equal(canvas.latents, reference.latents), f"trial {trial}"
        assert [r.t for r in resumed.history] == [r.t for r in reference_run.history]
        assert not (directory / PARTIAL_FILE).exists()  # no orphan survives the next run
        assert sorted(p.name for p in directory.iterdir()) == sorted([MARKER_FILE, LOCK_FILE, STATE_FILE])
    print(f"kill -9: {kills} kills in {TRIALS} trials, {partial_files_seen} left a partial save behind, "
          f"{TRIALS} of {TRIALS} resumes bit-identical (a run took {run_seconds:.2f} s)")
    assert kills >= TRIALS  # the kills did land inside runs
