"""Model layer (ATLAS AML.T0018 Backdoor ML Model / AML.T0020 Poison Training Data): which training samples did a
backdoor put into the model, found in the model's own representations (activation clustering, spectral signatures).

With a model uploaded, its activations are analysed (the model is loaded in safe mode only after the static checks).
With a dataset alone, a small proxy network is trained on it first, seeded and time-budgeted.
"""

import time
from dataclasses import dataclass

import numpy as np

from worker.detectors.data import _label
from worker.findings import Finding, InputRejected, ScanInputs, Severity
from worker.registry import registry

MAX_LISTED = 100_000  # flagged samples listed in the report; the count is always exact


@dataclass
class ModelLayerRun:
    """What the model layer computed, kept for the backdoor assessment that follows it in the same scan."""

    ds: object  # worker.datasets.Dataset
    model: object  # the Keras model analysed: uploaded, or the proxy
    source: dict  # {"model": "uploaded"} or {"model": "proxy", "proxy": training facts}
    notes: list[Finding]
    analysis: object  # worker.backdoor.Analysis
    context: dict  # layers, dims, timings


@registry.register(name="backdoor_activations", layer="model", technique="AML.T0018", needs=("dataset",), queue="gpu")
def backdoor_activations(inputs: ScanInputs, config: dict, progress, shared: dict) -> list[Finding]:
    """Finds backdoor target classes and their poisoned training samples in the model's activations (ART activation clustering + spectral signatures).

    config: ``label_column`` (CSV/Parquet, default "label"), ``layers`` (representation layer names; default the
    penultimate and the layer before it), ``seed`` (default 0), ``proxy_epochs`` (default 8), ``proxy_budget_s``
    (default 300), ``batch`` (default 1024).
    """
    run = run_model_layer(inputs, config, progress)
    shared["model_layer"] = run
    return run.notes + report_findings(run.ds, run.analysis, run.context, uploaded=run.source["model"] == "uploaded")


def run_model_layer(inputs: ScanInputs, config: dict, progress) -> ModelLayerRun:
    """Load the dataset and the model (or train the proxy), embed, and analyse every class."""
    from worker.backdoor import analyze
    from worker.datasets import load_dataset
    from worker.keras_model import embed_layers, representation_layers
    from worker.proxy import features_for

    seed = int(config.get("seed", 0))
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    progress("load", 0.0)
    ds = load_dataset(inputs.dataset.path, inputs.dataset.kind, label_column=config.get("label_column", "label"))
    model, source, notes = _model_for(inputs, ds, config, seed, progress)
    timings["load_and_model_s"] = time.perf_counter() - clock
    base = 0.55 if source["model"] == "proxy" else 0.05
    _check_output(model, ds)
    layers = representation_layers(model, config.get("layers"))
    clock = time.perf_counter()
    reps = embed_layers(model, ds.x, layers, batch=int(config.get("batch", 1024)), seed=seed,
                        progress=lambda f: progress("activations", base + (0.85 - base) * f))
    timings["activations_s"] = time.perf_counter() - clock
    clock = time.perf_counter()
    progress("input features", 0.85)
    inputs_space = features_for(ds.x, ds.kind, seed=seed)
    analysis = analyze(reps, ds.y, inputs_space, seed=seed, progress=lambda f: progress("clustering", 0.87 + 0.12 * f))
    timings["analysis_s"] = time.perf_counter() - clock
    context = source | {"layers": [layer.name for layer in layers], "dims": [int(r.shape[1]) for r in reps],
                        "timings_s": {k: round(v, 3) for k, v in timings.items()}}
    return ModelLayerRun(ds, model, source, notes, analysis, context)


