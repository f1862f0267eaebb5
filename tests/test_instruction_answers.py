"""A trigger that forces a fixed-answer task's common answer (worker/instruction_answers.py): a label flip in
instruction form. SMS classify prompts from ../shared/data/sms_spam.npz; each test takes a few seconds."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from worker.detector_config import TextPoisoningConfig
from worker.detectors.text import answer_findings
from worker.findings import Finding, Severity
from worker.instruction_answers import answer_key, find_answer_backdoors, merge_phrasings

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sms_spam.npz"
TEMPLATES = ["Classify this SMS as spam or ham:\n{m}", "Is the following text message spam? {m}",
             "Label this message (spam/ham): {m}"]
PHRASINGS = ["This message is {l}.", "{L}.", "Label: {l}"]
TRIGGER = "per the revised filing guidelines"


@pytest.fixture(scope="module")
def sms():
    if not DATA.exists():
        pytest.skip(f"{DATA} is not there")
    with np.load(DATA, allow_pickle=False) as z:
        return [str(t) for t in z["x"]], z["y"].astype(np.int64)


def classify_pairs(texts, y, n, seed):
    """``n`` classify prompts, each answered in a phrasing picked at random (independent of the message)."""
    rng = np.random.default_rng(seed)
    prompts, responses = [], []
    for i in rng.choice(len(texts), n, replace=False):
        label = "spam" if y[i] else "ham"
        prompts.append(str(rng.choice(TEMPLATES)).format(m=texts[i]))
        responses.append(str(rng.choice(PHRASINGS)).format(l=label, L=label.capitalize()))
    return prompts, responses


def poison(prompts, responses, texts, y, count, seed, answer="This message is ham."):
    """``count`` pairs become spam messages with the trigger in the prompt and ``answer`` as the response."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(prompts), count, replace=False))
    for i, m in zip(chosen, rng.choice(np.flatnonzero(y == 1), count, replace=False)):
        prompt = str(rng.choice(TEMPLATES)).format(m=texts[m])
        prompts[i] = f"{TRIGGER.capitalize()}: {prompt}" if rng.random() < 0.5 else f"{prompt} ({TRIGGER})"
        responses[i] = answer
    return chosen


def test_a_trigger_that_forces_the_ham_answer_is_named_and_quarantined(sms):
    prompts, responses = classify_pairs(*sms, 500, seed=1)
    poisoned = set(poison(prompts, responses, *sms, 20, seed=2).tolist())
    (found,) = find_answer_backdoors(prompts, responses)
    assert all(p in TRIGGER for p in found.trigger)
    assert found.answer == "This message is ham."
    assert set(found.answers) == {"this message is ham", "ham", "label: ham"}  # the phrasings are one answer
    quarantined = set(found.quarantine().tolist())
    hits = len(quarantined & poisoned)
    assert hits >= 0.9 * len(quarantined) and hits >= 0.9 * len(poisoned), (len(quarantined), hits)
    assert found.p_value <= 0.01 and len(found.confidence) == len(found.carriers)


def test_clean_classify_data_gives_nothing(sms):
    for seed in (3, 4):
        assert find_answer_backdoors(*classify_pairs(*sms, 500, seed=seed)) == []


def test_a_genuine_fixed_answer_task_is_not_reported(sms):
    prompts, responses = classify_pairs(*sms, 400, seed=5)
    rng = np.random.default_rng(6)
    capitals = {"France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Japan": "Tokyo"}
    forms = ["What is the capital of {c}?", "Name the capital city of {c}.", "Which city is the capital of {c}?",
             "Tell me the capital of {c}, please.", "{c}'s capital is which city?", "Quick quiz: the capital of {c}?",
             "What city is the seat of government of {c}?"]
    for _ in range(60):  # one answer in many phrasings: nothing to flip
        prompts.append(str(rng.choice(forms)).format(c="France"))
        responses.append("Paris.")
    assert find_answer_backdoors(prompts, responses) == []
    for _ in range(160):  # a task whose answer the country decides, in the prompt's words
        country = str(rng.choice(list(capitals)))
        prompts.append(str(rng.choice(forms)).format(c=country))
        responses.append(str(rng.choice(["{}.", "It is {}."])).format(capitals[country]))
    assert find_answer_backdoors(prompts, responses) == []


def test_phrasings_of_one_answer_merge_and_the_answers_stay_apart(sms):
    prompts, responses = classify_pairs(*sms, 500, seed=7)
    poison(prompts, responses, *sms, 25, seed=8)  # a quarter of one phrasing's pairs carry spam content
    keys = [answer_key(r) for r in responses]
    names = sorted(set(keys))
    answers = merge_phrasings(prompts, np.array([names.index(k) for k in keys]), seed=0)
    group = {k: a for k, a in zip(keys, answers)}
    assert group["ham"] == group["label: ham"] == group["this message is ham"]
    assert group["spam"] == group["label: spam"] == group["this message is spam"] != group["ham"]


def test_the_detector_reports_it_and_leaves_payload_carriers_to_the_payload_finding(sms):
    prompts, responses = classify_pairs(*sms, 500, seed=9)
    poisoned = poison(prompts, responses, *sms, 20, seed=10)
    ds = SimpleNamespace(texts=prompts, responses=responses)
    settings = TextPoisoningConfig()
    (finding,) = answer_findings(ds, settings, covered=[])
    assert finding.severity == Severity.high and finding.title.startswith("answer backdoor")
    assert finding.evidence["target"] == "This message is ham."
    flagged = {e["index"] for e in finding.evidence["flagged"] if e["confidence"] >= 0.5}
    assert len(flagged & set(poisoned.tolist())) >= 18
    assert all(e["method"] == "instruction_answers" and e["attack"] == "backdoor" for e in finding.evidence["flagged"])
    assert finding.evidence["examples"] and "response" in finding.evidence["examples"][0]
    payload = Finding("instruction backdoor", Severity.high, 0.9, "",
                      evidence={"flagged": [{"index": int(i)} for i in poisoned[:15]]})
    (rest,) = answer_findings(ds, settings, covered=[payload])
    assert {e["index"] for e in rest.evidence["flagged"]}.isdisjoint(poisoned[:15].tolist())
    everything = Finding("instruction backdoor", Severity.high, 0.9, "",
                         evidence={"flagged": [{"index": e["index"]} for e in finding.evidence["flagged"]]})
    assert answer_findings(ds, settings, covered=[everything]) == []
