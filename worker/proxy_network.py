"""Dataset-only model layer: train a small proxy network on the uploaded dataset, seeded and time-budgeted.

"Before training on third-party data" there is no model to inspect, so we train one the way an attacker expects the
victim to be trained: a backdoor that a small CNN (images) or MLP (tabular) learns from the data is one the data holds.
"""

import time
from collections.abc import Callable

import numpy as np

from worker.keras_model import as_model_input

DEFAULT_BUDGET_S = 300.0
DEFAULT_EPOCHS = 8


def proxy_network(input_shape: tuple, n_classes: int, kind: str, x_sample: np.ndarray):
    import keras

    if kind == "images":
        shape = input_shape if len(input_shape) == 3 else (*input_shape, 1)
        small = min(shape[0], shape[1]) < 16  # 8x8 digits: one pooling step only
        layers = [keras.Input(shape), keras.layers.Conv2D(16, 3, activation="relu", padding="same"), keras.layers.MaxPooling2D()]
        if not small:
            layers += [keras.layers.Conv2D(32, 3, activation="relu", padding="same"), keras.layers.MaxPooling2D()]
        layers += [keras.layers.Flatten(), keras.layers.Dense(64, activation="relu", name="proxy_features"),
                   keras.layers.Dense(n_classes, activation="softmax", name="proxy_output")]
        return keras.Sequential(layers, name="poisonscan_proxy_cnn")
    norm = keras.layers.Normalization(name="standardize")
    norm.adapt(x_sample)  # part of the model, so the analysis feeds it raw features like the training did
    return keras.Sequential([keras.Input(input_shape), norm, keras.layers.Dense(128, activation="relu", name="proxy_hidden"),
                             keras.layers.Dense(64, activation="relu", name="proxy_features"),
                             keras.layers.Dense(n_classes, activation="softmax", name="proxy_output")], name="poisonscan_proxy_mlp")


def fit_within_budget(run_epoch: Callable[[], None], epochs: int, budget_s: float,
                      progress: Callable[[float], None] | None = None) -> int:
    """Run up to ``epochs`` epochs, stopping before one that would overrun ``budget_s`` (epochs take about equally
    long); returns how many ran."""
    started = time.perf_counter()
    for done in range(1, epochs + 1):
        run_epoch()
        if progress:
            progress(done / epochs)
        elapsed = time.perf_counter() - started
        if elapsed + elapsed / done > budget_s:
            return done
    return epochs


def train_proxy(x: np.ndarray, y: np.ndarray, kind: str, *, seed: int = 0, epochs: int = DEFAULT_EPOCHS,
                budget_s: float = DEFAULT_BUDGET_S, batch: int = 128,
                progress: Callable[[float], None] | None = None) -> tuple[object, dict]:
    """The trained proxy and what happened (epochs run, stopped by the budget, training accuracy)."""
    import keras

    keras.utils.set_random_seed(seed)
    n_classes = int(y.max()) + 1
    shape = x.shape[1:]
    rng = np.random.default_rng(seed)
    sample = as_model_input(x[rng.choice(len(x), size=min(len(x), 10_000), replace=False)], shape)
    model = proxy_network(tuple(shape), n_classes, kind, sample)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model_shape = tuple(model.inputs[0].shape[1:])
    started, history = time.perf_counter(), []

    def epoch() -> None:
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch * 64):  # feed in slices: never a float copy of the whole set
            idx = np.sort(order[start:start + batch * 64])
            out = model.fit(as_model_input(x[idx], model_shape), y[idx], batch_size=batch, epochs=1, verbose=0, shuffle=True)
        history.append(float(out.history["accuracy"][-1]))

    fit_within_budget(epoch, epochs, budget_s, progress)
    return model, {"architecture": model.name, "epochs_run": len(history), "epochs_planned": epochs,
                   "stopped_by_budget": len(history) < epochs, "train_s": round(time.perf_counter() - started, 1),
                   "last_epoch_accuracy": round(history[-1], 4) if history else None, "seed": seed}
