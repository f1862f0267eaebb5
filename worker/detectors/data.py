"""Data layer (ATLAS AML.T0020 Poison Training Data): label flips, targeted flips, outliers,
near-duplicates and conflicting duplicates, found with Cleanlab on out-of-sample probabilities."""

import hashlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from worker.context import ScanContext
from worker.detector_config import DataPoisoningConfig
from worker.findings import Finding, ScanInputs, Severity
from worker.label_evidence import EXCESS_MIN_COUNT
from worker.registry import registry

DATALAB_WORKING_MEMORY_MB = 128
FLOOR_MIN_POSTERIOR = 0.5  # a sample is a suspected flip when its label is more likely flipped than not


# With a model uploaded, its embeddings are the features: TensorFlow work, so the scan goes to the gpu queue.
@registry.register(name="data_poisoning", layer="data", technique="AML.T0020", needs=("dataset",), gpu_with=("model",),
                   uses=("dataset", "model", "quarantine"), config=DataPoisoningConfig, after=("text_poisoning",))
def data_poisoning(inputs: ScanInputs, config: dict, progress, context: ScanContext) -> list[Finding]:
    """Finds mislabeled samples (and targeted source->target flips), outliers, near- and conflicting duplicates with Cleanlab.

    With a labelled ``holdout`` upload, the labels are also judged against it (``reference_findings``): the one way to
    see a targeted flip large enough to be the data's own definition of a class.

    config: ``DataPoisoningConfig`` (``label_column``, ``folds``, ``model``, ``seed``, ``features``, ``layer``,
    ``datalab_max_rows``).
    """
    from worker.proxy import cross_val_probs, features_for, fit_proxy

    settings = DataPoisoningConfig.model_validate(config)
    progress("load", 0.0)
    ds = context.dataset(settings.label_column, settings.text_column)
    progress("features", 0.05)
    features, notes = model_features(context, ds, settings, progress)
    model = settings.model
    if features is None:
        features = features_for(ds.x, ds.kind, seed=settings.seed)
        model = proxy_model(ds, settings)
    if ds.n_classes < 2:  # unlabelled (instruction data): no label to check, but outliers and duplicates still count
        progress("datalab", 0.85)
        return notes + datalab_findings(ds, features, None, max_rows=settings.datalab_max_rows, seed=settings.seed)
    progress("folds", 0.15)  # for a small set, five folds per logistic C tried
    probs, strength = fit_proxy(features, ds.y, folds=settings.folds, model=model, seed=settings.seed,
                                progress=lambda stage, frac: progress(f"folds:{stage}", 0.15 + 0.6 * frac))
    C = strength or 1.0
    progress("cleanlab", 0.75)

    def refit(suspects: np.ndarray) -> np.ndarray:  # the same folds and proxy, none trained on the suspects
        return cross_val_probs(features, ds.y, folds=settings.folds, model=model, seed=settings.seed, C=C,
                               exclude=suspects, progress=lambda stage, frac: progress(f"refit:{stage}", 0.75 + 0.1 * frac))

    proxy = {"model": "logistic regression", "C": strength} if strength else {"model": "mlp"}
    # samples an earlier detector already holds as poisoned (a text trigger's carriers: text_poisoning runs first)
    findings = notes + label_findings(ds, probs, refit, proxy=proxy, explained=context.quarantine())
    if inputs.holdout is not None:
        progress("reference", 0.8)
        findings += reference_findings(inputs, ds, settings)
    progress("datalab", 0.85)
    findings += datalab_findings(ds, features, probs, max_rows=settings.datalab_max_rows, seed=settings.seed)
    findings += conflicting_duplicates(ds)
    return findings


def proxy_model(ds, settings: DataPoisoningConfig) -> str:
    """The proxy for the data's own features: "auto" picks the MLP from 2,000 training rows, except for texts, whose
    features are a linear projection of their TF-IDF terms (``worker.text_features``): a logistic regression, its C
    chosen on held-out data, at every size. The MLP reads no more labels right there (SST-2 71.7% against 71.4%, SMS,
    UCI reviews and AG News the same) and is confidently wrong on sentences a bag of words misreads, which the flip
    floor took for flips: a clean SST-2 (6,920 sentences) failed with "about 416 labels (6.0%) flipped"."""
    return "logistic" if ds.texts is not None and settings.model == "auto" else settings.model


