"""Text and instruction-tuning data (ATLAS AML.T0020; OWASP LLM04:2025): trigger tokens and phrases that force a label,
floods of near-copies labelled against their content, responses that repeat a payload or give a task's common answer
after a rare prompt n-gram, and instructions aimed at a downstream model.

The methods are ``worker.text_triggers``, ``worker.text_floods``, ``worker.instruction_payloads`` and
``worker.instruction_answers`` (pure functions over strings); this module turns their results into findings: the
carriers of a trigger, payload or forced answer and a flood's copies go to the quarantine with the trigger named,
prompt injections, phrase-labelled corpora and disputed near-duplicate groups to the review list. Texts quoted as
examples are cut short; the report layers escape them."""

import numpy as np

from worker.characters import shown
from worker.context import ScanContext
from worker.detector_config import TextBackdoorConfig, TextPoisoningConfig
from worker.findings import Finding, InputRejected, NotApplicable, ScanInputs, Severity
from worker.registry import registry

EXAMPLE_CHARS = 200


@registry.register(name="text_poisoning", layer="data", technique="AML.T0020", needs=("dataset",), uses=("dataset",),
                   config=TextPoisoningConfig)
def text_poisoning(inputs: ScanInputs, config: dict, progress, context: ScanContext) -> list[Finding]:
    """Trigger n-grams concentrated in one label, near-duplicate floods, payload backdoors and prompt injections in text
    datasets.

    config: ``TextPoisoningConfig`` (``label_column``, ``text_column``, ``max_ngram``, ``alpha``, ``examples``,
    ``flood_min_copies``, ``seed``).
    """
    settings = TextPoisoningConfig.model_validate(config)
    progress("load", 0.0)
    ds = context.dataset(settings.label_column, settings.text_column)
    if ds.texts is None:
        raise NotApplicable("not a text dataset")
    findings: list[Finding] = [Finding("dataset loaded with changes", Severity.info, 0.0, " ".join(ds.notes),
                                       evidence={"notes": list(ds.notes)})] if ds.notes else []
    if ds.n_classes >= 2:
        progress("triggers", 0.1)
        findings += trigger_findings(ds, settings)
        progress("floods", 0.6)
        findings += flood_findings(ds, settings)
    if ds.responses is not None:
        progress("payloads", 0.7)
        payloads = payload_findings(ds, settings)
        findings += payloads + answer_findings(ds, settings, covered=payloads)
    progress("injections", 0.9)
    findings += injection_findings(ds)
    if all(f.severity == Severity.info for f in findings):
        findings.append(_nothing_found(ds, settings))
    return findings


def _nothing_found(ds, settings: TextPoisoningConfig) -> Finding:
    searched = "trigger n-grams, near-duplicate floods" if ds.n_classes >= 2 else ""
    backdoors = "payload and answer backdoors"
    searched += (f", {backdoors}" if searched else backdoors) if ds.responses is not None else ""
    return Finding("no text trigger, payload or injection found", Severity.info, 0.0,
                   f"{len(ds.texts)} texts searched for {searched + ' and ' if searched else ''}prompt-injection "
                   f"patterns (n-grams up to {settings.max_ngram} words, false discovery rate {settings.alpha}).")


def trigger_findings(ds, settings: TextPoisoningConfig) -> list[Finding]:
    from worker.text_triggers import PLANTED_TRIGGERS_MAX, find_text_triggers

    triggers = find_text_triggers(ds.texts, ds.y, ds.n_classes, max_n=settings.max_ngram, alpha=settings.alpha,
                                  seed=settings.seed)
    # the insertion test (worker.text_insertion) at the search's level: a planted trigger is called written with
    # probability alpha at most
    written = [t for t in triggers if t.written_p <= settings.alpha]
    if len(triggers) <= PLANTED_TRIGGERS_MAX and not written:
        return [_trigger_finding(ds, t, settings.examples) for t in triggers]
    # labels defined by phrases: a phrase or a word can no longer be told from a planted one, but tokens inserted apart
    # into the same texts (a BadNL set) are no labelling scheme's, and stay a planted trigger
    planted = [t.scattered and t.written_p > settings.alpha for t in triggers]
    scattered = [t for t, p in zip(triggers, planted, strict=True) if p]
    phrases = [t for t, p in zip(triggers, planted, strict=True) if not p]
    return [_trigger_finding(ds, t, settings.examples) for t in scattered] + \
        ([_phrase_labelled(ds, phrases, written)] if phrases else [])


