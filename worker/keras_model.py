"""Load an uploaded Keras model for analysis: only after the static checks pass, only in safe mode.

Used by the data layer (embeddings as features) and the model layer. TensorFlow is imported here,
on first use, never by the API.
"""

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from worker.findings import Finding, InputRejected, Severity
from worker.inspect.formats import sniff

BLOCKING = (Severity.critical, Severity.high)


class ModelRejected(InputRejected):
    """The model will not be loaded; the message says which check stopped it."""


def unanalysed_model_finding(model_input, exc: Exception, instead: str) -> Finding:
    """The finding for an uploaded model that was not loaded. A model that claims to be Keras (by content or name) is
    one whose own behaviour went unchecked: high, so a gate fails closed even when the scan ran no other detector. A
    model of another framework is outside what the model layers analyse: a low remark (the supply-chain layer still
    scanned it). ``instead``: what the scan did without it."""
    claims_keras = model_input.kind in ("keras", "hdf5") or (model_input.filename or "").lower().endswith((".keras", ".h5"))
    return Finding("uploaded model not analysed" + (f": {instead}" if instead else ""),
                   Severity.high if claims_keras else Severity.low, 0.8 if claims_keras else 0.0,
                   f"The model layers analyse Keras models only, loaded in safe mode after the static checks: {exc}."
                   + (f" Instead, {instead}." if instead else ""),
                   remediation="Upload the model as a .keras or .h5 file that passes the static checks for its own "
                   "behaviour to be analysed.",
                   evidence={"reason": str(exc)})


def load_keras_safely(path: Path, *, compile: bool = False):
    """The supply-chain layer's static inspection first (in its sandboxed child: config, archive members, pickles
    inside); then ``load_model(safe_mode=True)``. ``compile`` restores the saved optimizer, loss and metrics (for
    retraining a clone)."""
    from worker.inspect.artifact import InspectOptions
    from worker.inspect.sandbox import inspect_in_child

    kind = sniff(path)
    if kind not in ("keras", "hdf5"):
        raise ModelRejected(f"the model is {kind}, not a Keras .keras or .h5 file; only Keras models are loaded for analysis")
    inspection = inspect_in_child(path, None, InspectOptions())
    blocking = [f.title for fi in inspection.files for f in fi.structure + fi.serialization if f.severity in BLOCKING]
    # any pickle in a Keras model (even an allowlisted one, medium) is something Keras never writes
    blocking += [f.title for fi in inspection.files for f in fi.serialization if f.severity == Severity.medium]
    if blocking:
        raise ModelRejected(f"the model was not loaded because the static scan found: {'; '.join(blocking[:3])}")
    import keras

    # Keras picks its loader by extension, and the store names files by hash: load through a named link.
    with tempfile.TemporaryDirectory(prefix="poisonscan-model-") as tmp:
        link = Path(tmp) / ("model.keras" if kind == "keras" else "model.h5")
        link.symlink_to(path.resolve())
        try:
            return keras.saving.load_model(link, compile=compile, safe_mode=True)
        except Exception as exc:  # noqa: BLE001 - truncated or inconsistent files fail in many ways inside Keras
            raise ModelRejected(f"Keras could not load it in safe mode ({type(exc).__name__}: {str(exc)[:300]})"
                                + _loading_hint(str(exc))) from exc


def _loading_hint(message: str) -> str:
    """What to do about a load failure whose cause Keras's message does not say."""
    if "repeated term" in message:
        # Keras writes a TextVectorization vocabulary one token per line and splits it back on any line break
        return ("; a token of its TextVectorization vocabulary holds a line break (U+0085, U+2028, a carriage "
                "return, ...), which Keras saves but cannot read back: replace line breaks in the texts with spaces "
                "before adapt(), retrain and save again")
    return ""


def representation_layer(model, name: str | None = None):
    """The layer whose output represents a sample: by name, or the penultimate layer (the last layer's input)."""
    if name:
        return model.get_layer(name)
    return model.layers[-2] if len(model.layers) >= 2 else model.layers[-1]


def embed(model, x: np.ndarray, *, layer: str | None = None, batch: int = 1024, progress: Callable[[float], None] | None = None) -> np.ndarray:
    """Activations of one layer (by name, else the penultimate) for every sample, whole: see ``embed_layers``."""
    (out,) = embed_layers(model, x, [representation_layer(model, layer)], max_dims=None, batch=batch, progress=progress)
    return out


