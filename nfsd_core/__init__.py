"""Noise-Free Score Distillation (NFSD) and related score-distillation rules, in plain PyTorch."""
