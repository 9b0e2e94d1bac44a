"""Many runs at once: the `batch` command and the benchmarks' path, on Ray or in this process.

- `tasks`: a run as a task (`Task`, the model it shares, `ModelSpec`) and the `Worker` that runs them;
- `runner`: `run_tasks`, the one path of every batch (journal, progress bar, outcomes, summary);
- `ray_runner`: the same on Ray actors (imported only when Ray runs the batch);
- `journal`: the record of finished runs that makes a batch resumable;
- `jobs`: the `batch` command: a JOBS file of command-line runs, checked whole before any run.

`import nfsd_core` loads none of this, and nothing but `ray_runner` imports Ray (an optional extra:
`pip install -e ".[cluster]"`).
"""