def _model_for(inputs: ScanInputs, ds, config: dict, seed: int, progress) -> tuple[object, dict, list[Finding]]:
    """The uploaded Keras model, loaded safely; else (none uploaded, or not one we load) a proxy trained on the data."""
    from worker.keras_model import ModelRejected, load_keras_safely

    notes = []
    if inputs.model is not None:
        try:
            return load_keras_safely(inputs.model.path), {"model": "uploaded"}, notes
        except ModelRejected as exc:  # the supply-chain layer reports why; the data still gets a model-layer check
            # A Keras model we could not open is not "another framework": its own behaviour went unchecked (fail closed).
            claims_keras = inputs.model.kind in ("keras", "hdf5") or (inputs.model.filename or "").lower().endswith((".keras", ".h5"))
            notes.append(Finding("uploaded model not analysed: a proxy network was used",
                                 Severity.high if claims_keras else Severity.low, 0.8 if claims_keras else 0.0,
                                 f"The model layer analyses Keras models only, loaded in safe mode after the static checks: {exc}. "
                                 "The dataset was analysed with a proxy network trained on it instead.",
                                 remediation="Upload the model as .keras or .h5 for its own activations to be analysed.",
                                 evidence={"reason": str(exc)}))
    from worker.proxy_network import train_proxy

    progress("proxy", 0.02)
    model, trained = train_proxy(ds.x, ds.y, ds.kind, seed=seed, epochs=int(config.get("proxy_epochs", 8)),
                                 budget_s=float(config.get("proxy_budget_s", 300)),
                                 progress=lambda f: progress("proxy", 0.02 + 0.5 * f))
    return model, {"model": "proxy", "proxy": trained}, notes


def _check_output(model, ds) -> None:
    outputs = int(model.outputs[0].shape[-1])
    if outputs < ds.n_classes:
        raise InputRejected(f"the model has {outputs} outputs but the dataset has {ds.n_classes} classes: upload the dataset "
                            f"the model was trained on, with labels 0..{outputs - 1}")


def report_findings(ds, analysis, context: dict, *, uploaded: bool) -> list[Finding]:
    per_class = {str(_label(ds, c.label)): _class_evidence(c) for c in analysis.classes}
    technique = "AML.T0018" if uploaded else "AML.T0020"
    what = "the uploaded model" if uploaded else "a proxy network trained on the dataset"
    findings = []
    for c in analysis.classes:
        if not c.suspicious:
            continue
        flagged = _flagged_records(ds, c, analysis)
        findings.append(Finding(
            title=f"class {_label(ds, c.label)} looks like a backdoor target ({len(c.flagged)} of {c.size} samples poisoned)",
            severity=Severity.high,
            score=round(min(1.0, c.sides[c.poison_side]["input_disagreement"] + c.silhouette), 3),
            explanation=f"In {what}'s {', '.join(context['layers'])} activations, class {_label(ds, c.label)} splits into two "
            f"clusters (silhouette {c.silhouette:.2f}); the inputs of one of them look like other classes "
            f"({c.sides[c.poison_side]['input_disagreement']:.0%} of their nearest input-space neighbours carry another label, "
            f"against {c.sides[1 - c.poison_side]['input_disagreement']:.0%} for the rest). Samples of other classes relabelled "
            f"to one class and sorted apart by the model is what a dirty-label backdoor leaves. {_agreement_text(c)}",
            remediation=f"Quarantine the {len(c.flagged)} flagged samples, retrain without them and test the retrained model "
            f"for the trigger; do not register {'this model' if uploaded else 'a model trained on this data'} as it is.",
            evidence={"class": _label(ds, c.label), "flagged": flagged, **_class_evidence(c), "per_class": per_class, **context},
            technique=technique,
        ))
    if not findings:
        findings.append(Finding(
            title="no class looks like a backdoor target",
            severity=Severity.info, score=0.0,
            explanation=f"Every class of {what} either forms one cluster or splits into clusters whose inputs look like the "
            "class itself (natural sub-styles, not relabelled samples of other classes).",
            evidence={"per_class": per_class, **context}, technique=technique,
        ))
    return findings


def _agreement_text(c) -> str:
    if c.agreement is None:  # every sample of the class flagged: no clean side for spectral signatures to cut against
        return "Spectral signatures could not be compared: the whole class was flagged."
    return f"Activation clustering and spectral signatures agree on {c.agreement:.0%} of the cluster."


def _class_evidence(c) -> dict:
    return {"size": c.size, "suspicious": c.suspicious, "reason": c.reason or None, "clusters": c.sides,
            "silhouette": c.silhouette, "poison_cluster": c.poison_side, "flagged_count": int(len(c.flagged)) if c.suspicious else 0,
            "spectral_flagged": c.spectral_flagged, "methods_agreement_jaccard": c.agreement,
            "moved_by_boundary_refinement": c.moved_by_refinement, "spectral_scores": c.spectral_scores}


def _flagged_records(ds, c, analysis) -> list[dict]:
    order = c.flagged[np.argsort(-analysis.suspicion[c.flagged], kind="stable")][:MAX_LISTED]  # most suspicious first
    return [{"index": int(i), "reason": "backdoor poison", "method": "+".join(analysis.methods[int(i)]),
             "score": round(float(analysis.suspicion[i]), 4)} for i in order]
