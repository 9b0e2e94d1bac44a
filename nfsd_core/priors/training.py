"""Training a miniature Stable Diffusion, in two stages as SD was.

1. `train_vae`: AutoencoderKL on real and degraded images (MSE + a small KL term); its
   `scaling_factor` becomes 1 / std of the posterior means, as SD's 0.18215 was chosen.
2. `train_denoiser`: the text encoder and the eps-prediction UNet together, on latents drawn
   from the frozen VAE's posteriors, with captions drawn per sample.
What a prior learns comes in as `PriorData` (images, how to caption and degrade them); its sizes
as `TrainingSettings.architecture`. Everything draws from generators seeded by
`TrainingSettings.seed`; `train_prior` runs both stages and writes a standard diffusers Stable
Diffusion directory.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .architecture import MiniatureSD, build_scheduler, build_text_encoder, build_unet, build_vae
from .tokenizer import build_tokenizer, save_tokenizer

Log = Callable[[dict], None]


@dataclass(frozen=True)
class PriorData:
    """What a prior learns from.

    `images` [N, 3, H, W] in [0, 1]; `caption(row, generator)` a random caption of image `row`
    (fine, coarse or empty); `degrade(images, generator)` degraded copies, which are captioned
    by `negative_caption(generator)` so that the negative prompt means "degraded"; `words` the
    caption vocabulary (each word becomes one token).
    """

    images: Tensor
    caption: Callable[[int, torch.Generator], str]
    degrade: Callable[[Tensor, torch.Generator], Tensor]
    negative_caption: Callable[[torch.Generator], str]
    words: list[str]


@dataclass(frozen=True)
class TrainingSettings:
    seed: int = 0
    vae_steps: int = 300
    vae_batch: int = 64
    vae_lr: float = 2e-3
    vae_kl_weight: float = 1e-5
    denoiser_steps: int = 1500
    denoiser_batch: int = 128
    denoiser_lr: float = 2e-3
    warmup_steps: int = 100
    ema_decay: float = 0.995
    degraded_fraction: float = 0.25
    degraded_copies: int = 3
    log_every: int = 50
    architecture: MiniatureSD = field(default_factory=MiniatureSD)


@dataclass
class LatentBank:
    """Posterior means and stds [N, C, h, w] (scaled) of real and degraded images."""

    real_mean: Tensor
    real_std: Tensor
    degraded_mean: Tensor
    degraded_std: Tensor


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak learning rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(steps - warmup, 1)
    return 0.1 + 0.45 * (1.0 + math.cos(math.pi * progress))


def ema_update(average: nn.Module, model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for target, source in zip(average.parameters(), model.parameters()):
            target.lerp_(source, 1.0 - decay)


def degraded_images(data: PriorData, copies: int, generator: torch.Generator) -> Tensor:
    """`copies` independently degraded versions of every image, [copies * N, 3, H, W]."""
    return torch.cat([data.degrade(data.images, generator) for _ in range(copies)])


def train_vae(images: Tensor, settings: TrainingSettings, log: Log = print) -> nn.Module:
    """Train the VAE on `images` [N, 3, H, W] in [0, 1] (real and degraded)."""
    generator = torch.Generator().manual_seed(settings.seed)
    torch.manual_seed(settings.seed)
    vae = build_vae(settings.architecture)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=settings.vae_lr, weight_decay=0.0)
    for step in range(settings.vae_steps):
        for group in optimizer.param_groups:
            group["lr"] = settings.vae_lr * lr_factor(step, settings.vae_steps, settings.warmup_steps)
        batch = images[torch.randint(len(images), (settings.vae_batch,), generator=generator)] * 2.0 - 1.0
        posterior = vae.encode(batch).latent_dist
        latents = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
        reconstruction = vae.decode(latents).sample
        mse = F.mse_loss(reconstruction, batch)
        loss = mse + settings.vae_kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        if step % settings.log_every == 0 or step == settings.vae_steps - 1:
            log({"stage": "vae", "step": step, "mse": round(mse.item(), 6), "loss": round(loss.item(), 6)})
    vae.eval()
    return vae


@torch.no_grad()
def reconstruction_rmse(vae: nn.Module, images: Tensor, chunk: int = 256) -> float:
    """RMSE in [0, 1] of `images` [N, 3, H, W] decoded from their posterior means: what the
    denoiser's samples can be at best, so a blurry VAE shows here before the denoiser trains."""
    squared = 0.0
    for part in images.split(chunk):
        decoded = vae.decode(vae.encode(part * 2.0 - 1.0).latent_dist.mean).sample
        squared += float(((decoded.clamp(-1.0, 1.0) + 1.0) / 2.0 - part).pow(2).sum())
    return (squared / images.numel()) ** 0.5


@torch.no_grad()
def encode_posteriors(vae: nn.Module, images: Tensor, chunk: int = 256) -> tuple[Tensor, Tensor]:
    """Posterior means and stds of `images` [N, 3, H, W] in [0, 1], unscaled."""
    means, stds = [], []
    for part in images.split(chunk):
        posterior = vae.encode(part * 2.0 - 1.0).latent_dist
        means.append(posterior.mean)
        stds.append(posterior.std)
    return torch.cat(means), torch.cat(stds)