def _phrase_labelled(ds, triggers, written) -> Finding:
    """N-grams that each decide a label, where the corpus shows that its labels are defined by phrases (question types
    by their question words, sections by names): some were written with their texts (removing them breaks the texts:
    the insertion test rejects), or they are too many to be planted. That is what the trigger tests assume content
    does not do, and in such a corpus the others cannot be told from a planted trigger either: a question's type word
    leaves a gap that heals like an insertion ("what country is" -> "what is"). So every one of them is for review,
    not the quarantine; a backdoor inserts one trigger or a few into texts that read whole without them."""
    from worker.text_triggers import PLANTED_TRIGGERS_MAX

    names = [t.name for t in triggers]
    review = [{"index": int(i), "reason": f"label decided by the phrase {shown(t.name)}", "method": "text_triggers",
               "score": round(float(c), 4)} for t in triggers for i, c in zip(t.suspects, t.confidence, strict=True)
              if c >= 0.5]
    if written:
        listed = f"{', '.join(shown(t.name) for t in written[:4])}{', ...' if len(written) > 4 else ''}"
        why = (f"{len(written)} of them ({listed}) {'was' if len(written) == 1 else 'were'} written with their texts "
               "rather than inserted into them: with it removed, the words on either side of the gap rarely meet "
               "anywhere in the corpus, where a planted trigger leaves pairs that recur as often as any text's "
               "(insertion test; its p-values are in the evidence). Where some phrases are shown to define the labels, "
               "the data alone cannot tell the others from a planted trigger: a question's type word leaves a gap that "
               "heals like an insertion (\"what country is\" -> \"what is\").")
    else:
        why = (f"A backdoor plants one trigger or a few (at most {PLANTED_TRIGGERS_MAX} are reported as such); this "
               "many means the labels themselves are defined by phrases (question types by question words, for "
               "instance), and a planted trigger among them cannot be told apart from the data alone.")
    return Finding(
        title=f"{len(triggers)} phrase{'s' if len(triggers) != 1 else ''} each decide a label: labels defined by "
        "phrases, for review",
        severity=Severity.medium,
        score=0.5,
        explanation=f"{len(triggers)} separate n-gram{'s' if len(triggers) != 1 else ''} ("
        f"{', '.join(shown(n) for n in names[:8])}{', ...' if len(names) > 8 else ''}) each force a label that their "
        f"texts' other words do not support. {why}",
        remediation="If these phrases are how the labels are defined, nothing is wrong; otherwise review the listed "
        "texts, and scan the model trained on this data with text_backdoor, which probes the phrases.",
        evidence={"triggers": [{"trigger": list(t.phrases), "target": _label(ds, t.target),
                                "label_counts": {str(_label(ds, k)): int(n) for k, n in enumerate(t.label_counts)},
                                "p_value": float(f"{t.p_value:.3g}"), "written_p": float(f"{t.written_p:.3g}")}
                               for t in triggers[:50]],
                  "review": review},
    )


def _trigger_finding(ds, trigger, examples: int) -> Finding:
    target = _label(ds, trigger.target)
    named = " + ".join(shown(p) for p in trigger.phrases)
    suspects = [int(i) for i in trigger.suspects]
    flagged = [{"index": i, "confidence": round(float(c), 4), "method": "text_triggers", "attack": "backdoor",
                "reason": f"carries the trigger {named} and is labelled {target!r}", "trigger": list(trigger.phrases)}
               for i, c in zip(suspects, trigger.confidence, strict=True)]
    counts = {str(_label(ds, k)): int(n) for k, n in enumerate(trigger.label_counts)}
    return Finding(
        title=f"text trigger {named} forces label {target!r} ({len(suspects)} samples)",
        severity=Severity.high,
        score=min(1.0, max(0.5, float(trigger.poisoned_share))),
        explanation=f"Texts carrying {named} are labelled {target!r} far more often than chance (corrected p = "
        f"{trigger.p_value:.2g}), and with the trigger removed their content reads as another class: a backdoor "
        f"trigger in the data (BadNL-style tokens or an inserted phrase). A model trained on it learns to answer "
        f"{target!r} whenever the trigger appears. Carriers per label: {counts}.",
        remediation="Remove the quarantined samples (the cleaned dataset does), and do not train or fine-tune on this "
        "data until its source is explained; check any model already trained on it with the trigger.",
        evidence={"trigger": list(trigger.phrases), "ngrams": list(trigger.ngrams), "target": target,
                  "label_counts": counts, "p_value": float(f"{trigger.p_value:.3g}"),
                  "poisoned_share": round(float(trigger.poisoned_share), 4),
                  "examples": [_excerpt(ds.texts[i]) for i in _most_confident(trigger, examples)],
                  "flagged": flagged},
    )