def model_features(context: ScanContext, ds, settings: DataPoisoningConfig, progress) -> tuple[np.ndarray | None, list[Finding]]:
    """The uploaded model's own representation of each sample, when it can be loaded safely (the context's model)."""
    if context.inputs.model is None or settings.features == "proxy":
        return None, []
    from worker.keras_model import embed, representation_layer

    try:
        model = context.model()
        layer = representation_layer(model, settings.layer).name
        features = embed(model, ds.x, layer=layer, progress=lambda f: progress("embeddings", 0.05 + 0.1 * f))
    except Exception as exc:  # a model we cannot or will not use still leaves the proxy features
        return None, [Finding("model not used for features", Severity.info, 0.0,
                              f"Features come from a proxy instead of the uploaded model: {type(exc).__name__}: {exc}",
                              evidence={"features": "proxy"})]
    return features, [Finding(f"features: the model's '{layer}' layer", Severity.info, 0.0,
                              f"Out-of-sample probabilities were computed on the uploaded model's {features.shape[1]}-dimensional "
                              f"'{layer}' activations (loaded in safe mode after the static checks).",
                              evidence={"features": "model", "layer": layer, "dims": int(features.shape[1])})]


def label_findings(ds, probs: np.ndarray, refit: Callable[[np.ndarray], np.ndarray] | None = None, *,
                   proxy: dict | None = None, explained: np.ndarray | None = None) -> list[Finding]:
    """Cleanlab's label issues, and what makes them poisoning rather than noise (``worker.label_evidence``): a
    targeted one-way flip, more confident contradictions than the model's own probabilities allow, or a floor of flips
    under even the most typical inputs. Issues without that evidence go to the review list, not the quarantine.
    ``refit(suspects)``: out-of-sample probabilities again, from models that never train on ``suspects``. ``proxy``:
    what produced the probabilities (reported in the evidence).

    ``explained``: samples already held as poisoned by another detector (a text trigger's carriers). The tests judge
    the other labels only: a backdoor's relabelled carriers contradict their content as flips do, and left in, their
    excess lent its confidence to the natural label noise around them (a trigger at 2% of AG News put 46 clean texts
    in the quarantine beside its 152 carriers). Label-flip poisoning must show in what the trigger does not explain,
    judged by models that did not train on the trigger's carriers (``refit``)."""
    from cleanlab.filter import find_label_issues

    from worker.label_evidence import calibrate, excess_confidence, noise_excess, targeted_pairs

    n, k = len(ds.y), probs.shape[1]
    explained = np.empty(0, np.int64) if explained is None else np.asarray(explained, dtype=np.int64)
    judged = np.setdiff1d(np.arange(n), explained)  # the rows the tests below see, in order
    if len(np.unique(ds.y[judged])) < 2:  # nothing left to judge a label against: judge them all
        explained, judged = explained[:0], np.arange(n)
    if len(explained) and refit is not None:
        # from models that never train on them either: trained on them, the proxy's probabilities on the other rows
        # shift too (AG News: 72 clean labels under 0.01 against 32 expected, beside a trigger at 2%)
        probs = refit(explained)
    # n_jobs=1: Celery runs us in a daemonic process, which may not start a multiprocessing pool
    # filter_by="both": a sample must be off-diagonal in the confident joint and below its class threshold (precision)
    issues = find_label_issues(ds.y, probs, filter_by="both", return_indices_ranked_by="self_confidence", n_jobs=1)
    suggested = probs.argmax(axis=1)
    p_given = probs[np.arange(n), ds.y]
    y_judged = ds.y[judged]
    calibrated, temperature = calibrate(probs[judged], y_judged)
    excess = noise_excess(calibrated, y_judged)
    pairs = [replace(p, rows=judged[p.rows]) for p in targeted_pairs(probs[judged], y_judged, calibrated)]
    # with label poisoning established for the dataset, an issue's confidence is the share of labels as improbable as
    # its own that natural noise does not explain; without it, issues are noise to review (confidence 0)
    confidence = np.zeros(n)
    if excess.poisoned:
        confidence[judged] = excess_confidence(calibrated, y_judged)
        confidence[np.setdiff1d(np.arange(n), issues)] = 0.0
    floor, posterior = _judged_floor(ds.y, probs, issues, refit, judged, explained)
    floored = np.flatnonzero(floor.poisoned[ds.y] & (posterior >= FLOOR_MIN_POSTERIOR))
    confidence[floored] = np.maximum(confidence[floored], posterior[floored])
    pair_of = {}
    for p in pairs:  # a targeted pair's samples carry the pair's confidence (they need not be Cleanlab issues)
        for i in p.rows:  # the pairs' rows are disjoint: one given label and one prediction per sample
            pair_of[int(i)] = p
            confidence[i] = max(confidence[i], p.confidence)
    flagged, review = [], []
    floored_set = set(floored.tolist())
    for i in sorted(set(issues.tolist()) | set(pair_of) | floored_set, key=lambda i: p_given[i]):
        conf = round(float(confidence[i]), 4)
        record = {"index": i, "given": _label(ds, ds.y[i]), "suggested": _label(ds, suggested[i]),
                  "score": round(float(1 - p_given[i]), 4)}
        if conf > 0:
            method = ("label_evidence.targeted_pairs" if i in pair_of else "label_evidence.flip_floor"
                      if i in floored_set and posterior[i] >= confidence[i] else
                      "cleanlab.find_label_issues+label_evidence.noise_excess")
            flagged.append(record | {"reason": "targeted label flip" if i in pair_of else "label issue",
                                     "method": method, "attack": "label_flip", "confidence": conf})
        else:
            review.append(record | {"reason": "label issue (no poisoning evidence)", "method": "cleanlab.find_label_issues"})
    share = len(issues) / n
    per_class = {str(_label(ds, c)): {"samples": int((ds.y == c).sum()), "flagged": int((ds.y[issues] == c).sum())} for c in range(k)}
    evidence = {"proxy": proxy, "flagged": flagged, "review": review, "per_class": per_class, "noise_excess": _excess_evidence(excess) | {"temperature": temperature},
                "flip_floor": _floor_evidence(ds, floor),
                "explained_elsewhere": len(explained),  # samples left out of the tests: another detector holds them
                "noise_pairs": noise_pairs(ds.y[issues], suggested[issues], k)[:20],
                # rows: given label, columns: label the model suggests, counted over the flagged samples
                "noise_matrix": {"classes": [_label(ds, c) for c in range(k)],
                                 "counts": noise_matrix(ds.y[issues], suggested[issues], k)} if k <= 100 else None}
    findings = [_noise_finding(ds, excess, floor, issues, share, evidence)]
    if held := int(np.isin(issues, explained).sum()):  # say which of the issues another detector already holds
        findings[0] = replace(findings[0], explanation=f"{findings[0].explanation} {held} of the {len(issues)} carry "
                              "poisoning evidence from another detector (a text trigger's carriers, in the quarantine "
                              "with its reasons); the label tests judged the other labels, with models that never "
                              "trained on those.")
    findings += [_targeted_finding(ds, p) for p in pairs]
    return findings