def build_latent_bank(vae: nn.Module, data: PriorData, settings: TrainingSettings) -> LatentBank:
    """Encode real and degraded images once, and set the VAE's `scaling_factor` from the real ones."""
    generator = torch.Generator().manual_seed(settings.seed + 1)
    real_mean, real_std = encode_posteriors(vae, data.images)
    degraded_mean, degraded_std = encode_posteriors(vae, degraded_images(data, settings.degraded_copies, generator))
    scale = 1.0 / float(real_mean.std())
    vae.register_to_config(scaling_factor=scale)
    return LatentBank(real_mean * scale, real_std * scale, degraded_mean * scale, degraded_std * scale)


class CaptionEncoder:
    """Tokenizes captions (cached per distinct caption) and runs the text encoder once per distinct caption."""

    def __init__(self, tokenizer, text_encoder: nn.Module):
        self.tokenizer = tokenizer
        self.max_length = tokenizer.model_max_length
        self.text_encoder = text_encoder
        self.ids: dict[str, Tensor] = {}

    def token_ids(self, caption: str) -> Tensor:
        if caption not in self.ids:
            self.ids[caption] = self.tokenizer(
                caption, padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt"
            ).input_ids[0]
        return self.ids[caption]

    def __call__(self, captions: list[str]) -> Tensor:
        """Hidden states [len(captions), max_length, width]."""
        distinct = sorted(set(captions))
        states = self.text_encoder(torch.stack([self.token_ids(c) for c in distinct])).last_hidden_state
        index = torch.tensor([distinct.index(c) for c in captions])
        return states[index]


def training_batch(
    bank: LatentBank, data: PriorData, settings: TrainingSettings, generator: torch.Generator
) -> tuple[Tensor, list[str]]:
    """Latents [B, C, h, w] sampled from posteriors, and one caption per row."""
    batch = settings.denoiser_batch
    degraded = round(settings.degraded_fraction * batch)
    real_rows = torch.randint(len(bank.real_mean), (batch - degraded,), generator=generator)
    degraded_rows = torch.randint(len(bank.degraded_mean), (degraded,), generator=generator)
    mean = torch.cat([bank.real_mean[real_rows], bank.degraded_mean[degraded_rows]])
    std = torch.cat([bank.real_std[real_rows], bank.degraded_std[degraded_rows]])
    latents = mean + std * torch.randn(mean.shape, generator=generator)
    captions = [data.caption(int(row), generator) for row in real_rows]
    captions += [data.negative_caption(generator) for _ in range(degraded)]
    return latents, captions