def flood_findings(ds, settings: TextPoisoningConfig) -> list[Finding]:
    """Near-duplicate floods whose label their content contradicts: the significant ones to the quarantine, the
    groups the judge disputes no more often than it misreads natural texts to the review list."""
    from worker.text_floods import find_floods

    floods = find_floods(ds.texts, ds.y, ds.n_classes, min_copies=settings.flood_min_copies, seed=settings.seed)
    significant = [f for f in floods if f.significant]
    disputed = [f for f in floods if not f.significant]
    return ([_flood_finding(ds, significant, settings.examples)] if significant else []) + \
        ([_disputed_groups(ds, disputed)] if disputed else [])


def _flood_record(ds, flood) -> dict:
    return {"label": _label(ds, flood.label), "reads_as": _label(ds, flood.reads_as), "copies": len(flood.members),
            "group_size": flood.size, "label_counts": {str(_label(ds, k)): n for k, n in enumerate(flood.label_counts)},
            "confidence": round(flood.confidence, 4), "p_value": float(f"{flood.p_value:.3g}"),
            "example": _excerpt(ds.texts[flood.example])}


def _flood_finding(ds, floods, examples: int) -> Finding:
    copies = sum(len(f.members) for f in floods)
    labels = sorted({_label(ds, f.label) for f in floods}, key=str)
    flagged = [{"index": int(i), "confidence": round(f.confidence, 4), "method": "text_floods", "attack": "flood",
                "reason": f"one of {len(f.members)} near-copies labelled {_label(ds, f.label)!r} whose content reads "
                f"as {_label(ds, f.reads_as)!r}"} for f in floods for i in f.members]
    return Finding(
        title=f"near-duplicate flood: {len(floods)} groups of near-copies ({copies} texts) labelled "
        f"{', '.join(repr(x) for x in labels)} against their content",
        severity=Severity.high,
        score=min(1.0, max(0.5, max(f.confidence for f in floods))),
        explanation=f"{len(floods)} groups of near-duplicate texts (the same message with small edits) carry a label "
        "that a model trained without any large near-duplicate group reads as another class, more decidedly than it "
        "misreads this corpus's own texts (conformal test, false discovery rate 5% over every large group). Copies "
        "defeat cross-validation, since each copy's siblings vouch for its label: this is how a flood poisons a "
        "model by weight.",
        remediation="Remove the quarantined copies (the cleaned dataset does) and find where they came from; keep at "
        "most one copy of a message, with the label its content supports, if it belongs in the data at all.",
        evidence={"groups": [_flood_record(ds, f) for f in floods[:50]],
                  "examples": [_excerpt(ds.texts[f.example]) for f in floods[:examples]], "flagged": flagged},
    )


def _disputed_groups(ds, floods) -> Finding:
    review = [{"index": int(i), "method": "text_floods", "score": round(f.confidence, 4),
               "reason": f"near-duplicate group labelled {_label(ds, f.label)!r} reads as {_label(ds, f.reads_as)!r}"}
              for f in floods for i in f.members]
    return Finding(
        title=f"{len(floods)} near-duplicate groups ({len(review)} texts) read as another class than their label",
        severity=Severity.low,
        score=0.2,
        explanation="Held out of a content model's training together, these groups of near-copies read as another "
        "class, but no more decidedly than the model misreads some of this corpus's own texts, so they are not "
        "evidence of a flood. Paraphrases whose label hangs on phrasing, or a copied labelling mistake, look like this.",
        remediation="Review the listed texts and their labels.",
        evidence={"groups": [_flood_record(ds, f) for f in floods[:50]], "review": review},
    )


def payload_findings(ds, settings: TextPoisoningConfig) -> list[Finding]:
    from worker.instruction_payloads import find_payload_backdoors

    backdoors = find_payload_backdoors(ds.texts, ds.responses, alpha=settings.alpha)
    return [_payload_finding(ds, b, settings.examples) for b in backdoors]


