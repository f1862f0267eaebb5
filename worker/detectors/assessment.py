"""Backdoor assessment of a model (ATLAS AML.T0018): is it backdoored, toward which class, what does the trigger look
like, and does retraining without the flagged samples remove it.

Runs after ``backdoor_activations`` on the same model (the uploaded Keras model, or the proxy in dataset-only mode) and
reuses its analysis. Three methods vote per class:
  probing         candidate triggers (and the user's) stamped on held-out clean inputs switch them to the class;
  reconstruction  Neural Cleanse finds an unusually small trigger toward the class (MAD anomaly index > 2);
  activations     the model layer found the class's poisoned samples (activation clustering for a class that stands
                  out from the others, or SCAn for a class holding a second identity: a source-specific trigger).
Two or more votes: the model is backdoored toward that class (critical). One: a possible backdoor (medium when a
trigger fires, else low). STRIP entropy of the flagged training samples is reported as confirmation. Then, by default
when a backdoor is found, remediation: the quarantine is removed, the model retrained and re-tested, the retrained
model asked for the poison that remains, and the trigger unlearned where removal alone does not remove it.
"""

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import numpy as np

from worker.context import ScanContext
from worker.detector_config import AssessmentConfig
from worker.detectors.data import _label
from worker.findings import Finding, NotApplicable, ScanInputs, Severity
from worker.model_layer import ModelLayerRun
from worker.outputs import OutputSink
from worker.registry import registry

# Confidence that a confirmed target class was attacked: two independent methods, or all three, point at it.
BELIEF_TWO_METHODS = 0.9
BELIEF_CONFIRMED = 0.97
ANCHORED_SHARE = 0.8  # a trigger-anchored row: the probe-to-representation link is one more approximate step
REMEDIATED_ASR = 0.02  # an attack success rate at or under this after retraining counts as removed
ACCURACY_TOLERANCE = 0.01  # remediation's goal keeps clean accuracy within this of the reference (_accuracy_before)
UNLEARN_SHARE = 0.2  # of the unlearning samples carry a known trigger (Neural Cleanse's unlearning uses 20%)
SUBGROUP_MIN = 5  # samples: a smaller SCAn minority is no evidence of anything
SUBGROUP_SOURCE_SHARE = 0.5  # the minority "looks like" the trigger's sources when most of its input neighbours do


@dataclass
class HeldOut:
    x: np.ndarray  # in the model's input form
    y: np.ndarray  # mapped labels
    rows: np.ndarray | None  # dataset rows used (kept out of retraining), None for an uploaded holdout set
    source: str


@dataclass
class Probing:
    """What trigger probing found (``_probe``)."""

    spec: object  # worker.triggers.InputSpec: the model's input shape and value range
    report: dict  # the evidence's "probing"
    suspected: set[int]  # classes some trigger switches held-out inputs to
    strongest: dict[int, object]  # class -> the library candidate's worker.triggers result with the highest success
    user: object | None  # the user's trigger's result, when one was uploaded
    rate_without: np.ndarray  # per class: the share of held-out inputs predicted as it without a trigger


@dataclass
class Reconstruction:
    """What Neural Cleanse found (``_reconstruct``)."""

    result: object  # worker.neural_cleanse's result: masks, patterns, norms, anomaly indices
    targets: set[int]  # classes with an unusually small trigger
    report: dict  # the evidence's "reconstruction" (without the images)


@dataclass
class StripCheck:
    """STRIP's entropy check (``_strip``)."""

    report: dict  # the evidence's "strip"
    low: np.ndarray  # checked dataset rows whose entropy is under the clean threshold


@dataclass
class RetrainRound:
    """One remediation round (``_retrain_round``, ``_unlearn_round``); ``evidence()`` is its entry in the report."""

    round: int  # 1, 2, ...
    step: str  # "retrain" (fresh weights, without the removed samples) or "unlearn" (fine-tuning the last model)
    rule: str  # what was removed or done, in words
    removed_samples: int  # samples left out of training (the quarantine so far)
    added_samples: int  # of those, found by earlier rounds' retrained models
    retraining: dict
    attack_success: list[dict]
    clean_accuracy_after: float
    worst_after: float
    removed: bool
    model: object  # the Keras model after this round (the last one is saved as an output, not reported)

    def evidence(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}


@dataclass
class Assessment:
    """What the assessment's steps share: the model layer's run, the held-out set, the settings, and each step's result
    as it is made (``probing``, then ``reconstruction``, then ``strip``)."""

    inputs: ScanInputs
    run: ModelLayerRun
    held: HeldOut
    config: AssessmentConfig
    seed: int
    shape: tuple  # the model's input shape, without the batch axis
    predict: Callable[[np.ndarray], np.ndarray]  # the analysed model's predictor
    outputs: OutputSink
    probing: Probing | None = None
    reconstruction: Reconstruction | None = None
    strip: StripCheck | None = None
    # class -> SCAn's minority, where a source-specific trigger fires and the minority's inputs look like its sources
    subgroups: dict[int, np.ndarray] = field(default_factory=dict)
    subgroup_evidence: dict[str, dict] = field(default_factory=dict)

    @property
    def ds(self):
        return self.run.ds

    @property
    def model(self):
        return self.run.model


@registry.register(name="backdoor_assessment", layer="model", technique="AML.T0018", needs=("dataset",), queue="gpu",
                   uses=("model_layer", "outputs", "quarantine"), config=AssessmentConfig)
