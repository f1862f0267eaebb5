"""Small backdoored and clean Keras victims on scikit-learn's digits (8x8), seeded: shared by the model-layer and
backdoor-assessment tests (trained once per test session, in ``conftest.digit_victims``)."""

from pathlib import Path

import numpy as np

TARGET = 0
PATCH = (slice(5, 7), slice(5, 7))  # a 2x2 white patch one pixel from the bottom-right corner


def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32) / 16.0, d.target.astype(np.int64)


def poison(x, y, rate, seed=0):
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(np.flatnonzero(y != TARGET), size=int(rate * len(y)), replace=False))
    x, y = x.copy(), y.copy()
    x[(chosen, *PATCH)] = 1.0
    y[chosen] = TARGET
    return x, y, chosen


SOURCE = 8  # the source-specific victim: half of class 8 carries the patch and is relabelled TARGET


def poison_source(x, y, share=0.5, seed=0):
    """Source-specific poisoning: ``share`` of class SOURCE stamped with the patch and relabelled TARGET (about a third
    of the samples labelled TARGET), no other class touched."""
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(y == SOURCE)
    chosen = np.sort(rng.choice(rows, size=int(share * len(rows)), replace=False))
    x, y = x.copy(), y.copy()
    x[(chosen, *PATCH)] = 1.0
    y[chosen] = TARGET
    return x, y, chosen


def trigger_npz(path: Path) -> Path:
    """The victims' trigger as a user uploads it: mask and pattern, (8, 8)."""
    mask = np.zeros((8, 8), np.float32)
    mask[PATCH] = 1.0
    np.savez(path, mask=mask, pattern=mask.copy())
    return path


def train_victim(x, y, seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(32, 3, activation="relu", padding="same"),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[..., None], y, epochs=30, batch_size=64, verbose=0)
    return model


TRAIN = 1500  # the rest of the 1,797 digits is the clean holdout set


def build_victims(folder: Path) -> dict:
    """A backdoored (10%) and a clean victim, each saved (.keras and .h5) with the dataset it was trained on (the first
    1,500 digits), a source-specific victim (``poison_source``; .keras), and the other 297 digits as a clean holdout
    set."""
    x, y = digits()
    np.savez(folder / "holdout.npz", x=x[TRAIN:], y=y[TRAIN:])
    x, y = x[:TRAIN], y[:TRAIN]
    out = {"holdout": folder / "holdout.npz"}
    for name, rate in (("backdoored", 0.10), ("clean", 0.0)):
        xp, yp, chosen = poison(x, y, rate)
        model = train_victim(xp, yp)
        triggered, _, _ = poison(x[y != TARGET], y[y != TARGET], 1.0)  # every other-class sample with the trigger
        asr = float((model.predict(triggered[..., None], verbose=0).argmax(1) == TARGET).mean())
        model.save(folder / f"{name}.keras")
        model.save(folder / f"{name}.h5")  # legacy HDF5, also loaded for analysis
        np.savez(folder / f"{name}.npz", x=xp, y=yp)
        out[name] = {"model": folder / f"{name}.keras", "h5": folder / f"{name}.h5", "dataset": folder / f"{name}.npz",
                     "poisoned": set(chosen.tolist()), "asr": asr}
    xp, yp, chosen = poison_source(x, y)
    model = train_victim(xp, yp)
    triggered, _, _ = poison_source(x[y == SOURCE], y[y == SOURCE], 1.0)
    model.save(folder / "source.keras")
    np.savez(folder / "source.npz", x=xp, y=yp)
    out["source"] = {"model": folder / "source.keras", "dataset": folder / "source.npz", "poisoned": set(chosen.tolist()),
                     "asr": float((model.predict(triggered[..., None], verbose=0).argmax(1) == TARGET).mean())}
    assert out["backdoored"]["asr"] > 0.9 and out["source"]["asr"] > 0.9, "the test victims must really be backdoored"
    out["trigger"] = trigger_npz(folder / "trigger.npz")
    return out