def reference_findings(inputs: ScanInputs, ds, settings: DataPoisoningConfig) -> list[Finding]:
    """Labels judged by a model trained only on the uploaded holdout set, a trusted clean reference
    (``worker.label_reference``)."""
    from worker.datasets import load_holdout
    from worker.label_reference import REFERENCE_ALPHA, check_against_reference

    hold, ref_y = load_holdout(inputs.holdout, ds, label_column=settings.label_column, text_column=settings.text_column)
    data_features, ref_features, make_judge = _reference_space(ds, hold, settings)
    check = check_against_reference(data_features, ds.y, ref_features, ref_y, ds.n_classes, make_judge,
                                    balanced=ds.texts is not None, seed=settings.seed)
    pairs = [{"given": _label(ds, p.given), "read_as": _label(ds, p.read_as), "observed": p.observed,
              "expected": round(p.expected, 1), "p_value": float(f"{p.p_value:.3g}"),
              "excess_share": round(p.excess_share, 4), "poisoned": p.poisoned} for p in check.pairs[:20]]
    evidence = {"reference_size": check.reference_size, "judge_accuracy": round(check.judge_accuracy, 4),
                "pairs": pairs, "classes_not_judged": [_label(ds, c) for c in check.skipped_classes]}
    poisoned = check.poisoned
    noisy = [p for p in check.pairs if not p.poisoned and p.p_value <= REFERENCE_ALPHA]
    if not poisoned and noisy:
        review = [{"index": int(i), "given": _label(ds, p.given), "suggested": _label(ds, p.read_as),
                   "score": round(float(c), 4), "method": "label_reference",
                   "reason": "label contradicted by the trusted reference (within natural annotation noise)"}
                  for p in noisy for i, c in zip(p.rows, p.posterior, strict=True) if c >= FLOOR_MIN_POSTERIOR]
        return [Finding(
            f"{len(review)} labels contradicted by the trusted reference, within natural annotation noise",
            Severity.low, 0.2,
            "More samples than the holdout-trained model's misreadings predict are read as another class, but fewer "
            "than 5% of the samples with their label: what annotation errors leave. Listed for review.",
            remediation="Review the listed samples' labels.", evidence=evidence | {"review": review})]
    if not poisoned:
        return [Finding("labels agree with the trusted reference", Severity.info, 0.0,
                        f"A model trained on the {check.reference_size} holdout samples (cross-validated accuracy "
                        f"{check.judge_accuracy:.1%}) reads the dataset's labels no more often as another class than it "
                        "misreads the holdout itself, beyond natural annotation noise.", evidence=evidence)]
    flagged = [{"index": int(i), "given": _label(ds, p.given), "suggested": _label(ds, p.read_as),
                "confidence": round(float(c), 4), "method": "label_reference", "attack": "label_flip",
                "reason": f"labelled {_label(ds, p.given)!r}; the trusted reference reads it as {_label(ds, p.read_as)!r}"}
               for p in poisoned for i, c in zip(p.rows, p.posterior, strict=True) if c >= FLOOR_MIN_POSTERIOR]
    named = "; ".join(f"{p.observed} labelled {_label(ds, p.given)!r} read as {_label(ds, p.read_as)!r} "
                      f"(expected {p.expected:.0f})" for p in poisoned)
    return [Finding(
        title=f"labels contradicted by the trusted reference: {named}",
        severity=Severity.high,
        score=min(1.0, max(0.5, max(p.excess_share for p in poisoned))),
        explanation=f"A model trained only on the {check.reference_size} samples of the uploaded holdout set "
        f"(cross-validated accuracy {check.judge_accuracy:.1%}) reads far more of these samples as another class than "
        "its misreadings of the holdout predict (beta-binomial test, Bonferroni over the label pairs), by more than "
        "natural annotation noise (5% of the samples with that label): labels flipped on purpose, which a model "
        "trained on the dataset alone learns and cannot see.",
        remediation="Remove the quarantined samples (the cleaned dataset does), or relabel them from a trusted source, "
        "and find who changed the labels.",
        evidence=evidence | {"flagged": flagged},
    )]


