"""Shared test settings: offline, deterministic, small."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

# The tiny test models gain nothing from a second thread, and on a busy CPU two threads can
# wait on each other for seconds per call.
torch.set_num_threads(1)

# Checkpoints are signed with a key made on first use in the user's configuration folder
# (nfsd_core.signing): the tests make theirs in a folder of their own, which child processes inherit.
import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

os.environ["NFSD_CONFIG_DIR"] = tempfile.mkdtemp(prefix="nfsd-test-config-")
atexit.register(shutil.rmtree, os.environ["NFSD_CONFIG_DIR"], True)