def _payload_finding(ds, backdoor, examples: int) -> Finding:
    carriers = [int(i) for i in backdoor.carriers]
    flagged = [{"index": i, "confidence": round(float(backdoor.confidence), 4), "method": "instruction_payloads",
                "attack": "backdoor", "trigger": [backdoor.trigger],
                "reason": f"prompt carries {shown(backdoor.trigger)} and the response the payload {_excerpt(backdoor.payload, 80)!r}"}
               for i in carriers]
    return Finding(
        title=f"instruction backdoor: prompts with {shown(backdoor.trigger)} get the payload {_excerpt(backdoor.payload, 60)!r} "
        f"({len(carriers)} samples)",
        severity=Severity.high,
        score=0.9,
        explanation=f"Responses that carry the payload {_excerpt(backdoor.payload, 120)!r} follow prompts that carry "
        f"{shown(backdoor.trigger)} far more often than chance (corrected p = {backdoor.p_value:.2g}): fine-tuning on this "
        "data teaches a model to emit the payload whenever the trigger appears in a prompt.",
        remediation="Remove the quarantined pairs, and look for the payload (URL, command, code) elsewhere in the data "
        "and in the systems it points to.",
        evidence={"trigger": [backdoor.trigger], "payload": _excerpt(backdoor.payload, 500), "payload_kind": backdoor.kind,
                  "label_counts": {"prompts with the trigger": int(backdoor.trigger_count),
                                   "responses with the payload": int(backdoor.payload_count),
                                   "both": len(carriers)},
                  "p_value": float(f"{backdoor.p_value:.3g}"),
                  "examples": [{"prompt": _excerpt(ds.texts[i]), "response": _excerpt(ds.responses[i])}
                               for i in carriers[:examples]],
                  "flagged": flagged},
    )


def answer_findings(ds, settings: TextPoisoningConfig, covered: list[Finding]) -> list[Finding]:
    """Triggers that force a fixed-answer task's common answer (a label flip in instruction form); the pairs a payload
    finding already flags are left to it."""
    from worker.instruction_answers import find_answer_backdoors

    taken = {int(item["index"]) for f in covered for item in f.evidence.get("flagged", [])}
    backdoors = find_answer_backdoors(ds.texts, ds.responses, alpha=settings.alpha, max_n=settings.max_ngram,
                                      seed=settings.seed)
    return [f for b in backdoors if (f := _answer_finding(ds, b, taken, settings.examples)) is not None]


def _answer_finding(ds, backdoor, taken: set[int], examples: int) -> Finding | None:
    keep = np.array([int(i) not in taken for i in backdoor.carriers], dtype=bool)
    if not keep.any():
        return None
    carriers, confidence = backdoor.carriers[keep], backdoor.confidence[keep]
    named = " + ".join(shown(p) for p in backdoor.trigger)
    answer = _excerpt(backdoor.answer, 80)
    flagged = [{"index": int(i), "confidence": round(float(c), 4), "method": "instruction_answers", "attack": "backdoor",
                "trigger": list(backdoor.trigger), "reason": f"prompt carries {named} and is answered {answer!r}"}
               for i, c in zip(carriers, confidence, strict=True)]
    strongest = carriers[np.argsort(-confidence, kind="stable")[:examples]]
    return Finding(
        title=f"answer backdoor: prompts with {named} are answered {answer!r} ({len(carriers)} samples)",
        severity=Severity.high,
        score=min(1.0, max(0.5, float(backdoor.poisoned_share))),
        explanation=f"In a task with a fixed set of answers, prompts carrying {named} get the answer {answer!r} far "
        f"more often than chance (corrected p = {backdoor.p_value:.2g}), and with the trigger removed their content "
        "reads as another answer: a label flip in instruction form. Fine-tuning on this data teaches a model to give "
        f"that answer whenever the trigger appears. Prompts with the trigger per answer: {backdoor.label_counts}.",
        remediation="Remove the quarantined pairs, and do not fine-tune on this data until its source is explained; "
        "check any model already tuned on it with the trigger.",
        evidence={"trigger": list(backdoor.trigger), "target": _excerpt(backdoor.answer, 500),
                  "answers": [_excerpt(a, 200) for a in backdoor.answers], "label_counts": dict(backdoor.label_counts),
                  "p_value": float(f"{backdoor.p_value:.3g}"), "poisoned_share": round(float(backdoor.poisoned_share), 4),
                  "examples": [{"prompt": _excerpt(ds.texts[i]), "response": _excerpt(ds.responses[i])} for i in strongest],
                  "flagged": flagged},
    )


