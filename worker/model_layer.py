"""The model layer's work (shared by ``backdoor_activations`` and ``backdoor_assessment`` through the scan context):
the dataset and the model (the uploaded Keras model, loaded safely, else a proxy trained on the data), their
activations, and the analysis of every class.

Not a detector module: ``worker.context`` computes ``run_model_layer`` once per scan, so nothing here imports
``worker.detectors``. TensorFlow is imported on first use only.
"""

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from worker.findings import Finding, InputRejected, NotApplicable, Severity

if TYPE_CHECKING:
    from worker.context import ScanContext
    from worker.detector_config import ModelLayerConfig


@dataclass
class ModelLayerRun:
    """What the model layer computed, kept for the backdoor assessment that follows it in the same scan."""

    ds: object  # worker.datasets.Dataset
    model: object  # the Keras model analysed: uploaded, or the proxy
    source: dict  # {"model": "uploaded"} or {"model": "proxy", "proxy": training facts}
    notes: list[Finding]
    analysis: object  # worker.backdoor.Analysis
    context: dict  # layers, dims, timings
    untangled: object = None  # worker.untangle.UntangleResult: SCAn on the penultimate layer
    input_features: object = None  # (n, d) the samples in input space (worker.proxy.features_for)
    projection: object = None  # (n, 2) each sample on its class's top two singular directions (worker.figures)


def run_model_layer(context: "ScanContext", settings: "ModelLayerConfig", progress) -> ModelLayerRun:
    """The context's dataset and model (or a proxy trained on the data), embedded and analysed class by class.

    Called by ``ScanContext.model_layer`` (once per scan) with the asking detector's settings (``ModelLayerConfig``
    or a subclass); ``progress(stage, fraction)``."""
    from worker.backdoor import analyze
    from worker.figures import class_projections
    from worker.keras_model import embed_layers, representation_layers
    from worker.proxy import features_for

    seed = settings.seed
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    progress("load", 0.0)
    ds = context.dataset(settings.label_column, settings.text_column)
    if ds.n_classes < 2:
        raise NotApplicable("the dataset has one class (e.g. unlabelled instruction data): there is no class for a "
                            "backdoor to target")
    model, source, notes = _model_for(context, ds, settings, progress)
    timings["load_and_model_s"] = time.perf_counter() - clock
    base = 0.55 if source["model"] == "proxy" else 0.05
    _check_output(model, ds)
    layers = representation_layers(model, settings.layers)
    clock = time.perf_counter()
    # a text model reads the texts themselves; the input-space neighbours below stay the texts' features
    samples = list(ds.texts) if source.get("input") == "text" else ds.x
    reps = embed_layers(model, samples, layers, batch=settings.batch, seed=seed,
                        progress=lambda f: progress("activations", base + (0.85 - base) * f))
    timings["activations_s"] = time.perf_counter() - clock
    clock = time.perf_counter()
    progress("input features", 0.85)
    inputs_space = features_for(ds.x, ds.kind, seed=seed)
    analysis = analyze(reps, ds.y, inputs_space, seed=seed, progress=lambda f: progress("clustering", 0.87 + 0.12 * f))
    timings["analysis_s"] = time.perf_counter() - clock
    clock = time.perf_counter()
    progress("SCAn", 0.99)
    untangled = _untangle(reps[0], ds.y, analysis, seed)
    timings["scan_s"] = time.perf_counter() - clock
    projection = class_projections(reps[0], ds.y, seed)  # the report's pictures, while the activations are at hand
    details = source | {"layers": [layer.name for layer in layers], "dims": [int(r.shape[1]) for r in reps],
                        "timings_s": {k: round(v, 3) for k, v in timings.items()}}
    return ModelLayerRun(ds, model, source, notes, analysis, details, untangled, inputs_space, projection)


def _untangle(penultimate, labels, analysis, seed: int):
    """SCAn over the penultimate activations, its global model estimated on the rows activation clustering did not
    flag: it finds a target class whose poison is a minority from one source class, which clustering misses."""
    import numpy as np

    from worker.untangle import untangle

    reference = np.setdiff1d(np.arange(len(labels)), analysis.flagged)
    return untangle(penultimate, labels, reference=reference, seed=seed)


def _model_for(context: "ScanContext", ds, settings: "ModelLayerConfig", progress) -> tuple[object, dict, list[Finding]]:
    """The uploaded Keras model, loaded safely (the context's); else (none uploaded, or not one we load) a proxy
    trained on the data. A text model is analysed on the texts when the dataset is text and its graph can be cut at
    the representation layers (a subclassed model cannot)."""
    from worker.keras_model import ModelRejected, unanalysed_model_finding
    from worker.text_model import is_text_model

    inputs = context.inputs
    notes = []
    if inputs.model is not None:
        try:
            model = context.model()
            if not is_text_model(model):
                return model, {"model": "uploaded"}, notes
            why = _unreadable_text_model(model, ds, settings)
            if not why:
                return model, {"model": "uploaded", "input": "text"}, notes
            notes.append(Finding("text model: activations from a proxy network", Severity.info, 0.0,
                                 f"The uploaded model takes text, but {why}; it is probed with triggers by "
                                 "text_backdoor. Activation clustering ran on a proxy network trained on the texts' "
                                 "features."))
        except ModelRejected as exc:  # the supply-chain layer reports why; the data still gets a model-layer check
            notes.append(unanalysed_model_finding(inputs.model, exc, "a proxy network was trained on the dataset"))
    from worker.proxy_network import train_proxy

    progress("proxy", 0.02)
    model, trained = train_proxy(ds.x, ds.y, ds.kind, seed=settings.seed, epochs=settings.proxy_epochs,
                                 budget_s=settings.proxy_budget_s,
                                 progress=lambda f: progress("proxy", 0.02 + 0.5 * f))
    return model, {"model": "proxy", "proxy": trained}, notes


def _unreadable_text_model(model, ds, settings: "ModelLayerConfig") -> str:
    """Why the text model's own activations cannot be read on this dataset ("" when they can)."""
    import keras

    from worker.keras_model import representation_layers

    if ds.texts is None:
        return "the dataset is not text"
    try:
        keras.Model(model.inputs, [layer.output for layer in representation_layers(model, settings.layers)])
    except (AttributeError, ValueError, TypeError) as exc:
        return f"its graph cannot be cut at a representation layer ({type(exc).__name__}: {str(exc)[:200]})"
    return ""


def _check_output(model, ds) -> None:
    outputs = int(model.outputs[0].shape[-1])
    if outputs < ds.n_classes:
        raise InputRejected(f"the model has {outputs} outputs but the dataset has {ds.n_classes} classes: upload the dataset "
                            f"the model was trained on, with labels 0..{outputs - 1}")