def train_denoiser(
    bank: LatentBank, data: PriorData, tokenizer, settings: TrainingSettings, log: Log = print
) -> tuple[nn.Module, nn.Module]:
    """Train text encoder and UNet on eps-MSE with t ~ U{0..999}; returns their EMA copies."""
    generator = torch.Generator().manual_seed(settings.seed + 2)
    torch.manual_seed(settings.seed + 2)
    architecture = settings.architecture
    unet, text_encoder = build_unet(architecture), build_text_encoder(architecture, tokenizer)
    ema_unet, ema_text_encoder = build_unet(architecture), build_text_encoder(architecture, tokenizer)
    ema_unet.load_state_dict(unet.state_dict())
    ema_text_encoder.load_state_dict(text_encoder.state_dict())
    alphas_cumprod = build_scheduler().alphas_cumprod
    encode = CaptionEncoder(tokenizer, text_encoder)
    parameters = [*unet.parameters(), *text_encoder.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=settings.denoiser_lr, weight_decay=0.01)
    for step in range(settings.denoiser_steps):
        for group in optimizer.param_groups:
            group["lr"] = settings.denoiser_lr * lr_factor(step, settings.denoiser_steps, settings.warmup_steps)
        latents, captions = training_batch(bank, data, settings, generator)
        t = torch.randint(len(alphas_cumprod), (len(latents),), generator=generator)
        noise = torch.randn(latents.shape, generator=generator)
        ab = alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = ab.sqrt() * latents + (1.0 - ab).sqrt() * noise
        loss = F.mse_loss(unet(x_t, t, encoder_hidden_states=encode(captions)).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        ema_update(ema_unet, unet, settings.ema_decay)
        ema_update(ema_text_encoder, text_encoder, settings.ema_decay)
        if step % settings.log_every == 0 or step == settings.denoiser_steps - 1:
            log({"stage": "denoiser", "step": step, "loss": round(loss.item(), 6)})
    return ema_unet.eval(), ema_text_encoder.eval()


def save_prior(directory: str | Path, vae: nn.Module, unet: nn.Module, text_encoder: nn.Module, tokenizer) -> Path:
    """Write a standard diffusers Stable Diffusion directory (model_index.json, unet/, vae/, ...).

    Weights are stored in float16, as SD checkpoints usually are (half the size; loaders cast
    them to the precision they run in).
    """
    from diffusers import StableDiffusionPipeline

    directory = Path(directory)
    pipeline = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=build_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipeline.to(torch.float16).save_pretrained(directory, safe_serialization=True)
    save_tokenizer(tokenizer, directory / "tokenizer")
    return directory


VAE_STAGE = "vae_stage.pt"  # the trained VAE, kept in the prior's directory until the prior is saved


def vae_stage(directory: Path, data: PriorData, settings: TrainingSettings, record: Log) -> tuple[nn.Module, dict]:
    """The trained VAE and its seconds: loaded from `directory / VAE_STAGE` when an earlier run with the same
    settings left it there, else trained and saved there first (atomically), so a run stopped after this
    stage resumes with the denoiser and gives the same prior."""
    stage_file = directory / VAE_STAGE
    if stage_file.is_file():
        stage = torch.load(stage_file, weights_only=True)
        if stage["settings"] == json.loads(json.dumps(asdict(settings))):
            vae = build_vae(settings.architecture)
            vae.load_state_dict(stage["state"])
            for entry in stage["log"]:
                record(entry)
            record({"stage": "vae", "resumed_from": VAE_STAGE})
            return vae.eval(), stage["seconds"]
    started_wall, started_cpu = time.perf_counter(), time.process_time()
    stage_log: list[dict] = []

    def record_stage(entry: dict) -> None:
        stage_log.append(entry)
        record(entry)

    generator = torch.Generator().manual_seed(settings.seed + 3)
    vae_images = torch.cat([data.images, degraded_images(data, 1, generator)])
    vae = train_vae(vae_images, settings, record_stage)
    seconds = {"wall": round(time.perf_counter() - started_wall, 1), "cpu": round(time.process_time() - started_cpu, 1)}
    directory.mkdir(parents=True, exist_ok=True)
    partial = stage_file.with_suffix(".partial")
    torch.save({"settings": json.loads(json.dumps(asdict(settings))), "state": vae.state_dict(), "log": stage_log,
                "seconds": seconds}, partial)
    partial.replace(stage_file)
    return vae, seconds


def saved_vae(directory: Path, architecture: MiniatureSD) -> nn.Module:
    """The VAE of the prior saved in `directory`, in fp32; refused unless it has `architecture`'s layers."""
    from diffusers import AutoencoderKL

    if not (directory / "vae").is_dir():
        raise ValueError(f"no prior's VAE in {directory}: give the directory of a trained prior")
    vae = build_vae(architecture)
    try:
        vae.load_state_dict(AutoencoderKL.from_pretrained(directory / "vae", torch_dtype=torch.float32).state_dict())
    except RuntimeError as error:
        raise ValueError(f"the VAE in {directory} has other layers than this prior's architecture: {error}") from None
    return vae.eval()


def train_prior(directory: str | Path, data: PriorData, settings: TrainingSettings, log: Log = print,
                vae_only: bool = False, vae_from: Path | None = None) -> dict | None:
    """Train both stages on `data` and save the prior; returns the training record (also written
    to `training_log.json`). With `vae_only`, stop after the VAE stage (saved for the next run to resume from)
    and return None: the two stages can run as two shorter jobs. With `vae_from`, the VAE stage is the VAE of
    the prior saved there (a prior of the same images that differs in captions or denoiser only)."""
    directory = Path(directory)
    records: list[dict] = []

    def record(entry: dict) -> None:
        records.append(entry)
        log(entry)

    if vae_from is None:
        vae, vae_seconds = vae_stage(directory, data, settings, record)
    else:
        vae, vae_seconds = saved_vae(Path(vae_from), settings.architecture), {"wall": 0.0, "cpu": 0.0}
        record({"stage": "vae", "from": str(vae_from)})
    if vae_only:
        return None
    started_wall, started_cpu = time.perf_counter(), time.process_time()
    vae_rmse = reconstruction_rmse(vae, data.images[:1024])
    record({"stage": "vae", "reconstruction_rmse": round(vae_rmse, 5)})
    bank = build_latent_bank(vae, data, settings)
    tokenizer = build_tokenizer(data.words, settings.architecture.max_length)
    unet, text_encoder = train_denoiser(bank, data, tokenizer, settings, record)
    save_prior(directory, vae, unet, text_encoder, tokenizer)
    summary = {
        "settings": asdict(settings),
        "torch_threads": torch.get_num_threads(),
        "vae_seconds": vae_seconds,
        "total_seconds": {"wall": round(vae_seconds["wall"] + time.perf_counter() - started_wall, 1),
                          "cpu": round(vae_seconds["cpu"] + time.process_time() - started_cpu, 1)},
        "scaling_factor": vae.config.scaling_factor,
        "log": records,
    }
    (directory / "training_log.json").write_text(json.dumps(summary, indent=1))
    (directory / VAE_STAGE).unlink(missing_ok=True)
    return summary
