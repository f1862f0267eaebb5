"""Remediation: retrain without the quarantined training samples, re-test the retrained model, find what remains.

Plain numpy and Keras; the detector (``worker.detectors.assessment``) decides when to run it and reports it.
"""

import time
from collections.abc import Callable

import numpy as np

from worker.keras_model import as_model_input


def trigger_anchored(embed: Callable[[np.ndarray], np.ndarray], x_class: np.ndarray, triggered: np.ndarray,
                     clean: np.ndarray) -> np.ndarray:
    """Which of ``x_class`` (training inputs labelled with a target class) the model represents like ``triggered``
    (held-out inputs of other classes carrying the trigger) rather than like ``clean`` (the class's own held-out
    inputs): a logistic regression on penultimate activations between the two anchors. Finds the poison of a trigger
    the activation clustering cannot call, once probing or reconstruction has named the target and a trigger."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    anchors = np.vstack([embed(triggered), embed(clean)])
    is_triggered = np.r_[np.ones(len(triggered)), np.zeros(len(clean))]
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, class_weight="balanced"))
    clf.fit(anchors, is_triggered)
    return clf.predict_proba(embed(x_class))[:, 1] >= 0.5


def retrain_clone(model, compile_config: dict | None, x: np.ndarray, y: np.ndarray, *, epochs: int, batch: int, seed: int,
                  budget_s: float, progress: Callable[[float], None] | None = None) -> tuple[object, dict]:
    """A fresh copy of the uploaded architecture (new weights), compiled as the upload was (optimizer, loss, metrics;
    Adam and cross-entropy when the file has no compile settings), trained on the kept rows."""
    import keras

    from worker.proxy_network import fit_within_budget

    keras.utils.set_random_seed(seed)
    clone = keras.models.clone_model(model)
    used = "uploaded"
    try:
        if not compile_config:
            raise ValueError("no compile settings saved")
        clone.compile_from_config(compile_config)
    except Exception:  # noqa: BLE001  (custom or missing losses: fall back to the usual classifier settings)
        clone.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        used = "default (adam, sparse categorical cross-entropy)"
    inputs = as_model_input(x, tuple(model.inputs[0].shape[1:]))  # once, not every epoch
    targets = targets_for(clone, y, int(model.outputs[0].shape[-1]))
    started = time.perf_counter()
    ran = fit_within_budget(lambda: clone.fit(inputs, targets, batch_size=batch, epochs=1, verbose=0, shuffle=True),
                            epochs, budget_s, progress)
    return clone, {"architecture": "clone of the uploaded model", "compile": used, "epochs_run": ran,
                   "epochs_planned": epochs, "batch": batch, "train_s": round(time.perf_counter() - started, 1),
                   "seed": seed}


def targets_for(model, y: np.ndarray, n_out: int) -> np.ndarray:
    """One-hot labels when the saved loss wants them (categorical), integer labels otherwise."""
    loss = getattr(model, "loss", None)
    name = loss if isinstance(loss, str) else getattr(loss, "name", type(loss).__name__ if loss else "")
    if "categorical" in str(name).lower() and "sparse" not in str(name).lower():
        return np.eye(n_out, dtype=np.float32)[y]
    return y


def accuracy(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    return float((predict(x).argmax(1) == y).mean()) if len(y) else float("nan")


def attack_success(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray, stamp, target: int,
                   sources: list[int] | None = None) -> float:
    """Share of inputs of other classes (of the ``sources`` only, for a source-specific trigger), correctly classified
    without the trigger, sent to ``target`` with it. Inputs the model gets wrong anyway say nothing about the trigger."""
    others = (y != target) if not sources else np.isin(y, sources)
    correct = predict(x[others]).argmax(1) == y[others]
    if not correct.any():
        return float("nan")
    return float((predict(stamp(x[others][correct])).argmax(1) == target).mean())
