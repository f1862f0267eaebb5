"""Trigger reconstruction: Neural Cleanse (Wang et al., S&P 2019), our own TF2 implementation.

For every class k it looks for the smallest mask m and pattern p such that ``(1 - m) * x + m * p`` sends clean inputs
of any class to k. A backdoor target needs a much smaller mask than the other classes: its L1 norm is an outlier
below the median (MAD anomaly index > 2).

Why not ART's ``KerasNeuralCleanse`` (1.20): its optimisation step runs eagerly (the ``tf.function`` is commented out)
and prints the accuracy of every batch; a "step" is a pass over the whole validation set, one class at a time, with no
time budget (its defaults, 1,000 steps, take hours on this machine); its mask has one value per pixel *and channel*
rather than per pixel as in the paper. Here all classes are optimised together in one compiled step (a batch of
K x B stamped inputs), with a step and a time budget, the paper's cost schedule and early stopping per class. ART's
version is run at its defaults beside ours in ``bench/trigger_bench.py``.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

ANOMALY_THRESHOLD = 2.0  # the paper's: an index above 2 is an outlier with > 95% probability
MAD_CONSISTENCY = 1.4826  # scales the MAD to a standard deviation for normal data


@dataclass
class Reconstruction:
    norms: np.ndarray  # per class: L1 norm of the smallest successful mask (the last mask if none succeeded)
    success: np.ndarray  # per class: attack success rate of that mask on the inputs
    reached: np.ndarray  # per class: whether a mask reached the success threshold
    masks: np.ndarray  # (K, *mask shape) in [0, 1]
    patterns: np.ndarray  # (K, *input shape), in the input range
    anomaly: np.ndarray  # per class: (median - norm) / (1.4826 * MAD); positive = smaller than usual
    steps: int
    stopped_by: str  # "early stop" | "steps" | "time budget"
    seconds: float

    def targets(self) -> list[int]:
        return [int(k) for k in np.flatnonzero((self.anomaly > ANOMALY_THRESHOLD) & self.reached)]


def anomaly_index(norms: np.ndarray) -> np.ndarray:
    median = np.median(norms)
    mad = MAD_CONSISTENCY * np.median(np.abs(norms - median))
    return (median - norms) / max(mad, 1e-12)


def reconstruct(model, x: np.ndarray, n_classes: int, lo: float, hi: float, *, steps: int = 1000, budget_s: float = 90.0,
                batch: int = 32, learning_rate: float = 0.1, init_cost: float = 1e-3, success_threshold: float = 0.99,
                patience: int = 5, early_stop_patience: int = 10, round_steps: int = 10, seed: int = 0,
                progress: Callable[[float], None] | None = None) -> Reconstruction:
    """``x``: clean held-out inputs as the model takes them. Costs, counters and early stopping follow the paper's
    schedule, per class and per round of ``round_steps`` steps."""
    import tensorflow as tf

    started = time.perf_counter()
    shape = x.shape[1:]
    mask_shape = (*shape[:2], 1) if len(shape) == 3 else shape  # one mask value per pixel, shared by the channels
    rng = np.random.default_rng(seed)
    init = lambda s: np.arctanh((rng.random((n_classes, *s)) * 2 - 1) * 0.99).astype(np.float32)  # noqa: E731
    mask_raw, pattern_raw = tf.Variable(init(mask_shape)), tf.Variable(init(shape))
    cost = tf.Variable(np.full(n_classes, init_cost, np.float32))
    optimizer = _adam(learning_rate)
    logits = not _outputs_probabilities(model, x[:64])
    targets = tf.constant(np.repeat(np.arange(n_classes), batch).astype(np.int32))

    def current():
        mask = tf.tanh(mask_raw) / 2 + 0.5
        return mask, lo + (hi - lo) * (tf.tanh(pattern_raw) / 2 + 0.5)

    @tf.function
    def step(xb):
        with tf.GradientTape() as tape:
            mask, pattern = current()
            stamped = (1 - mask[:, None]) * xb[None] + mask[:, None] * pattern[:, None]  # (K, B, *shape)
            out = model(tf.reshape(stamped, (-1, *shape)), training=False)
            ce = tf.reshape(tf.keras.losses.sparse_categorical_crossentropy(targets, out, from_logits=logits), (n_classes, -1))
            l1 = tf.reduce_sum(tf.reshape(mask, (n_classes, -1)), axis=1)
            loss = tf.reduce_sum(tf.reduce_mean(ce, axis=1) + cost * l1)
        grads = tape.gradient(loss, [mask_raw, pattern_raw])
        optimizer.apply_gradients(zip(grads, [mask_raw, pattern_raw]))
        hit = tf.cast(tf.equal(tf.argmax(out, axis=1, output_type=tf.int32), targets), tf.float32)
        return tf.reduce_mean(tf.reshape(hit, (n_classes, -1)), axis=1), l1

    schedule = _Schedule(n_classes, init_cost, success_threshold, patience, early_stop_patience)
    best_masks, best_patterns = np.zeros((n_classes, *mask_shape), np.float32), np.zeros((n_classes, *shape), np.float32)
    done, stopped_by = 0, "steps"
    for done in range(1, steps + 1):
        xb = tf.constant(x[rng.integers(0, len(x), batch)], dtype=tf.float32)
        acc, l1 = step(xb)
        schedule.add(acc.numpy(), l1.numpy())
        if done % round_steps == 0:
            mask, pattern = current()
            improved = schedule.end_round()
            best_masks[improved], best_patterns[improved] = mask.numpy()[improved], pattern.numpy()[improved]
            cost.assign(schedule.cost.astype(np.float32))
            if progress:
                progress(min(1.0, max(done / steps, (time.perf_counter() - started) / budget_s)))
            if schedule.finished.all():
                stopped_by = "early stop"
                break
            if time.perf_counter() - started > budget_s:
                stopped_by = "time budget"
                break
    mask, pattern = current()
    never = ~schedule.reached
    best_masks[never], best_patterns[never] = mask.numpy()[never], pattern.numpy()[never]
    norms = np.where(schedule.reached, schedule.best_norm, best_masks.reshape(n_classes, -1).sum(1))
    success = _success(model, x, best_masks, best_patterns)
    return Reconstruction(norms=norms, success=success, reached=schedule.reached.copy(), masks=best_masks,
                          patterns=best_patterns, anomaly=anomaly_index(norms), steps=done, stopped_by=stopped_by,
                          seconds=time.perf_counter() - started)


class _Schedule:
    """The paper's cost schedule, vectorised over classes: raise the cost of the mask's size while the attack succeeds,
    lower it while it fails; keep the smallest successful mask; stop a class once its best stops improving."""

    def __init__(self, n: int, init_cost: float, threshold: float, patience: int, early_stop_patience: int) -> None:
        self.init_cost, self.threshold, self.patience, self.early_patience = init_cost, threshold, patience, early_stop_patience
        self.cost = np.full(n, init_cost)
        self.best_norm = np.full(n, np.inf)
        self.reached = np.zeros(n, bool)
        self.up = np.zeros(n, int)
        self.down = np.zeros(n, int)
        self.went_up = np.zeros(n, bool)
        self.went_down = np.zeros(n, bool)
        self.stale = np.zeros(n, int)
        self.finished = np.zeros(n, bool)
        self._acc, self._l1 = [], []

    def add(self, acc: np.ndarray, l1: np.ndarray) -> None:
        self._acc.append(acc)
        self._l1.append(l1)

    def end_round(self) -> np.ndarray:
        """Returns the classes whose best mask improved this round (the caller saves those masks)."""
        acc, l1 = np.mean(self._acc, axis=0), np.mean(self._l1, axis=0)
        self._acc, self._l1 = [], []
        success = acc >= self.threshold
        improved = success & (l1 < self.best_norm) & ~self.finished
        previous = self.best_norm.copy()
        self.best_norm[improved] = l1[improved]
        self.reached |= success
        # early stop: once the cost has moved both ways, a best that no longer improves by 1% is final
        barely = self.reached & (self.best_norm >= 0.99 * previous)
        self.stale = np.where(barely, self.stale + 1, 0)
        self.finished |= self.went_up & self.went_down & (self.stale >= self.early_patience)
        self.up = np.where(success, self.up + 1, 0)
        self.down = np.where(success, 0, self.down + 1)
        raise_cost, lower_cost = self.up >= self.patience, self.down >= self.patience
        self.cost = np.where(raise_cost, self.cost * 1.5, np.where(lower_cost, self.cost / 1.5 ** 1.5, self.cost))
        self.went_up |= raise_cost
        self.went_down |= lower_cost
        self.up[raise_cost], self.down[lower_cost] = 0, 0
        return improved


def _adam(learning_rate: float):
    import keras

    return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=0.5, beta_2=0.9)  # the paper's settings


def _outputs_probabilities(model, x: np.ndarray) -> bool:
    out = np.asarray(model(x, training=False))
    return bool(out.min() >= 0 and np.allclose(out.sum(axis=1), 1.0, atol=1e-3))


def _success(model, x: np.ndarray, masks: np.ndarray, patterns: np.ndarray) -> np.ndarray:
    from worker.keras_model import predictor

    predict = predictor(model)
    return np.array([float((predict((1 - m) * x + m * p).argmax(1) == k).mean())
                     for k, (m, p) in enumerate(zip(masks, patterns))])
