"""The benchmark's fixed judge: a digit classifier, a feature space, and the real reference digits.

Everything is plain torch and ships next to the prior (`evaluator/` in its directory), so the
demo measures without scikit-learn. It works on 8x8 grey digits: generated images are mapped
there by `data.to_digits`, and real digits take the same route through `to_images` first, so
both pass through identical resampling.

- classifier: a small CNN trained on the training split (held-out accuracy in `info`);
- features: PCA-20 of the training split (about 95% of the variance), for Frechet distances;
- references: the training split (real samples of any size, for floors and baselines) and
  the held-out split (what generated images are compared with).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .data import DigitSplit, to_digits, to_images
from .prior import DIGITS_PRIOR_DIR

FEATURES = 20
WEIGHTS_FILE = "evaluator.safetensors"
INFO_FILE = "evaluator.json"


def build_classifier() -> nn.Sequential:
    """8x8 grey digit [B, 1, 8, 8] -> 10 logits."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 4, 10),
    )


def round_trip(digits: Tensor) -> Tensor:
    """Real 8x8 digits as the evaluator sees generated ones: up to 32x32 RGB and back."""
    return to_digits(to_images(digits))


def shifted(digits: Tensor, generator: torch.Generator) -> Tensor:
    """Each digit [B, 8, 8] moved by up to one pixel in x and y (zero fill): training augmentation."""
    crops = F.pad(digits, (1, 1, 1, 1)).unfold(1, 8, 1).unfold(2, 8, 1)  # [B, 3, 3, 8, 8]
    dy, dx = torch.randint(3, (2, len(digits)), generator=generator)
    return crops[torch.arange(len(digits)), dy, dx]


def train_classifier(digits: Tensor, labels: Tensor, seed: int = 0, steps: int = 800) -> nn.Sequential:
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    classifier = build_classifier()
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=2e-3, weight_decay=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(steps):
        rows = torch.randint(len(labels), (128,), generator=generator)
        batch = shifted(digits[rows], generator) + 0.03 * torch.randn((128, 8, 8), generator=generator)
        loss = F.cross_entropy(classifier(batch.unsqueeze(1)), labels[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return classifier.eval()


@dataclass
class DigitEvaluator:
    classifier: nn.Sequential
    pca_mean: Tensor  # [64]
    pca_components: Tensor  # [FEATURES, 64], rows orthonormal
    split: DigitSplit  # 8x8 digits in [0, 1], NOT round-tripped
    info: dict = field(default_factory=dict)

    @classmethod
    def fit(cls, split: DigitSplit, seed: int = 0) -> "DigitEvaluator":
        """Train the classifier and the PCA on the training split; measure on the held-out split."""
        train = round_trip(split.train_digits)
        classifier = train_classifier(train, split.train_labels, seed)
        flat = train.flatten(1).double()
        mean = flat.mean(0)
        _, singular, components = torch.linalg.svd(flat - mean, full_matrices=False)
        explained = float((singular[:FEATURES] ** 2).sum() / (singular**2).sum())
        evaluator = cls(classifier, mean.float(), components[:FEATURES].float(), split)
        accuracy = float((evaluator.predict_digits(round_trip(split.held_out_digits)) == split.held_out_labels)
                         .float().mean())
        evaluator.info = {"classifier_held_out_accuracy": round(accuracy, 4),
                          "pca_explained_variance": round(explained, 4),
                          "train_size": len(split.train_labels), "held_out_size": len(split.held_out_labels)}
        return evaluator

    @torch.no_grad()
    def predict_digits(self, digits: Tensor) -> Tensor:
        """Class labels [B] of 8x8 digits [B, 8, 8]."""
        return self.classifier(digits.float().unsqueeze(1)).argmax(dim=1)

    def predict(self, images: Tensor) -> Tensor:
        """Class labels [B] of RGB images [B, 3, H, W] in [0, 1]."""
        return self.predict_digits(to_digits(images))

    def features(self, digits: Tensor) -> Tensor:
        """PCA features [B, FEATURES] of 8x8 digits [B, 8, 8]."""
        return (digits.flatten(1).float() - self.pca_mean) @ self.pca_components.T

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"classifier.{k}": v.contiguous() for k, v in self.classifier.state_dict().items()}
        tensors.update(pca_mean=self.pca_mean, pca_components=self.pca_components.contiguous())
        for name in ("train_digits", "held_out_digits"):
            tensors[name] = (getattr(self.split, name) * 16).round().to(torch.uint8)
        for name in ("train_labels", "held_out_labels"):
            tensors[name] = getattr(self.split, name).to(torch.uint8)
        save_file(tensors, str(directory / WEIGHTS_FILE))
        (directory / INFO_FILE).write_text(json.dumps(self.info, indent=1))

    @classmethod
    def load(cls, directory: str | Path) -> "DigitEvaluator":
        directory = Path(directory)
        if not (directory / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(f"no digit evaluator in {directory} (expected {WEIGHTS_FILE})")
        tensors = load_file(str(directory / WEIGHTS_FILE))
        classifier = build_classifier()
        classifier.load_state_dict({k.removeprefix("classifier."): v for k, v in tensors.items()
                                    if k.startswith("classifier.")})
        split = DigitSplit(
            train_digits=tensors["train_digits"].float() / 16, train_labels=tensors["train_labels"].long(),
            held_out_digits=tensors["held_out_digits"].float() / 16, held_out_labels=tensors["held_out_labels"].long(),
        )
        info = json.loads((directory / INFO_FILE).read_text())
        return cls(classifier.eval(), tensors["pca_mean"], tensors["pca_components"], split, info)


def load_digits_evaluator(directory: str | Path = DIGITS_PRIOR_DIR) -> DigitEvaluator:
    """The classifier, feature space and reference digits the benchmark measures with, as shipped
    beside the prior (`evaluator/` in the prior's directory)."""
    return DigitEvaluator.load(Path(directory) / "evaluator")