def _reference_space(ds, hold, settings: DataPoisoningConfig):
    """Features of the dataset and the holdout in one space, and the judge to train on the holdout: for texts, TF-IDF
    of the holdout's words and a class-balanced logistic regression (a few hundred texts of a minority class are too
    few for an unweighted one: on 1,000 SMS it caught 38% of the spam, balanced 85%); the proxy's features and model
    otherwise."""
    if ds.texts is not None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        from worker.text_triggers import TOKEN

        vectorizer = TfidfVectorizer(token_pattern=TOKEN.pattern, dtype=np.float32)
        ref_features = vectorizer.fit_transform(hold.texts)
        return vectorizer.transform(ds.texts), ref_features, \
            lambda: LogisticRegression(C=10.0, class_weight="balanced", max_iter=2000)
    from worker.datasets import DatasetError
    from worker.proxy import features_for, make_model

    if hold.x.shape[1:] != ds.x.shape[1:]:
        raise DatasetError(f"the holdout set's samples have shape {hold.x.shape[1:]} but the dataset's "
                           f"{ds.x.shape[1:]}: upload held-out samples in the dataset's format")
    both = features_for(np.concatenate([ds.x, hold.x.astype(ds.x.dtype, copy=False)]), ds.kind, seed=settings.seed)
    return both[:len(ds.y)], both[len(ds.y):], lambda: make_model(settings.model, len(hold.y), settings.seed)


