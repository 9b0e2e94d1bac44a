"""The 3D benchmark's judge: a small CNN that names the object, colour and view of a 32x32 render.

It is trained on renders of its own seed (never the prior's training images) and measured on
held-out renders; it ships beside the prior (`evaluator/` in the prior's directory), plain torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .data import IMAGE_SIZE, VIEWS, ShapeSet, make_shape_set
from .objects import COLOURS, OBJECTS
from .prior import SHAPES_PRIOR_DIR

HEADS = {"shape": tuple(OBJECTS), "colour": tuple(COLOURS), "view": VIEWS}
WEIGHTS_FILE = "evaluator.safetensors"
INFO_FILE = "evaluator.json"


class Judge(nn.Module):
    """RGB [B, 3, 32, 32] in [0, 1] -> logits per head."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.2), nn.Linear(128 * (IMAGE_SIZE // 8) ** 2, 256), nn.ReLU(),
        )
        self.heads = nn.ModuleDict({name: nn.Linear(256, len(classes)) for name, classes in HEADS.items()})

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        features = self.features(images * 2.0 - 1.0)
        return {name: head(features) for name, head in self.heads.items()}


def labels(shape_set: ShapeSet) -> dict[str, Tensor]:
    """Class indices [N] per head of each rendered sample."""
    return {name: torch.tensor([classes.index(getattr(s, name)) for s in shape_set.samples])
            for name, classes in HEADS.items()}


def train_judge(shape_set: ShapeSet, seed: int, steps: int, batch: int = 128) -> Judge:
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    judge = Judge()
    targets = labels(shape_set)
    optimizer = torch.optim.AdamW(judge.parameters(), lr=2e-3, weight_decay=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(steps):
        rows = torch.randint(len(shape_set.samples), (batch,), generator=generator)
        images = shape_set.images[rows] + 0.02 * torch.randn((batch, 3, IMAGE_SIZE, IMAGE_SIZE), generator=generator)
        logits = judge(images.clamp(0.0, 1.0))
        loss = sum(F.cross_entropy(logits[name], targets[name][rows]) for name in HEADS)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return judge.eval()


def accuracy(predicted: list[str], truth: list[str]) -> float:
    return sum(p == t for p, t in zip(predicted, truth)) / len(truth)


@dataclass
class ShapeJudge:
    judge: Judge
    info: dict = field(default_factory=dict)

    @classmethod
    def fit(cls, train_images: int, held_out_images: int, seed: int, steps: int = 1500) -> "ShapeJudge":
        """Train on `train_images` renders of seed `seed` + 100, measure on `held_out_images` of seed + 200."""
        judge = cls(train_judge(make_shape_set(train_images, seed + 100), seed, steps))
        held_out = make_shape_set(held_out_images, seed + 200)
        predicted = judge.predict(held_out.images)
        judge.info = {f"{name}_held_out_accuracy": round(accuracy(predicted[name], [getattr(s, name) for s in
                                                                                     held_out.samples]), 4)
                      for name in HEADS}
        judge.info.update(train_size=train_images, held_out_size=held_out_images, steps=steps)
        return judge

    @torch.no_grad()
    def predict(self, images: Tensor) -> dict[str, list[str]]:
        """Names per head of RGB images [B, 3, 32, 32] in [0, 1]."""
        logits = self.judge(images.float().clamp(0.0, 1.0))
        return {name: [HEADS[name][i] for i in logits[name].argmax(dim=1).tolist()] for name in HEADS}

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.judge.state_dict().items()}, str(directory / WEIGHTS_FILE))
        (directory / INFO_FILE).write_text(json.dumps(self.info, indent=1))

    @classmethod
    def load(cls, directory: str | Path) -> "ShapeJudge":
        directory = Path(directory)
        if not (directory / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(f"no shape judge in {directory} (expected {WEIGHTS_FILE})")
        judge = Judge()
        judge.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
        return cls(judge.eval(), json.loads((directory / INFO_FILE).read_text()))


def load_shapes_judge(directory: str | Path = SHAPES_PRIOR_DIR) -> ShapeJudge:
    """The judge shipped beside the prior (`evaluator/` in its directory)."""
    return ShapeJudge.load(Path(directory) / "evaluator")