def as_model_input(x: np.ndarray, shape: tuple) -> np.ndarray:
    """uint8 images become floats in [0, 1]; a missing channel axis is added when the model expects one."""
    data = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32, copy=False)
    if None not in shape and data.shape[1:] != shape and int(np.prod(data.shape[1:])) == int(np.prod(shape)):
        data = data.reshape((len(data), *shape))
    return data


def string_batch(model, texts):
    """Texts as a string tensor shaped as the model's input: (n,), or (n, 1) for a model built on ``Input((1,))``."""
    import tensorflow as tf

    chunk = tf.constant(list(texts), dtype=tf.string)
    rank = len(model.inputs[0].shape) if getattr(model, "inputs", None) else 1
    return tf.reshape(chunk, (-1, 1)) if rank == 2 else chunk


def representation_layers(model, names: list[str] | None = None) -> list:
    """The layers analysed by the model layer: by name, or the penultimate layer and the nearest earlier layer whose
    output differs in size (skipping Dropout-like pass-throughs). Two views of the sample: a source class that the
    penultimate layer maps close to the target (a 6 and a 0) is still apart one layer down."""
    if names:
        return [model.get_layer(n) for n in names]
    chosen = [representation_layer(model)]
    size = _output_size(chosen[0])
    position = model.layers.index(chosen[0])
    for layer in reversed(model.layers[:position]):
        kind = layer.__class__.__name__
        if kind == "InputLayer":
            break
        if "Dropout" in kind or "Noise" in kind:  # identity at inference: the layer below says the same
            continue
        if _output_size(layer) not in (None, size):
            chosen.append(layer)
            break
    return chosen


def _output_size(layer) -> int | None:
    try:
        shape = layer.output.shape[1:]
    except (AttributeError, ValueError):
        return None
    return None if None in shape else int(np.prod(shape))


def embed_layers(model, x: np.ndarray, layers: list, *, max_dims: int | None = 256, batch: int = 1024, seed: int = 0,
                 progress: Callable[[float], None] | None = None) -> list[np.ndarray]:
    """Activations of several layers in one compiled pass, in batches. A layer wider than ``max_dims`` is multiplied by
    a fixed Gaussian random projection inside the pass (distances are kept, Johnson-Lindenstrauss), so memory is
    n x max_dims floats per layer whatever the layer's width: a 1,000,000-sample set never holds a conv layer whole.
    ``max_dims=None`` keeps every layer whole. ``x``: arrays in the model's input form, or a list of strings for a
    model that takes text (its TextVectorization inside)."""
    import keras
    import tensorflow as tf

    extractor = keras.Model(model.inputs, [layer.output for layer in layers])
    shape = tuple(model.inputs[0].shape[1:])
    widths = [_output_size(layer) or 0 for layer in layers]
    rng = np.random.default_rng(seed)
    projections = [tf.constant((rng.standard_normal((w, max_dims)) / np.sqrt(max_dims)).astype(np.float32))
                   if max_dims and w > max_dims else None for w in widths]

    @tf.function(reduce_retracing=True)
    def step(chunk):
        acts = extractor(chunk, training=False)
        acts = acts if isinstance(acts, (list, tuple)) else [acts]
        flat = [tf.reshape(a, (tf.shape(chunk)[0], -1)) for a in acts]
        return [tf.matmul(f, p) if p is not None else f for f, p in zip(flat, projections)]

    outs: list[np.ndarray] = []
    for start in range(0, len(x), batch):
        part = x[start:start + batch]
        chunk = string_batch(model, part) if isinstance(x, list) else tf.constant(as_model_input(part, shape))
        acts = [a.numpy() for a in step(chunk)]
        if not outs:  # sized from the first batch: a layer's width may only be known once it has run
            outs = [np.empty((len(x), a.shape[1]), dtype=np.float32) for a in acts]
        for out, a in zip(outs, acts):
            out[start:start + len(part)] = a
        if progress:
            progress(min(1.0, (start + len(part)) / len(x)))
    return outs


def predictor(model, *, batch: int = 1024) -> Callable[[np.ndarray], np.ndarray]:
    """Class probabilities (or whatever the last layer outputs) for inputs already in the model's form, through one
    compiled forward pass per batch: much cheaper than ``model.predict`` for the many small calls of trigger probing."""
    import tensorflow as tf

    forward = tf.function(lambda t: model(t, training=False), reduce_retracing=True)

    def predict(x: np.ndarray) -> np.ndarray:
        parts = [np.asarray(forward(tf.constant(x[i:i + batch], dtype=tf.float32))) for i in range(0, len(x), batch)]
        return np.concatenate(parts) if parts else np.empty((0, int(model.outputs[0].shape[-1])), np.float32)

    return predict