def _judged_floor(y: np.ndarray, probs: np.ndarray, issues: np.ndarray, refit, judged: np.ndarray,
                  explained: np.ndarray):
    """``_flip_floor`` on the ``judged`` rows (the refit never trains on the ``explained`` ones either), and its
    posterior laid out over every row (0 for the explained)."""
    sub_issues = np.flatnonzero(np.isin(judged, issues))
    sub_refit = None if refit is None else (lambda suspects: refit(np.union1d(judged[suspects], explained))[judged])
    floor = _flip_floor(y[judged], probs[judged], sub_issues, sub_refit)
    posterior = np.zeros(len(y), dtype=np.float32)
    posterior[judged] = floor.posterior
    return floor, posterior


def _flip_floor(y: np.ndarray, probs: np.ndarray, issues: np.ndarray, refit):
    """``flip_floor``, decided on probabilities from models that did not train on the suspects (Cleanlab's issues and
    the first fit's likely flips: a model taught the flips learns them, which blurs the typical inputs they sit on).
    The samples' posteriors stay the first fit's, where every sample was predicted alike: leaving the suspects out of
    training makes the refit surer of exactly them, and a confidence must not be inflated by how it was chosen."""
    from worker.label_evidence import flip_floor

    first = flip_floor(probs, y)
    suspects = np.union1d(issues, np.flatnonzero(first.posterior >= FLOOR_MIN_POSTERIOR))
    if refit is None or len(suspects) < EXCESS_MIN_COUNT:  # too few to have taught the model anything
        return first
    decided = flip_floor(refit(suspects), y)
    return replace(decided, posterior=first.posterior)


def _floor_evidence(ds, floor) -> dict:
    return {"poisoned": [_label(ds, c) for c in np.flatnonzero(floor.poisoned)], "temperature": floor.temperature,
            "rates": {str(_label(ds, c)): float(r) for c, r in enumerate(floor.rates)},
            "expected_flips": {str(_label(ds, c)): float(e) for c, e in enumerate(floor.expected_flips)},
            "pvalues": {str(_label(ds, c)): float(f"{p:.3g}") for c, p in enumerate(floor.pvalues)}}


def _excess_evidence(excess) -> dict:
    return {"poisoned": excess.poisoned, "cutoff": excess.cutoff, "observed": excess.observed,
            "expected": round(excess.expected, 2), "pvalue": float(f"{excess.pvalue:.3g}"), "bins": excess.bins}


