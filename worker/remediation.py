"""Remediation: quarantine the flagged training samples, retrain without them, and re-test the retrained model.

Plain numpy and Keras; the detector (``worker.detectors.assessment``) decides when to run it and reports it.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from worker.keras_model import as_model_input
from worker.outputs import npz_bytes

QUARANTINE_MODES = ("intersection", "union")


@dataclass
class Quarantine:
    indices: np.ndarray  # dataset rows removed before retraining
    mode: str
    methods: dict[str, np.ndarray]  # the rows each method flagged
    rule: str  # how the methods were combined, in words

    @property
    def by_method(self) -> dict[str, int]:
        return {name: len(rows) for name, rows in self.methods.items()}


def choose_quarantine(y: np.ndarray, analysis, strip_low: np.ndarray, mode: str, target_classes: list[int],
                      anchored: np.ndarray | None = None) -> Quarantine:
    """``analysis``: the model layer's (activation clustering, and spectral signatures beside it); ``strip_low``: rows
    whose STRIP entropy is under the clean threshold; ``anchored``: rows of target classes the activation analysis did
    not flag whose activations look like triggered inputs (``trigger_anchored``).

    Intersection (default): rows that activation clustering *and* spectral signatures flag; in a target class the
    activation analysis did not flag (e.g. a blended trigger), the trigger-anchored rows (STRIP's where there are none).
    Union: every row any method flags."""
    if mode not in QUARANTINE_MODES:
        raise ValueError(f"quarantine must be one of {QUARANTINE_MODES}, not {mode!r}")
    anchored = np.empty(0, np.int64) if anchored is None else anchored
    clustering = np.asarray(analysis.flagged, dtype=np.int64)
    spectral = np.concatenate([np.flatnonzero(y == c.label)[c.flagged_spectral] for c in analysis.classes if c.suspicious]
                              or [np.empty(0, np.int64)])
    methods = {"activation_clustering": clustering, "spectral_signature": spectral, "strip": strip_low,
               "trigger_anchored": anchored}
    if mode == "union":
        chosen = np.union1d(np.union1d(clustering, spectral), np.union1d(strip_low, anchored))
        return Quarantine(chosen, mode, methods, "flagged by any of activation clustering, spectral signatures, "
                          "STRIP and trigger-anchored activations")
    chosen = np.intersect1d(clustering, spectral)
    covered = analysis.flagged_classes
    uncovered = [c for c in target_classes if c not in covered]
    rule = "flagged by both activation clustering and spectral signatures"
    for c in uncovered:
        own = anchored[y[anchored] == c]
        chosen = np.union1d(chosen, own if len(own) else strip_low[y[strip_low] == c])
        rule += (f"; in class {c}, which the activation analysis did not flag, "
                 f"{'the trigger-anchored samples' if len(own) else 'STRIP’s low-entropy samples'}")
    return Quarantine(chosen, mode, methods, rule)


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


def cleaned_dataset_npz(x: np.ndarray, labels: np.ndarray, keep: np.ndarray) -> bytes:
    """The dataset without the quarantined rows, as .npz (``x``, ``y`` with the original label values, ``index``: the
    kept rows' positions in the upload): ready to upload and scan again, or to train on."""
    return npz_bytes(x=x[keep], y=labels[keep], index=keep.astype(np.int64))


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
    targets = _targets_for(clone, y, int(model.outputs[0].shape[-1]))
    started = time.perf_counter()
    ran = fit_within_budget(lambda: clone.fit(inputs, targets, batch_size=batch, epochs=1, verbose=0, shuffle=True),
                            epochs, budget_s, progress)
    return clone, {"architecture": "clone of the uploaded model", "compile": used, "epochs_run": ran,
                   "epochs_planned": epochs, "batch": batch, "train_s": round(time.perf_counter() - started, 1),
                   "seed": seed}


def _targets_for(model, y: np.ndarray, n_out: int) -> np.ndarray:
    """One-hot labels when the saved loss wants them (categorical), integer labels otherwise."""
    loss = getattr(model, "loss", None)
    name = loss if isinstance(loss, str) else getattr(loss, "name", type(loss).__name__ if loss else "")
    if "categorical" in str(name).lower() and "sparse" not in str(name).lower():
        return np.eye(n_out, dtype=np.float32)[y]
    return y


def accuracy(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    return float((predict(x).argmax(1) == y).mean()) if len(y) else float("nan")


def attack_success(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray, stamp, target: int) -> float:
    """Share of inputs of other classes, correctly classified without the trigger, sent to ``target`` with it. Inputs
    the model gets wrong anyway say nothing about the trigger."""
    others = y != target
    correct = predict(x[others]).argmax(1) == y[others]
    if not correct.any():
        return float("nan")
    return float((predict(stamp(x[others][correct])).argmax(1) == target).mean())
