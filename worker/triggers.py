"""Trigger probing: stamp candidate triggers on held-out clean inputs and watch which class the predictions move to.

Plain numpy around a ``predict`` callable. A trigger is a ``mask`` (1 where the trigger replaces the input, fractions
blend) and a ``pattern`` in the model's own input space (shape and value range as the model is fed), stamped as
``(1 - mask) * x + mask * pattern``: the same form Neural Cleanse reconstructs, so a reconstructed trigger can be
uploaded again as a user trigger.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from worker.findings import InputRejected

# A class "moves" under a trigger when this share of held-out inputs from other classes switches to it...
SUSPECT_ASR = 0.5
# ...and its prediction rate rises this much above the clean rate: a trigger that flips half the inputs of other
# classes to one class is a learned shortcut, not the small drift any occlusion causes.
SUSPECT_RISE = 0.4
# A source-specific trigger (Tang et al.'s "source-specific" backdoors) switches the inputs of one class only, so its
# ASR over all other classes stays low. It counts when it switches nearly every correctly classified held-out input of
# one source class (at least SOURCE_MIN_INPUTS of them): an occlusion that sends 90% of a class elsewhere is a shortcut.
SOURCE_ASR = 0.9
SOURCE_MIN_INPUTS = 20


@dataclass
class Trigger:
    name: str
    family: str  # "patch" | "checkerboard" | "blend" | "user" | "reconstructed"
    mask: np.ndarray  # broadcastable to one input: (H, W, 1), (H, W, C) or (F,)
    pattern: np.ndarray  # one input's shape, in the model's value range
    meta: dict = field(default_factory=dict)

    def stamp(self, x: np.ndarray, lo: float, hi: float) -> np.ndarray:
        return np.clip((1.0 - self.mask) * x + self.mask * self.pattern, lo, hi).astype(np.float32)


@dataclass(frozen=True)
class InputSpec:
    """What the model is fed: one input's shape and the value range of real inputs."""

    shape: tuple[int, ...]
    lo: float
    hi: float

    @property
    def is_image(self) -> bool:
        return len(self.shape) in (2, 3) and min(self.shape[:2]) >= 4

    @classmethod
    def from_inputs(cls, shape: tuple, x: np.ndarray) -> "InputSpec":
        return cls(tuple(int(d) for d in shape), float(np.min(x)), float(np.max(x)))