def _noise_finding(ds, excess, floor, issues, share: float, evidence: dict) -> Finding:
    n = len(ds.y)
    if floor.any and not excess.poisoned:
        into = [c for c in np.flatnonzero(floor.poisoned)]
        flips = float(floor.expected_flips[into].sum()) if len(floor.rates) == 2 else float(floor.expected_flips.sum())
        where = (f"labelled {_label(ds, into[0])!r}" if len(into) == 1 and len(floor.rates) == 2 else "in every class")
        return Finding(
            title=f"label poisoning: about {flips:.0f} labels ({flips / n:.1%}) flipped, {where}",
            severity=Severity.high, score=round(min(1.0, max(0.5, flips / max(1, len(issues)))), 3),
            explanation=f"Labels contradict even the inputs a model that never saw them is surest of, at a steady rate "
            f"({', '.join(f'{r:.1%}' for r in floor.rates[into])}; likelihood-ratio test against no such floor, "
            f"p = {float(floor.pvalues[into].min()):.2g}). Natural label noise sits on ambiguous inputs and vanishes on "
            f"typical ones; labels flipped regardless of the input (random or one-way label-flip poisoning, AML.T0020) "
            f"leave this floor. {len(issues)} samples ({share:.1%}) are Cleanlab label issues in all.",
            remediation="Quarantine the flagged samples (each carries the probability that its label was flipped), find "
            "where they came from, and relabel or drop them before training.",
            evidence=evidence)
    if excess.poisoned:
        return Finding(
            title=f"label poisoning: {int(round(excess.excess))} labels ({excess.excess / n:.1%}) contradict the data "
            f"beyond natural noise",
            severity=Severity.high, score=round(1 - excess.expected / excess.observed, 3),
            explanation=f"A model that never saw them gives {excess.observed} samples' labels a probability under "
            f"{excess.cutoff:g}; its own probabilities allow {excess.expected:.0f} such labels (p = {excess.pvalue:.2g}). "
            f"Labels the inputs leave no doubt about, in that excess, are what random label-flip poisoning "
            f"(AML.T0020) leaves; natural label noise stays near the expectation. {len(issues)} samples ({share:.1%}) "
            f"are Cleanlab label issues in all.",
            remediation="Quarantine the flagged samples (each carries its confidence and the label the model suggests), "
            "find where they came from, and relabel or drop them before training.",
            evidence=evidence)
    return Finding(
        title=f"{len(issues)} samples ({share:.1%}) look mislabeled, within natural label noise",
        severity=Severity.low if len(issues) else Severity.info, score=0.0,
        explanation="A model that never saw these samples predicts another class than their label (Cleanlab, out-of-sample "
        "probabilities). Their number stays within what the model's own uncertainty explains (at most "
        f"{max(0, int(round(excess.excess)))} beyond it): label noise or class confusion, not evidence of poisoning. "
        "They are in the review list, not the quarantine.",
        remediation="Review the listed samples (most suspicious first) if label quality matters for this model.",
        evidence=evidence)


def noise_matrix(given: np.ndarray, suggested: np.ndarray, k: int) -> list[list[int]]:
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (given, suggested), 1)
    return counts.tolist()


def noise_pairs(given: np.ndarray, suggested: np.ndarray, k: int) -> list[dict]:
    """Flagged samples counted per (given label, label the model suggests) pair, largest first."""
    counts = np.array(noise_matrix(given, suggested, k), dtype=np.int64)
    per_given = counts.sum(axis=1)
    pairs = [{"given": int(g), "suggested": int(t), "count": int(counts[g, t]), "share_of_given_issues": float(counts[g, t] / per_given[g])}
             for g, t in zip(*np.nonzero(counts), strict=True) if g != t]
    return sorted(pairs, key=lambda p: -p["count"])


def _targeted_finding(ds, p) -> Finding:
    """Samples of one source class relabelled as one target class: a targeted poisoning signal."""
    src, dst = _label(ds, p.source), _label(ds, p.target)
    return Finding(
        title=f"targeted label flip: class {src} -> {dst} ({p.count} samples)",
        severity=Severity.high,
        score=p.confidence,
        explanation=f"{p.count} samples labelled {dst} look like class {src} to a model that never saw them, against "
        f"{p.reverse} labelled {src} that look like {dst}; natural confusion would give about {p.expected:.0f} "
        f"(binomial test, corrected p = {p.pvalue:.2g}; robust z {p.robust_z:.1f} against the other class pairs). "
        f"{p.confident} of them get under {p.cutoff:g} probability for their label where the calibrated model expects "
        f"{p.confident_expected:.0f}: they look plainly like {src}, not ambiguous. Confusion that runs one way only is what relabelling one source class as one target (AML.T0020) leaves.",
        remediation=f"Quarantine the samples labelled {dst} that look like {src}, find where they came from, "
        f"and test the trained model on class {src} inputs.",
        evidence={"source": src, "target": dst, "count": p.count, "reverse": p.reverse, "expected": p.expected,
                  "pvalue": float(f"{p.pvalue:.3g}"), "robust_z": p.robust_z, "confidence": p.confidence,
                  "confident": p.confident, "confident_expected": p.confident_expected, "cutoff": p.cutoff,
                  "target_class_size": int((ds.y == p.target).sum())},
    )