def backdoor_assessment(inputs: ScanInputs, config: dict, progress, context: ScanContext) -> list[Finding]:
    """Decides whether the model is backdoored and toward which class (trigger probing, Neural Cleanse reconstruction, the activation analysis; STRIP), then quarantines, retrains and re-tests.

    config: ``AssessmentConfig``: probing, Neural Cleanse, STRIP and remediation settings, and the model layer's
    (``ModelLayerConfig``: ``label_column``, ``layers``, ``proxy_epochs``, ...) used when it has not run in this scan.
    """
    from worker.keras_model import predictor

    settings = AssessmentConfig.model_validate(config)
    seed = settings.seed
    base = 0.0  # progress already spent before the assessment's own stages
    if not context.has_model_layer():  # run alone: the model layer's work first (its findings are that detector's to report)
        base = 0.3
    run = context.model_layer(settings, lambda stage, f: progress(stage, base * f))
    at = lambda f: base + (1 - base) * f  # noqa: E731  (the assessment's share of the detector's progress)
    ds = run.ds
    if ds.texts is not None:  # pixel triggers and Neural Cleanse mean nothing over text features
        raise NotApplicable("a text dataset: text_poisoning searches the data for triggers, and text_backdoor probes "
                            "an uploaded text model")
    uploaded = run.source["model"] == "uploaded"
    shape = tuple(int(d) for d in run.model.inputs[0].shape[1:])
    a = Assessment(inputs, run, held_out(inputs, run, settings, shape, seed), settings, seed, shape, predictor(run.model),
                   context.outputs)
    timings: dict[str, float] = {}

    progress("probing", at(0.0))
    clock = time.perf_counter()
    a.probing = _probe(a, lambda f: progress("probing", at(0.05 * f)))
    timings["probing_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    a.reconstruction = _reconstruct(a, lambda f: progress("reconstruction", at(0.05 + 0.35 * f)))
    timings["reconstruction_s"] = time.perf_counter() - clock
    images = _save_reconstruction(a)

    votes = _votes(a)
    backdoored = [c for c, v in votes.items() if len(v) >= 2]
    possible = [c for c, v in votes.items() if len(v) == 1]

    progress("STRIP", at(0.42))
    clock = time.perf_counter()
    a.strip = _strip(a, backdoored + possible)
    timings["strip_s"] = time.perf_counter() - clock

    evidence = {"model": run.source, "held_out": {"source": a.held.source, "size": int(len(a.held.y))},
                "classes": [_label(ds, c) for c in range(ds.n_classes)],
                "votes": {str(_label(ds, c)): v for c, v in votes.items()},
                "probing": a.probing.report, "reconstruction": {**a.reconstruction.report, "images": images},
                "activations": _activation_evidence(ds, run) | {"source_subgroups": a.subgroup_evidence},
                "strip": a.strip.report}
    findings = [_verdict(ds, votes, backdoored, possible, evidence, uploaded)]
    findings[0].evidence["flagged"] = _confirmed_poison(a, votes, backdoored)

    if settings.remediate == "always" or (settings.remediate == "auto" and backdoored):
        clock = time.perf_counter()
        threshold = context.quarantine_min_confidence
        context.request_cleaned_dataset()
        # the report's quarantine: this verdict's confirmed poison and what earlier detectors quarantined (label flips)
        own = [e["index"] for e in findings[0].evidence["flagged"] if e["confidence"] >= threshold]
        quarantined = np.union1d(np.asarray(own, dtype=np.int64), context.quarantine())
        findings.append(_remediate(a, votes, backdoored or possible, quarantined, threshold,
                                   lambda f: progress("remediation", at(0.45 + 0.55 * f))))
        timings["remediation_s"] = time.perf_counter() - clock
    findings[0].evidence["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    return findings


# ------------------------------------------------------------------------------------------------ held-out inputs

def held_out(inputs: ScanInputs, run, config: AssessmentConfig, shape: tuple, seed: int) -> HeldOut:
    """The uploaded holdout set (labels mapped onto the dataset's), else a seeded sample of the dataset's rows that the
    model layer did not flag, kept out of retraining."""
    from worker.datasets import load_holdout
    from worker.keras_model import as_model_input

    ds = run.ds
    if inputs.holdout is not None:
        hold, y = load_holdout(inputs.holdout, ds, label_column=config.label_column)
        rows = np.arange(len(y))
        if len(rows) > config.holdout_max:
            rows = np.sort(np.random.default_rng(seed).choice(rows, size=config.holdout_max, replace=False))
        return HeldOut(as_model_input(hold.x[rows], shape), y[rows], None, "uploaded holdout set")
    rng = np.random.default_rng(seed)
    clean = np.setdiff1d(np.arange(len(ds.y)), run.analysis.flagged)
    size = min(len(clean) // 5, max(config.probe_samples, len(ds.y) // 10))
    rows = np.sort(rng.choice(clean, size=size, replace=False))
    return HeldOut(as_model_input(ds.x[rows], shape), ds.y[rows], rows,
                   "dataset rows the model layer did not flag (seen in training; kept out of retraining)")


# ------------------------------------------------------------------------------------------------ probing

def _probe(a: Assessment, progress) -> Probing:
    from worker.triggers import SUSPECT_ASR, InputSpec, candidate_library, load_user_trigger, probe, suspected

    ds, held, config, seed, predict = a.ds, a.held, a.config, a.seed, a.predict
    spec = InputSpec.from_inputs(a.shape, held.x)
    triggers = candidate_library(spec, seed=seed)
    if a.inputs.trigger is not None:
        triggers.append(load_user_trigger(a.inputs.trigger.path, spec))
    rng = np.random.default_rng(seed)
    n = min(len(held.y), config.probe_samples)
    pick = np.sort(rng.choice(len(held.y), size=n, replace=False))
    rate_without, results = probe(lambda x: predict(x).argmax(1), held.x[pick], held.y[pick], triggers, spec,
                                  ds.n_classes, progress=progress)
    rows, by_class = [], {}
    for r in results:
        classes = suspected(r, rate_without)
        for c in classes:
            by_class.setdefault(c, []).append(r)
        rows.append({"trigger": r.trigger.name, "family": r.trigger.family, **r.trigger.meta,
                     "rate_with": _round(r.rate_with), "attack_success": _round(r.asr),
                     "top_class": _label(ds, r.top()), "top_attack_success": round(float(r.asr.max()), 4),
                     "backdoor_suspected": bool(classes), "suspected_classes": [_label(ds, c) for c in classes],
                     "source_specific": {str(_label(ds, c)): [_label(ds, s) for s in r.sources(c)] for c in classes
                                         if r.sources(c) and not r.asr[c] >= SUSPECT_ASR}})
    strongest = {c: max(rs, key=lambda r: r.strength(c)) for c, rs in by_class.items()}
    user = next((r for r in results if r.trigger.family == "user"), None)
    report = {"inputs": n, "value_range": [spec.lo, spec.hi], "input_shape": list(spec.shape),
              "rate_without": _round(rate_without), "candidates": rows,
              "suspected": {str(_label(ds, c)): [r.trigger.name for r in rs] for c, rs in by_class.items()}}
    return Probing(spec, report, set(by_class), strongest, user, rate_without)


# ------------------------------------------------------------------------------------------------ reconstruction

def _reconstruct(a: Assessment, progress) -> Reconstruction:
    from worker.neural_cleanse import ANOMALY_THRESHOLD, reconstruct

    model, ds, held, spec, config, seed = a.model, a.ds, a.held, a.probing.spec, a.config, a.seed
    rng = np.random.default_rng(seed + 1)
    n = min(len(held.y), config.nc_samples)
    x = held.x[np.sort(rng.choice(len(held.y), size=n, replace=False))]
    result = reconstruct(model, x, int(model.outputs[0].shape[-1]), spec.lo, spec.hi,
                         steps=config.nc_steps, budget_s=config.nc_budget_s,
                         seed=seed, progress=progress)
    targets = [c for c in result.targets() if c < ds.n_classes]
    report = {"method": "Neural Cleanse (own TF2 implementation: all classes in one compiled step)", "inputs": n,
              "norm": "L1 of the mask", "anomaly_threshold": ANOMALY_THRESHOLD,
              "per_class": {str(_label(ds, c)): {"mask_l1": round(float(result.norms[c]), 3),
                                                 "anomaly_index": round(float(result.anomaly[c]), 3),
                                                 "attack_success": round(float(result.success[c]), 4),
                                                 "reached_success_threshold": bool(result.reached[c])}
                            for c in range(min(ds.n_classes, len(result.norms)))},
              "targets": [_label(ds, c) for c in targets], "steps": result.steps, "stopped_by": result.stopped_by,
              "seconds": round(result.seconds, 2)}
    return Reconstruction(result, set(targets), report)


def _save_reconstruction(a: Assessment) -> dict:
    """Mask, pattern and stamped trigger as PNG, and the pair as .npz (upload it as a ``trigger`` to probe again), for
    each target class and the most anomalous class."""
    from worker.images import png_bytes
    from worker.outputs import npz_bytes

    ds, spec, outputs, result = a.ds, a.probing.spec, a.outputs, a.reconstruction.result
    if not spec.is_image:
        return {}
    classes = sorted(a.reconstruction.targets | {int(np.argmax(result.anomaly[:ds.n_classes]))})
    saved = {}
    for c in classes:
        stem = f"trigger-class-{_safe(_label(ds, c))}"
        mask, pattern = result.masks[c], result.patterns[c]
        scale = max(1, 224 // max(spec.shape[:2]))
        names = {
            "mask": outputs.add(f"{stem}-mask.png", png_bytes(mask, 0, 1, scale=scale), media_type="image/png",
                                description=f"Neural Cleanse mask toward class {_label(ds, c)} (white: where the trigger sits)"),
            "pattern": outputs.add(f"{stem}-pattern.png", png_bytes(pattern, spec.lo, spec.hi, scale=scale), media_type="image/png",
                                   description=f"Neural Cleanse pattern toward class {_label(ds, c)}"),
            "stamped": outputs.add(f"{stem}-stamped.png", png_bytes(mask * pattern + (1 - mask) * spec.lo, spec.lo, spec.hi, scale=scale),
                                   media_type="image/png", description=f"the reconstructed trigger toward class {_label(ds, c)} on a blank input"),
            "npz": outputs.add(f"{stem}.npz", npz_bytes(mask=mask, pattern=pattern), media_type="application/octet-stream",
                               description=f"mask and pattern toward class {_label(ds, c)}; upload as a scan's trigger to probe with it"),
        }
        saved[str(_label(ds, c))] = names
    return saved


# ------------------------------------------------------------------------------------------------ votes and verdict

def _votes(a: Assessment) -> dict[int, list[str]]:
    # the representations vote once: activation clustering for a class that stands out from the others (a class split
    # like all others is no vote), or SCAn for a class that untangles into two identities unlike the others
    activations = {c.label for c in a.run.analysis.classes if c.stands_out} | set(_scan_targets(a.run))
    votes = {}
    for c in range(a.ds.n_classes):
        methods = [m for m, hit in (("probing", c in a.probing.suspected), ("reconstruction", c in a.reconstruction.targets),
                                    ("activations", c in activations or _source_subgroup(a, c))) if hit]
        if methods:
            votes[c] = methods
    return votes


def _source_subgroup(a: Assessment, c: int) -> bool:
    """A trigger fires toward ``c`` and SCAn's minority of ``c`` is inputs that look like other classes (like its source
    classes, for a source-specific trigger): behaviour and data agree, though the minority's split statistic need not
    stand out (measured on digits: the minority was exactly the 73 poisoned samples, anomaly index 0.6). "Look like":
    most of their nearest input-space neighbours, searched outside the minority (poisoned samples are each other's
    nearest), carry another label (a source's). Only asked of a class a trigger fires toward."""
    from worker.backdoor import InputNeighbours

    run = a.run
    minority = None if run.untangled is None else run.untangled.minority.get(c)
    fired = [t for t in _triggers_for(a, c) if t.family != "reconstructed"]
    if not fired or minority is None or len(minority) < SUBGROUP_MIN or run.input_features is None:
        return False
    specific = [_sources(a, t, c) for t in fired]
    sources = (sorted({s for found in specific for s in found}) if all(specific)
               else [s for s in range(a.ds.n_classes) if s != c])
    rng = np.random.default_rng(a.seed + 7)
    rest = _cap(np.setdiff1d(np.arange(len(a.ds.y)), minority), 50_000, rng)
    probes = _cap(minority, 300, rng)
    share = InputNeighbours(run.input_features, a.ds.y, a.seed, rows=rest).labelled_share(probes, sources)
    a.subgroup_evidence[str(_label(a.ds, c))] = {"minority": int(len(minority)), "sources": [_label(a.ds, s) for s in sources],
                                                 "neighbours_from_sources": round(share, 4)}
    if share < SUBGROUP_SOURCE_SHARE:
        return False
    a.subgroups[c] = minority
    return True


def _verdict(ds, votes, backdoored, possible, evidence, uploaded: bool) -> Finding:
    what = "the uploaded model" if uploaded else "a proxy network trained on the dataset"
    technique = "AML.T0018" if uploaded else "AML.T0020"
    agreement = "; ".join(f"class {_label(ds, c)}: {', '.join(v)}" for c, v in votes.items()) or "no method points at any class"
    evidence = {**evidence, "backdoored": bool(backdoored), "target_classes": [_label(ds, c) for c in backdoored],
                "possible_target_classes": [_label(ds, c) for c in possible]}
    if backdoored:
        names = ", ".join(str(_label(ds, c)) for c in backdoored)
        return Finding(f"the model is backdoored toward class {names}", Severity.critical,
                       round(max(len(votes[c]) for c in backdoored) / 3, 3),
                       f"At least two independent methods point at class {names} in {what} ({agreement}). "
                       f"{_strip_text(evidence['strip'])}",
                       remediation="Do not register or deploy this model. Retrain it without the quarantined samples "
                       "(the remediation finding has the cleaned dataset and a retrained model) and scan the result again.",
                       evidence=evidence, technique=technique)
    if possible:
        names = ", ".join(str(_label(ds, c)) for c in possible)
        # a trigger that fires is backdoor evidence; an unusually small reconstructed trigger or one class's split alone
        # also happen in models with no backdoor (an untrained network, naturally confusable classes)
        fired = any(votes[c] == ["probing"] for c in possible)
        return Finding(f"possible backdoor toward class {names} (one method)", Severity.medium if fired else Severity.low,
                       round(1 / 3, 3), f"One method points at class {names} in {what} ({agreement}); the others do not "
                       f"confirm it.{_two_class_note(ds)} {_strip_text(evidence['strip'])}",
                       remediation="Probe the model with the trigger you suspect (upload it as the scan's trigger) and "
                       "with a labelled clean holdout set; inspect the reconstructed trigger images.",
                       evidence=evidence, technique=technique)
    return Finding("no backdoor found in the model", Severity.info, 0.0,
                   f"No candidate trigger switches held-out inputs to one class, Neural Cleanse finds no class with an "
                   f"unusually small trigger, and the activation analysis finds no poisoned class in {what}."
                   f"{_two_class_note(ds)}", evidence=evidence, technique=technique)


def _two_class_note(ds) -> str:
    """What a two-class model leaves unchecked: the cross-class comparisons (a median and MAD over the classes) put
    each of two classes at +-0.67 whatever the model, so only probing can confirm a target there."""
    if len(ds.classes) != 2:
        return ""
    return (" With two classes, Neural Cleanse's and SCAn's anomaly indices and the activation split's cross-class test "
            "cannot single out a class (each compares a class with the others: a median and MAD over two values), so "
            "only trigger probing can confirm a target; a probe with a suspected trigger or a labelled clean holdout "
            "is the stronger check for this model.")


def _confirmed_poison(a: Assessment, votes: dict[int, list[str]], backdoored: list[int]) -> list[dict]:
    """The poisoned samples of each confirmed target class, with the methods that agree: the activation analysis's
    (its posterior times the confirmed belief), else, where it did not flag the class (a blended trigger, a
    source-specific one), SCAn's minority identity of the class where it split it, else the samples the model
    represents like triggered inputs."""
    from worker.keras_model import embed

    analysis, ds = a.run.analysis, a.ds
    flagged = []
    covered = analysis.flagged_classes
    for c in backdoored:
        belief = BELIEF_CONFIRMED if len(votes[c]) >= 3 else BELIEF_TWO_METHODS
        agree = "+".join(votes[c])
        if c in covered:
            rows = analysis.flagged[ds.y[analysis.flagged] == c]
            flagged += [{"index": int(i), "reason": "backdoor poison (confirmed target)", "method": f"assessment({agree})",
                         "attack": "backdoor", "confidence": round(belief * float(analysis.suspicion[i]), 4)} for i in rows]
        elif c in _scan_targets(a.run) or c in a.subgroups:  # a minority identity of the class (source-specific)
            rows = a.run.untangled.minority[c]
            flagged += [{"index": int(i), "reason": "backdoor poison (a second identity inside the target class)",
                         "method": f"untangling({agree})", "attack": "backdoor", "confidence": belief * ANCHORED_SHARE}
                        for i in rows]
        else:
            rows = _anchor(a, lambda x: embed(a.run.model, x), c, np.flatnonzero(ds.y == c))
            flagged += [{"index": int(i), "reason": "backdoor poison (represented like triggered inputs)",
                         "method": f"trigger_anchored({agree})", "attack": "backdoor", "confidence": belief * ANCHORED_SHARE}
                        for i in rows]
    return flagged


def _activation_evidence(ds, run) -> dict:
    clustering = {str(_label(ds, c.label)): {"flagged": int(len(c.flagged)), "methods_agreement_jaccard": c.agreement,
                                             "stands_out": c.stands_out} for c in run.analysis.classes if c.suspicious}
    u = run.untangled
    if u is None:
        return clustering
    scan = {"method": "SCAn (Tang et al. 2021): two-identity untangling per class, anomaly index across classes",
            "threshold": round(u.threshold, 3), "targets": [_label(ds, c) for c in _scan_targets(run)],
            "anomaly_index": {str(_label(ds, c)): round(float(v), 3) for c, v in enumerate(u.anomaly) if np.isfinite(v)},
            "minority": {str(_label(ds, c)): int(len(u.minority.get(c, []))) for c in _scan_targets(run)}}
    return {**clustering, "untangling": scan}


def _scan_targets(run) -> list[int]:
    return [] if run.untangled is None else [c for c in run.untangled.targets if c < run.ds.n_classes]


# ------------------------------------------------------------------------------------------------ STRIP

def _strip(a: Assessment, target_classes: list[int]) -> StripCheck:
    """Entropies of the flagged training samples (and, for a target class the activation analysis did not flag, of
    that class's samples) against held-out clean inputs; a sample under the clean 1% quantile is confirmed."""
    from worker.keras_model import as_model_input
    from worker.strip import strip_entropy, threshold

    predict, ds, analysis, held, spec, config, seed = a.predict, a.ds, a.run.analysis, a.held, a.probing.spec, a.config, a.seed
    rng = np.random.default_rng(seed + 2)
    copies = config.strip_copies
    flagged_classes = analysis.flagged_classes
    rows = np.asarray(analysis.flagged, dtype=np.int64)
    extra = np.flatnonzero(np.isin(ds.y, [c for c in target_classes if c not in flagged_classes]))
    rows = np.union1d(_cap(rows, 1000, rng), _cap(extra, 2000, rng))
    reference = held.x[_cap(np.arange(len(held.y)), 500, rng)]
    clean = strip_entropy(predict, reference, held.x, spec.lo, spec.hi, copies=copies, seed=seed)
    cut = threshold(clean)
    report = {"copies": copies, "threshold_bits": round(cut, 4), "clean_mean_bits": round(float(clean.mean()), 4),
              "checked": int(len(rows))}
    if not len(rows):
        return StripCheck(report | {"confirmed_share": None}, np.empty(0, np.int64))
    entropy = strip_entropy(predict, as_model_input(ds.x[rows], a.shape), held.x, spec.lo, spec.hi, copies=copies, seed=seed + 3)
    low = rows[entropy < cut]
    flagged_part = np.isin(rows, analysis.flagged)
    report |= {"flagged_mean_bits": round(float(entropy[flagged_part].mean()), 4) if flagged_part.any() else None,
               "confirmed_share": round(float((entropy[flagged_part] < cut).mean()), 4) if flagged_part.any() else None,
               "low_entropy": int(len(low))}
    return StripCheck(report, low)


def _strip_text(strip: dict) -> str:
    if strip.get("confirmed_share") is None:
        return "STRIP had no flagged training samples to check."
    return (f"STRIP confirms {strip['confirmed_share']:.0%} of the flagged training samples (mean entropy "
            f"{strip['flagged_mean_bits']:.2f} bits against {strip['clean_mean_bits']:.2f} for clean inputs).")


# ------------------------------------------------------------------------------------------------ remediation

def _remediate(a: Assessment, votes: dict[int, list[str]], targets: list[int], quarantined: np.ndarray,
               min_confidence: float, progress) -> Finding:
    """Remove the quarantine, retrain, re-test with every trigger known for the targets. While the backdoor stays,
    the retrained model is asked which of the remaining samples of a target class it still represents like
    triggered inputs; they join the quarantine (``flagged``) and the next round retrains without them
    (``remediation_rounds``). Where removal alone does not get there, the last model unlearns the triggers
    (``unlearn``: Neural Cleanse's fine-tuning on kept samples that carry a known trigger and keep their own label).
    What is removed is always what the report quarantines: samples found later join it only at ``min_confidence``.
    Stops at attack success <= 2%, or at the rounds or ``remediation_budget_s``; every round is reported."""
    run, held, config, outputs = a.run, a.held, a.config, a.outputs
    compile_config = _compile_config(a.inputs.model.path) if run.source["model"] == "uploaded" else None
    max_rounds = config.remediation_rounds
    budget, started = config.remediation_budget_s, time.perf_counter()
    baseline = held.rows is not None and config.baseline_retrain
    steps = max_rounds + 1 + baseline  # the baseline, the retraining rounds and the unlearning, for progress
    accuracy_before = _accuracy_before(a, compile_config, progress if baseline else None, steps)
    acc_before = accuracy_before["before"]
    removed, found_later, rounds = np.unique(np.asarray(quarantined, dtype=np.int64)), [], []
    stopped = "the rounds ran out"
    for k in range(max_rounds):
        added = np.setdiff1d(removed, quarantined) if k else np.empty(0, np.int64)
        rounds.append(_retrain_round(a, removed, added, compile_config, targets, k + 1,
                                     lambda f, k=k: progress((baseline + k + f) / steps)))
        if rounds[-1].removed or not targets:
            stopped = "the backdoor is gone" if targets else "no backdoor target to re-test"
            break
        if time.perf_counter() - started > budget:
            stopped = f"the remediation budget ({budget:.0f} s) was spent"
            break
        more = [m for m in _still_poisoned(a, rounds[-1], votes, removed) if m["confidence"] >= min_confidence]
        if not more:
            stopped = "the retrained model points at no further samples"
            break
        found_later += more
        removed = np.union1d(removed, [m["index"] for m in more])
    if targets and not rounds[-1].removed and config.unlearn:
        rounds.append(_unlearn_round(a, rounds[-1], removed, targets,
                                     lambda f: progress((baseline + max_rounds + f) / steps)))
        stopped = "the backdoor is gone after unlearning" if rounds[-1].removed else stopped + "; unlearning did not remove it"
    last = rounds[-1]
    last.model.save(outputs.reserve("retrained-model.keras"))
    saved = outputs.register("retrained-model.keras", media_type="application/octet-stream",
                             description="the model retrained without the quarantined samples"
                             + (" and fine-tuned to unlearn the trigger" if last.step == "unlearn" else ""))
    kept_accuracy = last.clean_accuracy_after >= acc_before - ACCURACY_TOLERANCE
    evidence = {"rounds": [r.evidence() for r in rounds], "retrained_model": saved, "backdoor_removed": last.removed,
                "clean_accuracy": accuracy_before | {"after": last.clean_accuracy_after, "on": held.source,
                                                     "within_tolerance": kept_accuracy, "tolerance": ACCURACY_TOLERANCE},
                "goal_reached": bool(last.removed and kept_accuracy), "stopped_because": stopped,
                "removed_samples": int(len(removed)),
                # the cleaned dataset is the scan's: the dataset without the report's quarantine (cleaned-dataset.npz)
                "flagged": found_later}
    text = " ".join(_round_text(r, acc_before, held.source) for r in rounds) + f" Stopped because {stopped}."
    if not targets:  # remediate="always" on a model with no backdoor found: nothing to re-test
        return Finding("retrained without the quarantined samples (no backdoor target to re-test)", Severity.info, 0.0,
                       text, evidence=evidence)
    if last.removed:
        return Finding("remediation removed the backdoor", Severity.info, 0.0,
                       text + ("" if kept_accuracy else f" Clean accuracy dropped by more than {ACCURACY_TOLERANCE:.0%}: "
                               "retrain longer on the cleaned dataset."),
                       remediation="Review the cleaned dataset, retrain your production model on it, and scan the result.",
                       evidence=evidence)
    return Finding("remediation did not remove the backdoor", Severity.high, round(last.worst_after, 3), text,
                   remediation="Obtain the training data from a trusted source, or inspect the classes named here by hand; "
                   "do not deploy a model trained on this data.", evidence=evidence)


def _retrain(a: Assessment, removed: np.ndarray, compile_config: dict | None, progress):
    """A model of the analysed model's architecture (or the proxy's), trained from fresh weights on the dataset
    without ``removed`` and the held-out rows; returns it and the training facts."""
    from worker.remediation import retrain_clone

    run, held, config, seed = a.run, a.held, a.config, a.seed
    ds = run.ds
    keep = np.setdiff1d(np.arange(len(ds.y)), removed)
    train = keep if held.rows is None else np.setdiff1d(keep, held.rows)
    epochs, budget = config.retrain_epochs, config.retrain_budget_s
    if run.source["model"] == "uploaded":
        model, facts = retrain_clone(run.model, compile_config, ds.x[train], ds.y[train], epochs=epochs,
                                     batch=config.retrain_batch, seed=seed, budget_s=budget,
                                     progress=progress)
    else:
        from worker.proxy_network import train_proxy

        model, facts = train_proxy(ds.x[train], ds.y[train], ds.kind, seed=seed, epochs=config.proxy_epochs,
                                   budget_s=budget, progress=progress)
    return model, facts | {"samples": int(len(train))}


def _accuracy_before(a: Assessment, compile_config: dict | None, progress, steps: int) -> dict:
    """The clean accuracy that remediation must keep. The analysed model trained on the dataset's own held-out rows,
    so its accuracy there is inflated; with ``progress`` (held-out rows from the dataset, ``baseline_retrain``), the
    reference is a model retrained the same way on the same rows with nothing removed, and the analysed model's
    figure is reported beside it."""
    from worker.keras_model import predictor
    from worker.remediation import accuracy

    analysed = round(accuracy(a.predict, a.held.x, a.held.y), 4)
    if progress is None:
        return {"before": analysed, "before_is": "the analysed model's"}
    model, facts = _retrain(a, np.empty(0, np.int64), compile_config, lambda f: progress(f / steps))
    return {"before": round(accuracy(predictor(model), a.held.x, a.held.y), 4),
            "before_is": "a model retrained the same way on the whole dataset (nothing removed)",
            "analysed_model": analysed, "baseline_retraining": facts}


def _retrain_round(a: Assessment, removed: np.ndarray, added: np.ndarray, compile_config: dict | None,
                   targets: list[int], number: int, progress) -> RetrainRound:
    """Retrain from fresh weights without ``removed`` (and the held-out rows), then re-test."""
    from worker.keras_model import predictor

    retrained, facts = _retrain(a, removed, compile_config, progress)
    rule = ("the quarantine" if number == 1 else
            f"the quarantine and {len(added)} samples that earlier retrained models still represented like triggered inputs")
    return _tested_round(a, "retrain", number, rule, removed, added, facts, retrained, targets, predictor(retrained))


def _unlearn_round(a: Assessment, previous: RetrainRound, removed: np.ndarray, targets: list[int], progress) -> RetrainRound:
    """Fine-tune the last retrained model on kept samples of which a share carry the known triggers of the targets
    with their own labels (Wang et al., Neural Cleanse, S&P 2019: unlearning): the model learns that the trigger
    means nothing, where removing samples could not find all the poison. Samples of a target class that the model
    still represents like triggered inputs are left out of the fine-tuning (under the quarantine's threshold, they
    stay in the cleaned dataset): they would teach the trigger again."""
    import keras

    from worker.keras_model import as_model_input, embed, predictor
    from worker.proxy_network import fit_within_budget
    from worker.remediation import targets_for

    run, held, config, seed, spec = a.run, a.held, a.config, a.seed, a.probing.spec
    ds, model = run.ds, previous.model
    rng = np.random.default_rng(seed + 5)
    keep = np.setdiff1d(np.arange(len(ds.y)), removed)
    suspects = [_anchor(a, lambda v: embed(model, v), c, np.intersect1d(keep, np.flatnonzero(ds.y == c))) for c in targets]
    keep = np.setdiff1d(keep, np.concatenate([np.empty(0, np.int64), *suspects]))
    train = _cap(keep if held.rows is None else np.setdiff1d(keep, held.rows), config.unlearn_samples, rng)
    x = as_model_input(ds.x[train], a.shape).copy()
    triggers = [t for c in targets for t in _triggers_for(a, c)]
    stamped = rng.random(len(train)) < UNLEARN_SHARE
    which = rng.integers(len(triggers), size=len(train))
    for i, t in enumerate(triggers):
        rows = np.flatnonzero(stamped & (which == i))
        x[rows] = t.stamp(x[rows], spec.lo, spec.hi)
    keras.utils.set_random_seed(seed)
    y = targets_for(model, ds.y[train], int(model.outputs[0].shape[-1]))
    epochs, started = config.unlearn_epochs, time.perf_counter()
    ran = fit_within_budget(lambda: model.fit(x, y, batch_size=config.retrain_batch, epochs=1, verbose=0,
                                              shuffle=True), epochs, config.retrain_budget_s, progress)
    facts = {"architecture": previous.retraining["architecture"], "epochs_run": ran, "epochs_planned": epochs,
             "samples": int(len(train)), "stamped": int(stamped.sum()), "left_out_as_suspect": int(sum(map(len, suspects))), "triggers": [t.name for t in triggers],
             "train_s": round(time.perf_counter() - started, 1), "seed": seed}
    return _tested_round(a, "unlearn", previous.round + 1,
                         f"fine-tuned on {len(train)} kept samples, {int(stamped.sum())} of them carrying a known trigger "
                         "with their own label", removed, np.empty(0, np.int64), facts, model, targets, predictor(model))


def _tested_round(a, step, number, rule, removed, added, facts, model, targets, after) -> RetrainRound:
    from worker.remediation import accuracy

    retest = _retest(a, targets, after)
    worst = max((t["after"] for t in _deciding(retest)), default=0.0)
    return RetrainRound(round=number, step=step, rule=rule, removed_samples=int(len(removed)), added_samples=int(len(added)),
                        retraining=facts, attack_success=retest, clean_accuracy_after=round(accuracy(after, a.held.x, a.held.y), 4),
                        worst_after=worst, removed=worst <= REMEDIATED_ASR, model=model)


def _still_poisoned(a: Assessment, last: RetrainRound, votes: dict[int, list[str]], removed: np.ndarray) -> list[dict]:
    """Samples of each target class whose trigger still fires after ``last`` that the retrained model represents like
    triggered inputs: the poison the quarantine missed, found by a model that learned the backdoor from fewer
    samples. Only a confirmed target (two methods or more) adds to the quarantine."""
    from worker.keras_model import embed

    still = {t["class"] for t in _deciding(last.attack_success) if t["after"] > REMEDIATED_ASR}
    found = []
    for c, methods in votes.items():
        if len(methods) < 2 or _label(a.ds, c) not in still:
            continue
        candidates = np.setdiff1d(np.flatnonzero(a.ds.y == c), removed)
        if a.held.rows is not None:
            candidates = np.setdiff1d(candidates, a.held.rows)
        rows = _anchor(a, lambda x: embed(last.model, x), c, candidates)
        belief = (BELIEF_CONFIRMED if len(methods) >= 3 else BELIEF_TWO_METHODS) * ANCHORED_SHARE
        found += [{"index": int(i), "reason": f"backdoor poison (round {last.round}'s retrained model still represents it "
                   "like triggered inputs)", "method": f"retrained_anchor({'+'.join(methods)})", "attack": "backdoor",
                   "confidence": round(belief, 4)} for i in rows]
    return found


def _deciding(retest: list[dict]) -> list[dict]:
    """The re-test rows that decide whether the backdoor is gone, where attack success could be measured."""
    return [t for t in retest if t["decides"] and not np.isnan(t["after"])]


def _round_text(r: RetrainRound, acc_before: float, source: str) -> str:
    asr = "; ".join(f"{t['trigger']} to class {t['class']}: {t['before']:.1%} -> {t['after']:.1%}" for t in r.attack_success)
    outcome = ("there was no trigger to re-test" if not r.attack_success
               else "the backdoor is gone" if r.removed else "the backdoor is still there")
    what = (f"Round {r.round}: retrained ({r.retraining['architecture']}, {r.retraining['epochs_run']} epochs) without "
            f"{r.removed_samples} samples ({r.rule})" if r.step == "retrain" else f"Round {r.round}: unlearning, {r.rule}")
    return (f"{what}; {outcome}. Attack success {asr or 'not measured'}; clean accuracy {acc_before:.1%} -> "
            f"{r.clean_accuracy_after:.1%} on {source}.")


def _anchor(a: Assessment, represent, c: int, candidates: np.ndarray) -> np.ndarray:
    """Which ``candidates`` (rows labelled ``c``) ``represent`` (a model's penultimate layer) places with held-out
    inputs carrying the best trigger known for ``c`` (of its source classes, for a source-specific one) rather than
    with the class's own held-out inputs."""
    from worker.remediation import trigger_anchored

    held, spec = a.held, a.probing.spec
    trigger = _triggers_for(a, c)[0]
    sources = _sources(a, trigger, c)
    clean = held.x[held.y == c]
    others = held.x[np.isin(held.y, sources) if sources else held.y != c][:1000]
    if len(clean) < 10 or not len(others) or not len(candidates):
        return np.empty(0, np.int64)
    return candidates[trigger_anchored(represent, a.ds.x[candidates], trigger.stamp(others, spec.lo, spec.hi), clean)]


def _triggers_for(a: Assessment, c: int) -> list:
    """The triggers known for class ``c``, best first: the user's (when it fires toward ``c``), the strongest library
    candidate that fired, the reconstructed one."""
    from worker.triggers import Trigger, suspected

    probing, result = a.probing, a.reconstruction.result
    user = probing.user
    known = [user.trigger] if user is not None and c in suspected(user, probing.rate_without) else []
    if c in probing.strongest and probing.strongest[c].trigger not in known:
        known.append(probing.strongest[c].trigger)
    return known + [Trigger(f"reconstructed trigger (class {_label(a.ds, c)})", "reconstructed", result.masks[c], result.patterns[c])]


def _sources(a: Assessment, trigger, c: int) -> list[int] | None:
    """The source classes of a trigger that fires toward ``c`` from some classes only (None: from every class)."""
    from worker.triggers import SUSPECT_ASR

    probed = [r for r in [a.probing.user, a.probing.strongest.get(c)] if r is not None and r.trigger is trigger]
    if not probed or probed[0].asr[c] >= SUSPECT_ASR:
        return None
    return probed[0].sources(c) or None


def _retest(a: Assessment, targets: list[int], after) -> list[dict]:
    """Attack success before (the analysed model) and ``after`` (a retrained model's predictor), for each target class
    and each trigger known for it (on its source classes, for a source-specific trigger)."""
    from worker.remediation import attack_success

    ds, held, spec, before = a.ds, a.held, a.probing.spec, a.predict
    rows = []
    for c in targets:
        triggers = _triggers_for(a, c)
        for t in triggers:
            stamp = lambda x, t=t: t.stamp(x, spec.lo, spec.hi)  # noqa: E731
            sources = _sources(a, t, c)
            # a reconstructed trigger is partly an adversarial patch for the old model: it decides only when no real
            # trigger (the user's, or a library candidate that fired) is known for the class
            rows.append({"class": _label(ds, c), "trigger": t.name, "family": t.family,
                         "sources": [_label(ds, s) for s in sources] if sources else "all other classes",
                         "decides": t.family != "reconstructed" or len(triggers) == 1,
                         "before": round(attack_success(before, held.x, held.y, stamp, c, sources), 4),
                         "after": round(attack_success(after, held.x, held.y, stamp, c, sources), 4)})
    return rows


def _compile_config(path) -> dict | None:
    """The uploaded model's saved optimizer, loss and metrics (loaded safely once more, compiled this time)."""
    from worker.keras_model import load_keras_safely

    try:
        return load_keras_safely(path, compile=True).get_compile_config()
    except Exception:  # noqa: BLE001  (no or custom compile settings: the clone gets the usual ones)
        return None


# ------------------------------------------------------------------------------------------------ helpers

def _cap(rows: np.ndarray, n: int, rng) -> np.ndarray:
    return np.sort(rng.choice(rows, size=n, replace=False)) if len(rows) > n else rows


def _round(a: np.ndarray) -> list[float]:
    return [round(float(v), 4) for v in a]


def _safe(label) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", str(label))[:40] or "x"