def candidate_library(spec: InputSpec, *, seed: int = 0) -> list[Trigger]:
    """Patches (solid and checkerboard, three sizes) at each corner and the centre, and blended noise. Sizes scale with
    the image (2, 3 and 4 pixels on 28x28; 1 and 2 on 8x8). Non-image inputs get no library: probe a user trigger."""
    if not spec.is_image:
        return []
    h, w = spec.shape[:2]
    channels = spec.shape[2] if len(spec.shape) == 3 else None
    side = min(h, w)
    sizes = sorted({max(1, round(side / 14)), max(2, round(side * 3 / 28)), max(2, round(side / 7))})
    triggers = []
    for size in sizes:
        margin = 1 if side > 8 else 0
        corners = {"top-left": (margin, margin), "top-right": (margin, w - size - margin),
                   "bottom-left": (h - size - margin, margin), "bottom-right": (h - size - margin, w - size - margin),
                   "centre": ((h - size) // 2, (w - size) // 2)}
        for where, (top, left) in corners.items():
            for family in ("patch", "checkerboard"):
                if family == "checkerboard" and size == 1:
                    continue
                mask, pattern = _patch(spec, channels, top, left, size, checker=family == "checkerboard")
                triggers.append(Trigger(f"{family} {size}x{size} {where}", family, mask, pattern,
                                        {"size": size, "position": where, "top": top, "left": left}))
    rng = np.random.default_rng(seed)
    noise = spec.lo + (spec.hi - spec.lo) * rng.random(spec.shape, dtype=np.float32)
    for alpha in (0.1, 0.2):
        mask = np.full(spec.shape[:2] + ((1,) if channels else ()), alpha, np.float32)
        triggers.append(Trigger(f"blended noise {alpha:.0%}", "blend", mask, noise, {"alpha": alpha, "seed": seed}))
    return triggers


def _patch(spec: InputSpec, channels: int | None, top: int, left: int, size: int, *, checker: bool):
    h, w = spec.shape[:2]
    mask = np.zeros((h, w, 1) if channels else (h, w), np.float32)
    pattern = np.full(spec.shape, spec.lo, np.float32)
    tile = np.full((size, size), spec.hi, np.float32)
    if checker:
        tile[np.add.outer(np.arange(size), np.arange(size)) % 2 == 1] = spec.lo
    mask[top:top + size, left:left + size] = 1.0
    pattern[top:top + size, left:left + size] = tile[..., None] if channels else tile
    return mask, pattern


def load_user_trigger(path: Path, spec: InputSpec) -> Trigger:
    """A trigger uploaded as .npz with ``pattern`` (one input, in the model's value range; uint8 images are scaled like
    the dataset) and ``mask`` (values in [0, 1], the input's shape or one channel of it). Never unpickled."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if "pattern" not in z or "mask" not in z:
                raise InputRejected(f"the trigger .npz must hold arrays 'pattern' and 'mask'; it holds {sorted(z.files)}")
            pattern, mask = z["pattern"], z["mask"]
    except ValueError as exc:  # object arrays need pickle: refused
        raise InputRejected(f"the trigger could not be read without unpickling: {exc}") from exc
    if pattern.dtype == np.uint8:
        pattern = pattern.astype(np.float32) / 255.0
    pattern = _fit(pattern.astype(np.float32), spec.shape, "pattern")
    mask = mask.astype(np.float32)
    if len(spec.shape) == 3 and mask.size == spec.shape[0] * spec.shape[1]:  # one value per pixel, for every channel
        mask = mask.reshape(spec.shape[:2] + (1,))
    else:
        mask = _fit(mask, spec.shape, "mask")
    if mask.min() < 0 or mask.max() > 1:
        raise InputRejected(f"the trigger mask must lie in [0, 1]; it spans [{mask.min():g}, {mask.max():g}]")
    return Trigger("user trigger", "user", mask, np.clip(pattern, spec.lo, spec.hi), {"mask_l1": float(mask.sum())})


def _fit(a: np.ndarray, shape: tuple, what: str) -> np.ndarray:
    if a.shape == shape:
        return a
    if a.size == int(np.prod(shape)):
        return a.reshape(shape)
    raise InputRejected(f"the trigger's {what} has shape {a.shape}, but the model takes inputs of shape {shape}")


@dataclass
class ProbeResult:
    trigger: Trigger
    rate_with: np.ndarray  # per class: share of all probe inputs predicted as the class, trigger stamped
    asr: np.ndarray  # per class: share of correctly classified inputs of other classes switched to the class
    # (source, target): share of the source class's correctly classified inputs switched to the target; nan where the
    # source has fewer than SOURCE_MIN_INPUTS of them
    by_source: np.ndarray | None = None

    def sources(self, c: int) -> list[int]:
        """Source classes this trigger switches (nearly) wholly to class ``c``."""
        if self.by_source is None:
            return []
        column = np.nan_to_num(self.by_source[:, c], nan=0.0)
        return [int(s) for s in np.flatnonzero(column >= SOURCE_ASR) if s != c]

    def strength(self, c: int) -> float:
        """How strongly this trigger sends inputs to ``c``: its ASR over all other classes, or over its sources."""
        return max([float(self.asr[c])] + [float(self.by_source[s, c]) for s in self.sources(c)])

    def top(self) -> int:
        return int(np.argmax(self.asr))


def probe(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray, triggers: list[Trigger],
          spec: InputSpec, n_classes: int, *, progress: Callable[[float], None] | None = None) -> tuple[np.ndarray, list[ProbeResult]]:
    """``x``: held-out clean inputs as the model takes them, ``y`` their labels. Returns the clean prediction rate per
    class and, per trigger, the rates with the trigger stamped and the attack success rate per class."""
    clean_pred = predict(x)
    rate_without = np.bincount(clean_pred, minlength=n_classes)[:n_classes] / len(x)
    correct = clean_pred == y
    results = []
    for i, trig in enumerate(triggers):
        pred = predict(trig.stamp(x, spec.lo, spec.hi))
        rate_with = np.bincount(pred, minlength=n_classes)[:n_classes] / len(x)
        asr = np.zeros(n_classes)
        for c in range(n_classes):
            others = correct & (y != c)
            asr[c] = float((pred[others] == c).mean()) if others.any() else 0.0
        results.append(ProbeResult(trig, rate_with, asr, _by_source(pred, y, correct, n_classes)))
        if progress:
            progress((i + 1) / len(triggers))
    return rate_without, results


def _by_source(pred: np.ndarray, y: np.ndarray, correct: np.ndarray, n_classes: int) -> np.ndarray:
    table = np.full((n_classes, n_classes), np.nan)
    for s in range(n_classes):
        rows = correct & (y == s)
        if rows.sum() >= SOURCE_MIN_INPUTS:
            table[s] = np.bincount(pred[rows], minlength=n_classes)[:n_classes] / rows.sum()
    return table


def suspected(result: ProbeResult, rate_without: np.ndarray) -> list[int]:
    """Classes this trigger moves far above their clean rate, or to which it switches (nearly) all of one source
    class."""
    rise = result.rate_with - rate_without
    every = (result.asr >= SUSPECT_ASR) & (rise >= SUSPECT_RISE)
    return [c for c in range(len(result.asr)) if every[c] or result.sources(c)]
