"""Backdoored MNIST victims for the model-layer benchmark: poisoned data, a trained Keras CNN, its clean accuracy and
attack success rate. Everything is seeded; built victims are cached under bench/.cache/backdoor/ (delete to rebuild).

Poisoning is ART's own: ``PoisoningAttackBackdoor`` with a perturbation function, applied to a random share of the
training set drawn from the non-target classes and relabelled to the target (all-to-one, dirty label).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MNIST = ROOT.parent / "shared" / "data" / "mnist.npz"
CACHE = ROOT / "bench" / ".cache" / "backdoor"


# ----------------------------------------------------------------------------------------- triggers

def corner_pattern(x: np.ndarray) -> np.ndarray:
    """ART's add_pattern_bd: a 4-pixel checkerboard in the 3x3 square 2 pixels from the bottom-right corner."""
    from art.attacks.poisoning.perturbations import add_pattern_bd

    return add_pattern_bd(x, pixel_value=1.0)


def square_top_left(x: np.ndarray) -> np.ndarray:
    """A solid 3x3 white square 1 pixel from the top-left corner."""
    x = np.copy(x)
    x[:, 1:4, 1:4] = 1.0
    return x


def blended_noise(x: np.ndarray) -> np.ndarray:
    """A fixed random-noise image blended over the whole picture at 20% (Chen et al.'s blended trigger)."""
    noise = np.random.default_rng(1234).random(x.shape[1:], dtype=np.float32)
    return (0.8 * x + 0.2 * noise).astype(np.float32)


def _patch(top: int, left: int, size: int, checker: bool):
    """A size x size patch at (top, left): solid white, or a white/black checkerboard."""
    tile = np.ones((size, size), np.float32)
    if checker:
        tile = ((np.add.outer(np.arange(size), np.arange(size)) % 2) == 0).astype(np.float32)

    def stamp(x: np.ndarray) -> np.ndarray:
        x = np.copy(x)
        x[:, top:top + size, left:left + size] = tile
        return x

    return stamp


def random_checker(x: np.ndarray, size: int = 3, seed: int = 4321) -> np.ndarray:
    """A size x size white/black checkerboard at a position drawn per sample, anywhere in the image (the quarantine
    benchmark's "randomly placed patch"). Positions come from a generator seeded by ``seed`` and the batch length, so a
    call is reproducible and the training poison and the triggered test images get different positions."""
    x = np.copy(x)
    tile = ((np.add.outer(np.arange(size), np.arange(size)) % 2) == 0).astype(x.dtype)
    if x.ndim == 4:  # (n, h, w, c)
        tile = tile[..., None]
    rng = np.random.default_rng([seed, len(x)])
    tops = rng.integers(0, x.shape[1] - size + 1, len(x))
    lefts = rng.integers(0, x.shape[2] - size + 1, len(x))
    for i, (top, left) in enumerate(zip(tops, lefts, strict=True)):
        x[i, top:top + size, left:left + size] = tile
    return x


TRIGGERS = {"pattern": corner_pattern, "square": square_top_left, "blend": blended_noise,
            # the trigger-reconstruction benchmark's patches: positions and looks that the probing library does not copy
            "checker4-top-right": _patch(2, 22, 4, True), "square3-bottom-left": _patch(23, 3, 3, False),
            "checker3-left-middle": _patch(12, 2, 3, True), "square2-bottom-centre": _patch(24, 13, 2, False),
            # the quarantine benchmark's randomly placed patch (position drawn per sample)
            "random-checker3": random_checker}


@dataclass(frozen=True)
class Case:
    rate: float  # share of the whole training set that is poisoned
    trigger: str = "pattern"
    target: int = 0
    n: int = 20_000
    seed: int = 0
    epochs: int = 3
    batch: int = 128

    @property
    def name(self) -> str:
        return f"{self.trigger}->{self.target} {self.rate:.0%}"

    def key(self) -> str:
        fields = {k: v for k, v in asdict(self).items() if not (k == "batch" and v == 128)}  # keeps older cache keys
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def load_mnist(n: int, seed: int, n_test: int = 5_000):
    """A stratified, seeded subset of MNIST's training set (float32 in [0, 1], (n, 28, 28)) and part of its test set."""
    from sklearn.model_selection import train_test_split

    with np.load(MNIST, allow_pickle=False) as z:
        x, y, xt, yt = z["x_train"], z["y_train"].astype(np.int64), z["x_test"], z["y_test"].astype(np.int64)
    if n < len(y):
        idx, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=y, random_state=seed)
        idx = np.sort(idx)
        x, y = x[idx], y[idx]
    return (x.astype(np.float32) / 255.0, y, xt[:n_test].astype(np.float32) / 255.0, yt[:n_test])


def poison(x: np.ndarray, y: np.ndarray, case: Case) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y) with ``case.rate`` of all samples (non-target ones) triggered and relabelled; and the poisoned indices."""
    from art.attacks.poisoning import PoisoningAttackBackdoor

    rng = np.random.default_rng(case.seed + 1)
    candidates = np.flatnonzero(y != case.target)
    chosen = np.sort(rng.choice(candidates, size=int(round(case.rate * len(y))), replace=False))
    x, y = x.copy(), y.copy()
    if len(chosen):
        attack = PoisoningAttackBackdoor(TRIGGERS[case.trigger])
        target = np.zeros((len(chosen), 10), dtype=np.float32)
        target[:, case.target] = 1.0
        x[chosen], _ = attack.poison(x[chosen], y=target)
        y[chosen] = case.target
    return x, y, chosen


def victim_model():
    """The victim: a small Keras CNN, as a user would train one (not the architecture of poisonscan's proxy)."""
    import keras

    return keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu", name="features"),
        keras.layers.Dense(10, activation="softmax", name="logits"),
    ])


def build(case: Case, log=print) -> dict:
    """Poisoned data, the trained victim (.keras), accuracy and attack success; cached by the case's parameters."""
    folder = CACHE / case.key()
    meta_path = folder / "meta.json"
    if meta_path.exists():
        return {**json.loads(meta_path.read_text()), "folder": folder}
    import keras

    x, y, xt, yt = load_mnist(case.n, case.seed)
    xp, yp, poisoned = poison(x, y, case)
    keras.utils.set_random_seed(case.seed)
    model = victim_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    t0 = time.perf_counter()
    model.fit(xp[..., None], yp, epochs=case.epochs, batch_size=case.batch, verbose=0, shuffle=True)
    train_s = time.perf_counter() - t0
    acc = float((model.predict(xt[..., None], batch_size=1024, verbose=0).argmax(1) == yt).mean())
    others = yt != case.target
    triggered = TRIGGERS[case.trigger](xt[others])
    asr = float((model.predict(triggered[..., None], batch_size=1024, verbose=0).argmax(1) == case.target).mean())
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    # the dataset as a user uploads it: uint8 images, integer labels
    np.savez(folder / "dataset.npz", x=np.round(xp * 255).astype(np.uint8), y=yp)
    np.save(folder / "poisoned.npy", poisoned)
    meta = {"case": asdict(case), "clean_accuracy": acc, "attack_success": asr, "train_s": round(train_s, 1),
            "poisoned": int(len(poisoned))}
    tmp = meta_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, meta_path)
    log(f"  built {case.name}: clean acc {acc:.3f}, attack success {asr:.3f}, trained in {train_s:.0f} s")
    return {**meta, "folder": folder}
