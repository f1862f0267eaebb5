"""Model layer (ATLAS AML.T0018 Backdoor ML Model / AML.T0020 Poison Training Data): which training samples did a
backdoor put into the model, found in the model's own representations (activation clustering, spectral signatures).

With a model uploaded, its activations are analysed (the model is loaded in safe mode only after the static checks).
With a dataset alone, a small proxy network is trained on it first, seeded and time-budgeted.
"""

import numpy as np

from worker.context import ScanContext
from worker.detector_config import ModelLayerConfig
from worker.detectors.data import _label
from worker.findings import Finding, ScanInputs, Severity
from worker.registry import registry

MAX_LISTED = 100_000  # flagged samples listed in the report; the count is always exact
# How far activation clustering alone is trusted that a class was attacked (a sample's confidence is this times its
# poison posterior). A class that stands out from the others is likely a target, but one method is one method: a
# sample reaches the quarantine (0.5) on this alone only with a posterior of 0.83 or more; the assessment raises the
# belief when probing or reconstruction agree. A class that splits like every other class is noise or confusion.
BELIEF_STANDS_OUT = 0.6
BELIEF_LIKE_OTHERS = 0.25


@registry.register(name="backdoor_activations", layer="model", technique="AML.T0018", needs=("dataset",), queue="gpu",
                   uses=("model_layer",), config=ModelLayerConfig)
def backdoor_activations(inputs: ScanInputs, config: dict, progress, context: ScanContext) -> list[Finding]:
    """Finds backdoor target classes and their poisoned training samples in the model's activations (ART activation clustering + spectral signatures).

    config: ``ModelLayerConfig`` (``label_column``, ``layers``, ``seed``, ``proxy_epochs``, ``proxy_budget_s``, ``batch``).
    """
    run = context.model_layer(ModelLayerConfig.model_validate(config), progress)  # worker.model_layer.run_model_layer, kept for backdoor_assessment
    return run.notes + report_findings(run.ds, run.analysis, run.context, uploaded=run.source["model"] == "uploaded")


def split_verdict_text(c, name, classes: int) -> tuple[str, str]:
    """Title and the why of a suspicious class's split: it stands out from the other classes, splits like them, or,
    with two classes, has no third to be compared with (a median and MAD over two values puts each at z +-0.67)."""
    if c.stands_out:
        return (f"class {name} looks like a backdoor target ({len(c.flagged)} of {c.size} samples flagged)",
                f" No other class splits this way (robust z {c.robust_z:.1f} against all classes): samples of other "
                "classes relabelled to one class and sorted apart by the model is what a dirty-label backdoor leaves. "
                "One method: the backdoor assessment decides whether the model learned a trigger.")
    if classes < 3:
        return (f"class {name} holds samples that look like the other class",
                " With two classes there is no third to compare the split with: the pair's natural confusion leaves "
                "such a split too, and the cross-class test that tells a backdoor's apart needs three classes or more. "
                "Not evidence of a backdoor on its own; the samples are in the review list, and the backdoor "
                "assessment's trigger probing is the check that applies.")
    return (f"class {name} holds samples that look like other classes, as the other classes do",
            f" Most classes split the same way (robust z {c.robust_z:.1f}): label noise or naturally confusable "
            "classes, not evidence of a backdoor on its own. The samples are in the review list.")


def report_findings(ds, analysis, context: dict, *, uploaded: bool) -> list[Finding]:
    per_class = {str(_label(ds, c.label)): _class_evidence(c) for c in analysis.classes}
    technique = "AML.T0018" if uploaded else "AML.T0020"
    what = "the uploaded model" if uploaded else "a proxy network trained on the dataset"
    findings = []
    for c in analysis.classes:
        if not c.suspicious:
            continue
        belief = BELIEF_STANDS_OUT if c.stands_out else BELIEF_LIKE_OTHERS
        flagged = _flagged_records(ds, c, analysis, belief)
        name = _label(ds, c.label)
        split = (f"In {what}'s {', '.join(context['layers'])} activations, class {name} splits into two clusters "
                 f"(silhouette {c.silhouette:.2f}); the inputs of one of them look like other classes "
                 f"({c.sides[c.poison_side]['input_disagreement']:.0%} of their nearest input-space neighbours carry another "
                 f"label, against {c.sides[1 - c.poison_side]['input_disagreement']:.0%} for the rest). {_agreement_text(c)}")
        title, why = split_verdict_text(c, name, len(analysis.classes))
        findings.append(Finding(
            title=title, severity=Severity.medium if c.stands_out else Severity.low,
            score=round(belief * min(1.0, c.sides[c.poison_side]["input_disagreement"] + c.silhouette), 3),
            explanation=split + why,
            remediation="Let the backdoor assessment confirm the class; quarantine the samples it confirms, retrain "
            "without them and test the retrained model for the trigger.",
            evidence={"class": name, "flagged": flagged, **_class_evidence(c), "per_class": per_class, **context},
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
            "moved_by_boundary_refinement": c.moved_by_refinement, "spectral_scores": c.spectral_scores,
            "gap": c.gap, "robust_z": c.robust_z, "stands_out": c.stands_out}


def _flagged_records(ds, c, analysis, belief: float) -> list[dict]:
    order = c.flagged[np.argsort(-analysis.suspicion[c.flagged], kind="stable")][:MAX_LISTED]  # most suspicious first
    return [{"index": int(i), "reason": "backdoor poison", "method": "+".join(analysis.methods[int(i)]),
             "attack": "backdoor", "score": round(float(analysis.suspicion[i]), 4),
             "confidence": round(belief * float(analysis.suspicion[i]), 4)} for i in order]
