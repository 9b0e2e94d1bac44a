"""Shared test settings: offline, deterministic, small."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

# The tiny test models gain nothing from a second thread, and on a busy CPU two threads can
# wait on each other for seconds per call.
torch.set_num_threads(1)
