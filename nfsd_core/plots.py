"""A picture of a run: its per-step curves as one RGB image, drawn with PIL alone.

`run_curves` draws four panels from a run's history columns (`optimize.history_columns`): the
distillation loss, the gradient's norm, the representation's own measure (a canvas's latent RMS,
a NeRF's mean opacity, a mesh texture's colour spread over the surface) and the timesteps drawn,
each against the step, with labelled axes. Noisy curves show each step faintly and a moving
average on top; a positive curve spanning more than two decades gets a logarithmic axis. No plotting library is needed (ComfyUI users have PIL and
numpy, not matplotlib).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 1024, 720  # pixels of the whole picture
HEADER = 36  # pixels above the panels, for the picture's title
MARGINS = (78, 34, 22, 50)  # left, top, right, bottom of each panel, around its plot area
INSET = 6  # pixels between a plot area's sides and its first and last steps
FONT_SIZE, TITLE_SIZE = 14, 18
BACKGROUND, INK, GRID = (255, 255, 255), (40, 40, 40), (225, 225, 225)
RAW, SMOOTH, DOTS = (174, 199, 232), (31, 119, 180), (230, 120, 30)
SMOOTHING = 25  # a curve's moving average spans 1/SMOOTHING of the run (at least one step)
LOG_SPAN = 100.0  # a positive curve whose largest value exceeds its smallest this many times gets a log axis
MAX_T = 1000  # timesteps are DDPM steps 0..999
# The representation's own measure, by the name its stats give it (the first one a run has is drawn).
MEASURES = {"latent_rms": "latent RMS", "opacity": "mean opacity", "surface_std": "surface colour std"}


@dataclass(frozen=True)
class Axis:
    """A value axis from `low` to `high`, linear or logarithmic (base 10)."""

    low: float
    high: float
    log: bool = False

    def fraction(self, value: np.ndarray) -> np.ndarray:
        """Where `value` lies on the axis, 0 at `low` and 1 at `high`."""
        if self.log:
            return (np.log10(value) - math.log10(self.low)) / (math.log10(self.high) - math.log10(self.low))
        return (value - self.low) / (self.high - self.low)

    def ticks(self) -> list[float]:
        if self.log:
            first, last = math.floor(math.log10(self.low)), math.ceil(math.log10(self.high))
            return [10.0**power for power in range(first, last + 1) if self.low <= 10.0**power <= self.high]
        return nice_ticks(self.low, self.high)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round values (1, 2, 2.5 or 5 times a power of ten apart) from `low` to `high`."""
    raw = (high - low) / max(count - 1, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(factor * power for factor in (1, 2, 2.5, 5, 10) if factor * power >= raw)
    first = math.ceil(low / step - 1e-9)
    ticks = [index * step for index in range(first, int(math.floor(high / step + 1e-9)) + 1)]
    return [0.0 if abs(tick) < step * 1e-9 else tick for tick in ticks]


def value_axis(values: np.ndarray) -> Axis:
    """An axis holding the finite `values` (at least one), padded a little; logarithmic for a positive
    curve spanning more than LOG_SPAN."""
    low, high = float(values.min()), float(values.max())
    if low > 0 and high / low > LOG_SPAN:
        return Axis(10.0 ** math.floor(math.log10(low)), 10.0 ** math.ceil(math.log10(high)), log=True)
    pad = 0.05 * (high - low) or 0.5 * abs(high) or 1.0
    return Axis(low - pad, high + pad)


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """The mean of the finite values among the `window` steps around each step (NaN where there are none)."""
    finite = np.isfinite(values)
    kernel = np.ones(window)
    sums = np.convolve(np.where(finite, values, 0.0), kernel, mode="same")
    counts = np.convolve(finite.astype(float), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def column(columns: dict, name: str) -> np.ndarray:
    """A history column as floats, NaN where a step has no finite value."""
    return np.array([np.nan if value is None else float(value) for value in columns[name]], dtype=float)


def font(size: int) -> ImageFont.ImageFont:
    """PIL's own font at `size` pixels (Pillow 10.1 and later; older Pillows have one size only)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def label(value: float) -> str:
    """`value` in at most four significant digits, powers of ten as 1e4."""
    return f"{value:.4g}".replace("e+0", "e").replace("e-0", "e-").replace("e+", "e")


class Panel:
    """One plot in the picture: its box, axes and labels, and the drawing of series into it."""

    def __init__(self, image: Image.Image, box: tuple[int, int, int, int], title: str, y_label: str, steps: int,
                 axis: Axis):
        left, top, right, bottom = box
        self.image, self.draw, self.steps, self.axis = image, ImageDraw.Draw(image), steps, axis
        draw = self.draw
        self.area = (left + MARGINS[0], top + MARGINS[1], right - MARGINS[2], bottom - MARGINS[3])
        small = font(FONT_SIZE)
        x0, y0, x1, y1 = self.area
        draw.text((x0, top + 8), title, fill=INK, font=font(FONT_SIZE + 2))
        for tick in axis.ticks():
            y = float(self.y(np.array([tick]))[0])
            draw.line([(x0, y), (x1, y)], fill=GRID)
            draw.text((x0 - 6, y), label(tick), fill=INK, font=small, anchor="rm")
        for tick in nice_ticks(1, max(steps, 2)):
            if 1 <= tick <= steps and tick == int(tick):
                x = float(self.x(np.array([tick]))[0])
                draw.line([(x, y1), (x, y1 + 4)], fill=INK)
                draw.text((x, y1 + 6), str(int(tick)), fill=INK, font=small, anchor="mt")
        draw.rectangle(self.area, outline=INK)
        draw.text(((x0 + x1) / 2, y1 + 26), "step", fill=INK, font=small, anchor="mt")
        self.vertical_text(y_label, left + 4, (y0 + y1) / 2)

    def vertical_text(self, text: str, left: float, middle: float) -> None:
        """`text` written bottom to top, its left edge at `left`, centred on the height `middle`."""
        small = font(FONT_SIZE)
        width, height = int(self.draw.textlength(text, font=small)) + 4, FONT_SIZE + 6
        strip = Image.new("RGB", (width, height), BACKGROUND)
        ImageDraw.Draw(strip).text((2, 1), text, fill=INK, font=small)
        self.image.paste(strip.rotate(90, expand=True), (int(left), int(middle - width / 2)))

    def x(self, steps: np.ndarray) -> np.ndarray:
        x0, _, x1, _ = self.area
        x0, x1 = x0 + INSET, x1 - INSET
        if self.steps == 1:
            return np.full_like(steps, (x0 + x1) / 2)
        return x0 + (steps - 1) / (self.steps - 1) * (x1 - x0)

    def y(self, values: np.ndarray) -> np.ndarray:
        _, y0, _, y1 = self.area
        return y1 - np.clip(self.axis.fraction(values), 0.0, 1.0) * (y1 - y0)

    def line(self, values: np.ndarray, colour: tuple[int, int, int], width: int) -> None:
        """A curve through the finite values (one per step from 1), broken where a step has none."""
        steps = np.arange(1, len(values) + 1, dtype=float)
        finite = np.isfinite(values) & ((values > 0) if self.axis.log else True)
        xs, ys = self.x(steps), self.y(np.where(finite, values, self.axis.high))
        run: list[tuple[float, float]] = []
        for keep, x, y in zip(finite, xs, ys):
            if keep:
                run.append((float(x), float(y)))
            else:
                self.stroke(run, colour, width)
                run = []
        self.stroke(run, colour, width)

    def stroke(self, points: list[tuple[float, float]], colour: tuple[int, int, int], width: int) -> None:
        if len(points) == 1:
            (x, y), radius = points[0], width + 1
            self.draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour)
        elif points:
            self.draw.line(points, fill=colour, width=width, joint="curve")

    def dots(self, steps: np.ndarray, values: np.ndarray, colour: tuple[int, int, int]) -> None:
        for x, y in zip(self.x(steps), self.y(values)):
            self.draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=colour)


def run_curves(columns: dict, title: str = "") -> np.ndarray:
    """The picture [HEIGHT, WIDTH, 3] (uint8 RGB) of a run's history `columns`: loss, gradient norm, the
    representation's measure (or the regularisation) and the timesteps, each against the step."""
    steps = len(columns["step"])
    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    ImageDraw.Draw(image).text((WIDTH / 2, HEADER / 2 + 2), title or f"{steps} step{'s' * (steps != 1)}", fill=INK,
                               font=font(TITLE_SIZE), anchor="mm")
    measure = next((name for name in MEASURES if name in columns), "regularization")
    curves = [("loss", "loss"), ("grad_norm", "gradient norm"),
              (measure, MEASURES.get(measure, "regularisation"))]
    half_width, half_height = WIDTH // 2, (HEIGHT - HEADER) // 2
    boxes = [(col * half_width, HEADER + row * half_height, (col + 1) * half_width, HEADER + (row + 1) * half_height)
             for row in range(2) for col in range(2)]
    window = max(1, steps // SMOOTHING)
    for (name, name_label), box in zip(curves, boxes):
        values = column(columns, name) if steps else np.array([])
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            Panel(image, box, f"{name_label}: no finite value", name_label, steps, Axis(0.0, 1.0))
            continue
        axis = value_axis(finite)
        panel = Panel(image, box, f"{name_label} (last {label(finite[-1])})", name_label, steps, axis)
        if window > 1:
            panel.line(values, RAW, 1)
            panel.line(moving_average(values, window), SMOOTH, 2)
        else:
            panel.line(values, SMOOTH, 2)
    timesteps = Panel(image, boxes[3], "timesteps drawn", "t (0 to 999)", steps, Axis(0.0, float(MAX_T)))
    for step, drawn in enumerate(columns.get("t", []), start=1):
        drawn = np.atleast_1d(np.asarray(drawn, dtype=float))
        timesteps.dots(np.full(drawn.shape, float(step)), drawn, DOTS)
    return np.array(image)