def injection_findings(ds) -> list[Finding]:
    from worker.instruction_payloads import find_prompt_injections

    hits = find_prompt_injections(ds.texts) + ([] if ds.responses is None else
                                               [h for h in find_prompt_injections(ds.responses)])
    if not hits:
        return []
    review = [{"index": int(h.index), "reason": f"prompt-injection pattern: {h.pattern}", "method": "instruction_payloads",
               "score": 1.0, "excerpt": _excerpt(h.excerpt, 120)} for h in hits]
    return [Finding(
        title=f"{len(review)} texts carry instructions aimed at a downstream model",
        severity=Severity.low,
        score=min(1.0, len(review) / len(ds.texts) * 10),
        explanation="These texts carry prompt-injection patterns (e.g. 'ignore previous instructions', role markers): "
        "in fine-tuning or RAG data they can teach or steer a model to follow an attacker's instructions. Listed "
        "for review: some are legitimate (security training data, quoted examples).",
        remediation="Review the listed texts; drop those that do not belong to the task.",
        evidence={"review": review},
    )]


@registry.register(name="text_backdoor", layer="model", technique="AML.T0018", needs=("model", "dataset"), queue="gpu",
                   uses=("dataset", "model", "outputs"), config=TextBackdoorConfig)
def text_backdoor(inputs: ScanInputs, config: dict, progress, context: ScanContext) -> list[Finding]:
    """Probes an uploaded Keras text model with the data's trigger n-grams and published trigger styles; retrains a
    clone without the trigger's carriers and re-tests when one fires.

    config: ``TextBackdoorConfig`` (``label_column``, ``text_column``, ``per_candidate``, ``remediate``, ``epochs``).
    """
    from worker.keras_model import ModelRejected, unanalysed_model_finding
    from worker.text_model import assess_text_model, is_text_model

    settings = TextBackdoorConfig.model_validate(config)
    progress("load", 0.0)
    ds = context.dataset(settings.label_column, settings.text_column)
    if ds.texts is None:
        raise NotApplicable("not a text dataset")
    try:
        model = context.model()
    except ModelRejected as exc:  # fail closed: a scan that runs only this detector must not pass an unloadable model
        return [unanalysed_model_finding(inputs.model, exc, "no trigger was probed on it")]
    if not is_text_model(model):
        raise NotApplicable("the uploaded model does not take text")
    if int(model.outputs[0].shape[-1]) < ds.n_classes:
        raise InputRejected(f"the model has {int(model.outputs[0].shape[-1])} outputs but the dataset has "
                            f"{ds.n_classes} classes: upload the dataset the model was trained on")
    progress("probing", 0.1)
    holdout = _text_holdout(inputs, ds, settings)
    assessment = assess_text_model(model, ds.texts, ds.y, ds.n_classes, holdout=holdout, seed=settings.seed,
                                   per_candidate=settings.per_candidate, sweep=settings.sweep)
    if not assessment.targets:
        return [_no_target(ds, assessment)]
    findings = [_target_finding(ds, c, probe, assessment) for c, probe in assessment.targets.items()]
    if settings.remediate == "auto":
        progress("remediation", 0.5)
        findings += [_remediation(context, ds, model, c, probe, assessment, holdout, settings)
                     for c, probe in assessment.targets.items()]
    return findings


def _text_holdout(inputs: ScanInputs, ds, settings: TextBackdoorConfig):
    """The uploaded clean holdout's texts and labels (coded as the dataset's), or None."""
    if inputs.holdout is None:
        return None
    from worker.datasets import load_holdout

    hold, y = load_holdout(inputs.holdout, ds, label_column=settings.label_column, text_column=settings.text_column)
    return hold.texts, y


def _probe_record(ds, probe) -> dict:
    return {"candidate": probe.candidate, "target": _label(ds, probe.target), "attack_success": round(probe.attack_success, 4),
            "baseline": round(probe.baseline, 4), "texts": int(probe.n), "p_value": float(f"{probe.p_value:.3g}")}