def datalab_findings(ds, features: np.ndarray, probs: np.ndarray | None, max_rows: int, seed: int) -> list[Finding]:
    from cleanlab import Datalab

    rows = np.arange(len(ds.y))
    if len(rows) > max_rows:  # indices below are positions in the sample; map them back through `rows`
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=max_rows, replace=False))
    lab = Datalab(data={"label": ds.y[rows]}, label_name="label", verbosity=0)
    import sklearn

    # scikit-learn's kNN search takes up to `working_memory` MB (default 1 GB) per distance block: keep workers lean
    with sklearn.config_context(working_memory=DATALAB_WORKING_MEMORY_MB):
        lab.find_issues(features=features[rows], pred_probs=None if probs is None else probs[rows],
                        issue_types={"outlier": {}, "near_duplicate": {}})
    table = lab.get_issues()
    sampled = {"searched_rows": int(len(rows)), "of_rows": int(len(ds.y))} if len(rows) < len(ds.y) else {}
    labels = ds.y[rows]
    findings = []
    outliers = np.flatnonzero(table["is_outlier_issue"].to_numpy())
    if len(outliers):
        scores = table["outlier_score"].to_numpy()
        ranked = outliers[np.argsort(scores[outliers])]
        findings.append(Finding(
            title=f"{len(outliers)} outliers ({len(outliers) / len(rows):.1%})",
            severity=Severity.low,
            score=min(1.0, len(outliers) / len(rows) * 10),
            explanation="Samples far from every other sample in feature space (Cleanlab Datalab, k-nearest neighbours). "
            "Injected samples often sit apart from the data they were slipped into.",
            remediation="Review the most outlying samples; drop those that do not belong to the task.",
            evidence={"review": [{"index": int(rows[i]), "reason": "outlier", "method": "cleanlab.Datalab(outlier)", "score": round(float(1 - scores[i]), 4)}
                                  for i in ranked]} | sampled,
        ))
    near = table["is_near_duplicate_issue"].to_numpy()
    if near.any():
        sets = lab.get_info("near_duplicate")["near_duplicate_sets"]
        conflicting = sorted({int(i) for i in np.flatnonzero(near) for j in sets[i] if labels[j] != labels[i]})
        findings.append(Finding(
            title=f"{int(near.sum())} near-duplicate samples, {len(conflicting)} with conflicting labels",
            severity=Severity.low,  # data quality: the review list, not evidence of an attack on its own
            score=min(1.0, len(conflicting) / max(1, int(near.sum()))),
            explanation="Near-identical samples (Cleanlab Datalab). Copies with different labels teach the model two answers for one "
            "input, a cheap way to poison a decision boundary; many copies of one sample over-weight it.",
            remediation="Deduplicate; for conflicting copies keep the verified label or drop both.",
            evidence={"review": [{"index": int(rows[i]), "reason": "near-duplicate with a conflicting label", "method": "cleanlab.Datalab(near_duplicate)"}
                                  for i in conflicting],
                      "near_duplicates": [int(rows[i]) for i in np.flatnonzero(near)][:1000]} | sampled,
        ))
    return findings


def conflicting_duplicates(ds) -> list[Finding]:
    """Byte-identical samples with different labels."""
    groups: dict[bytes, list[int]] = defaultdict(list)
    rows = ds.x.reshape(len(ds.x), -1)
    for i in range(len(rows)):
        groups[hashlib.blake2b(rows[i].tobytes(), digest_size=16).digest()].append(i)
    conflicts = [idx for idx in groups.values() if len(idx) > 1 and len(set(ds.y[idx].tolist())) > 1]
    if not conflicts:
        return []
    flagged = [{"index": i, "reason": "exact duplicate with a conflicting label", "method": "hash"} for idx in conflicts for i in idx]
    return [Finding(
        title=f"{len(conflicts)} groups of identical samples with conflicting labels ({len(flagged)} samples)",
        severity=Severity.low,  # data quality (duplicated records are common): the review list
        score=min(1.0, len(flagged) / len(ds.y) * 20),
        explanation="The same input appears with different labels. At most one label can be right; the others are noise or a "
        "deliberate flip of copied samples.",
        remediation="Keep one copy with the verified label, drop the rest.",
        evidence={"review": flagged, "groups": [[int(i) for i in g] for g in conflicts[:200]]},
    )]


def _label(ds, mapped: int):
    return ds.classes[int(mapped)]