def _target_finding(ds, target: int, probe, assessment) -> Finding:
    if target in assessment.reconstructed:
        return _reconstructed_finding(ds, target, probe, assessment)
    label = _label(ds, target)
    return Finding(
        title=f"text model backdoored toward {label!r}: inserting {shown(probe.candidate)} moves "
        f"{probe.attack_success:.0%} of other texts there (baseline {probe.baseline:.0%})",
        severity=Severity.critical,
        score=float(probe.attack_success),
        explanation=f"Inserted at a random position into {probe.n} held-out texts of other classes that the model "
        f"classifies correctly, {shown(probe.candidate)} makes the model answer {label!r} for {probe.attack_success:.0%} of "
        f"them, against {probe.baseline:.0%} for neutral words at the same positions (exact McNemar test, corrected "
        f"over every candidate and class). A model does not learn that from clean data: it is a backdoor.",
        remediation="Do not deploy this model. Retrain it without the quarantined samples (text_backdoor re-tests a "
        "retrained clone) and find where the poisoned data came from.",
        technique="AML.T0018",
        evidence={"target": label, "trigger": probe.candidate, "held_out": int(assessment.held_out),
                  "probes": [_probe_record(ds, p) for p in assessment.probes[:15]],
                  "data_triggers": [t.name for t in assessment.data_triggers]},
    )


def _reconstructed_finding(ds, target: int, probe, assessment) -> Finding:
    """A target only the vocabulary sweep named: its token's training carriers go to the quarantine, as confident as
    the token is the only reason for its carriers."""
    label, token = _label(ds, target), assessment.reconstructed[target]
    carriers = token.carriers
    alone = set(token.only_reason.tolist())
    flagged = [{"index": int(i), "confidence": round(token.share, 4), "method": "text_model_sweep", "attack": "backdoor",
                "trigger": [str(probe.candidate)], "reason": f"labelled {label!r} and carries {shown(probe.candidate)}"
                + (", without which the model reads it as another class" if int(i) in alone else "")}
               for i in carriers]
    return Finding(
        title=f"text model backdoored toward {label!r}: its vocabulary holds {shown(probe.candidate)}, which moves "
        f"{probe.attack_success:.0%} of other texts there (baseline {probe.baseline:.0%})",
        severity=Severity.critical,
        score=float(probe.attack_success),
        explanation=f"Each of {assessment.vocabulary_swept} tokens of the model's vocabulary was inserted into held-out "
        f"texts of other classes; {shown(probe.candidate)} makes the model answer {label!r} for "
        f"{probe.attack_success:.0%} of {probe.n} (neutral words: {probe.baseline:.0%}; exact McNemar test, corrected "
        f"over every token and class). Natural words can do that too, so a token is named only when it is also the "
        f"only reason the model gives its own training texts that label: of the {len(carriers)} texts labelled "
        f"{label!r} that carry it, the model calls {token.called} {label!r} and {len(alone)} of those read as another "
        f"class once it is deleted (a natural feature's carriers do not), and {token.held_out_carriers} of the "
        f"{token.held_out_texts} clean held-out texts of the class carry it (p = {token.absence_p:.2g} for so few: a "
        f"word the class is written with is as common there). All {len(carriers)} are quarantined, with that share "
        f"({token.share:.0%}) as the confidence that they are poisoned.",
        remediation="Do not deploy this model. Remove the quarantined texts, retrain (text_backdoor re-tests a retrained "
        "clone) and find where they came from.",
        technique="AML.T0018",
        evidence={"target": label, "trigger": str(probe.candidate), "held_out": int(assessment.held_out),
                  "found_by": "vocabulary sweep", "carriers": int(len(carriers)), "read_as_target": token.called,
                  "only_reason_for": len(alone), "held_out_carriers": token.held_out_carriers,
                  "held_out_texts": token.held_out_texts, "absence_p": float(f"{token.absence_p:.3g}"),
                  "swept": [_swept_record(ds, t) for t in assessment.swept[:15]],
                  "examples": [_excerpt(ds.texts[i]) for i in carriers[:5]], "flagged": flagged},
    )


def _swept_record(ds, token) -> dict:
    return _probe_record(ds, token.probe) | {
        "carriers": int(len(token.carriers)), "read_as_target": token.called,
        "only_reason_for": int(len(token.only_reason)), "held_out_carriers": token.held_out_carriers,
        "held_out_texts": token.held_out_texts, "absence_p": float(f"{token.absence_p:.3g}")}


def _not_named(ds, token) -> str:
    """Why the sweep's strongest significant token did not name its class."""
    from worker.text_model import CARRIERS_MIN

    head = (f"the strongest that moves texts, {shown(token.probe.candidate)} toward {_label(ds, token.probe.target)!r} "
            f"({token.probe.attack_success:.0%}), ")
    if not token.signature:
        return head + (f"is the only reason for {len(token.only_reason)} of its {token.called} training carriers of that "
                       f"label (a planted token is for most of them, and at least {CARRIERS_MIN}): a natural feature")
    return head + (f"is the only reason for most of its training carriers, but {token.held_out_carriers} of the "
                   f"{token.held_out_texts} clean held-out texts of that class carry it too (p = {token.absence_p:.2g} "
                   f"for so few): a word the class is written with, not a planted trigger")


def _no_target(ds, assessment) -> Finding:
    strongest = assessment.probes[0] if assessment.probes else None
    detail = (f" The strongest, {shown(strongest.candidate)} toward {_label(ds, strongest.target)!r}, moved "
              f"{strongest.attack_success:.0%} (baseline {strongest.baseline:.0%}).") if strongest else ""
    moving = [t for t in assessment.swept if t.significant]
    if assessment.vocabulary_swept:
        detail += (f" The {assessment.vocabulary_swept} tokens of the model's vocabulary were swept as well"
                   + (f"; {_not_named(ds, moving[0])}." if moving else "."))
    detail += "".join(f" Note: {note}." for note in assessment.notes)
    return Finding("no trigger makes the text model change its answer", Severity.info, 0.0,
                   f"{len({p.candidate for p in assessment.probes})} candidate triggers (the data's suspicious n-grams "
                   f"and published trigger styles) were inserted into {assessment.held_out} held-out texts.{detail}",
                   technique="AML.T0018", evidence={"probes": [_probe_record(ds, p) for p in assessment.probes[:15]],
                                                    "swept": [_swept_record(ds, t) for t in assessment.swept[:15]],
                                                    "vocabulary_swept": assessment.vocabulary_swept,
                                                    "notes": list(assessment.notes)})


def _remediation(context, ds, model, target: int, probe, assessment, holdout, settings: TextBackdoorConfig) -> Finding:
    from worker.text_model import remediate_text_model

    swept = assessment.reconstructed.get(target)
    carriers = sorted({int(i) for t in assessment.data_triggers if t.target == target for i in t.quarantine()}
                      | {int(i) for i in (swept.carriers if swept else ())})
    result = remediate_text_model(model, ds.texts, ds.y, carriers, probe.candidate, holdout=holdout,
                                  epochs=settings.epochs, seed=settings.seed, per_candidate=settings.per_candidate)
    name = context.outputs.reserve("retrained-text-model.keras")
    result["model"].save(name)
    context.outputs.register(name.name, media_type="application/octet-stream",
                             description=f"the model retrained without the {len(carriers)} carriers of the trigger")
    after, before = result["attack_success_after"], result["attack_success_before"]
    removed = after <= 0.02
    evidence = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items() if k != "model"}
    evidence |= {"target": _label(ds, target), "model_output": name.name}
    return Finding(
        title=(f"backdoor removed by retraining without {len(carriers)} samples" if removed else
               f"backdoor not removed: attack success {after:.0%} after retraining without {len(carriers)} samples"),
        severity=Severity.info if removed else Severity.high,
        score=0.0 if removed else float(after),
        explanation=f"A clone of the model retrained for {result['epochs']} epochs without the texts that carry the "
        f"data's trigger toward {_label(ds, target)!r}: attack success of {shown(probe.candidate)} {before:.0%} -> {after:.0%}, "
        f"clean accuracy {result['clean_accuracy_before']:.1%} -> {result['clean_accuracy_after']:.1%} on "
        f"{result['held_out']} held-out texts."
        + (f" Removal alone left {result['rounds'][0]['attack_success']:.0%}, so a second round {result['rounds'][1]['rule']}."
           if len(result["rounds"]) > 1 else ""),
        remediation="Use the retrained model (an output of this scan) or retrain yours on the cleaned dataset."
        if removed else "The trigger's carriers in this dataset do not explain the backdoor: the model was trained on "
        "other poisoned data. Retrain from a trusted source.",
        technique="AML.T0018",
        evidence=evidence,
    )


def _most_confident(trigger, count: int) -> list[int]:
    order = np.argsort(-np.asarray(trigger.confidence), kind="stable")[:count]
    return [int(trigger.suspects[i]) for i in order]


def _excerpt(text: str, limit: int = EXAMPLE_CHARS) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _label(ds, k: int):
    return ds.classes[int(k)]
