"""When label noise is poisoning (worker/label_evidence.py) and how the pipeline splits quarantine from review."""

import numpy as np

from worker.label_evidence import calibrate, excess_confidence, flip_floor, noise_excess, targeted_pairs
from worker.pipeline import sample_lists


def _calibrated_world(n=6000, k=10, sharpness=6.0, seed=0):
    """Probabilities and labels drawn from them: a perfectly calibrated model on clean (noisy-by-nature) data."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), rng.integers(0, k, n)] += sharpness
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(k, p=p) for p in probs])
    return probs.astype(np.float32), y


def test_natural_noise_that_the_model_explains_is_not_poisoning():
    for sharpness in (3.0, 6.0):  # a confusable domain and a well-separated one
        probs, y = _calibrated_world(sharpness=sharpness)
        assert not noise_excess(probs, y).poisoned


def test_an_overconfident_model_on_clean_data_is_calibrated_before_the_test():
    probs, y = _calibrated_world(sharpness=3.0)
    sharp = probs ** 3 / (probs ** 3).sum(axis=1, keepdims=True)  # overconfident, as an overfitted proxy is
    assert noise_excess(sharp, y).observed > 1.5 * noise_excess(sharp, y).expected
    calibrated, temperature = calibrate(sharp, y)
    assert temperature > 2 and not noise_excess(calibrated, y).poisoned


def test_random_flips_exceed_what_the_model_explains():
    probs, y = _calibrated_world(sharpness=9.0)
    rng = np.random.default_rng(1)
    flipped = rng.choice(len(y), size=len(y) // 10, replace=False)
    y = y.copy()
    y[flipped] = (y[flipped] + rng.integers(1, 10, len(flipped))) % 10
    excess = noise_excess(probs, y)  # the model's probabilities as they are (the data-layer tests run calibration too)
    assert excess.poisoned and excess.excess >= 0.6 * len(flipped)
    confident = np.flatnonzero(1 - probs[np.arange(len(y)), y] >= 0.5)
    assert len(np.intersect1d(confident, flipped)) >= 0.8 * len(flipped)


def test_one_way_confusion_is_targeted_and_two_way_confusion_is_not():
    probs, y = _calibrated_world(sharpness=6.0, seed=3)
    predicted = probs.argmax(axis=1)
    assert targeted_pairs(probs, y) == []
    y = y.copy()
    ones = np.flatnonzero((y == 1) & (predicted == 1))
    y[ones[:60]] = 7  # 60 of class 1 relabelled 7
    (pair,) = targeted_pairs(probs, y)
    assert (pair.source, pair.target) == (1, 7) and pair.confidence > 0.8
    assert set(ones[:60].tolist()) <= set(pair.rows.tolist())
    both = y.copy()
    sevens = np.flatnonzero((y == 7) & (predicted == 7))
    both[sevens[:60]] = 1  # the same confusion both ways: two confusable classes, not an attack
    assert targeted_pairs(probs, both) == []


def test_quarantine_holds_poisoning_evidence_and_review_the_rest():
    findings = [
        {"detector": "data_poisoning", "evidence": {
            "flagged": [{"index": 1, "reason": "label issue", "method": "a", "attack": "label_flip", "confidence": 0.9},
                        {"index": 2, "reason": "label issue", "method": "a", "attack": "label_flip", "confidence": 0.3}],
            "review": [{"index": 1, "reason": "outlier", "method": "o"}, {"index": 3, "reason": "outlier", "method": "o"}]}},
        {"detector": "backdoor_activations", "evidence": {
            "flagged": [{"index": 1, "reason": "backdoor poison", "method": "b", "attack": "backdoor", "confidence": 0.6}]}},
    ]
    quarantine, review = sample_lists(findings, 0.5)
    assert [q["index"] for q in quarantine] == [1]
    assert quarantine[0]["confidence"] == 0.9 and quarantine[0]["methods"] == ["a", "b"]
    assert quarantine[0]["attack"] == ["backdoor", "label_flip"] and quarantine[0]["corroborated_by"][0]["reason"] == "outlier"
    assert {r["index"]: r["poisoning_confidence"] for r in review} == {2: 0.3, 3: None}
    assert [q["index"] for q in sample_lists(findings, 0.95)[0]] == []


def test_one_way_ambiguity_the_model_is_unsure_about_is_not_a_targeted_flip():
    """Some inputs of class 1 are genuinely ambiguous with 7 (never the other way round): the calibrated model gives
    them 7 with probability 0.3 and their labels follow it, so the confusion is one-way but the model explains it. The
    same number of plain 1s relabelled 7 is a targeted flip."""
    probs, y = _calibrated_world(sharpness=6.0, seed=5)
    rng = np.random.default_rng(5)
    ambiguous = np.flatnonzero(probs.argmax(axis=1) == 1)[:300]
    probs = probs.copy()
    probs[ambiguous] = 0.0
    probs[ambiguous, 1], probs[ambiguous, 7] = 0.7, 0.3
    natural = y.copy()
    natural[ambiguous] = np.where(rng.random(len(ambiguous)) < 0.3, 7, 1)
    assert (natural[ambiguous] == 7).sum() >= 60  # as many one-way "7"s as the attack below
    pairs = targeted_pairs(probs, natural)
    assert [(p.source, p.target) for p in pairs] == []
    attacked = y.copy()
    plain = np.setdiff1d(np.flatnonzero((probs.argmax(axis=1) == 1) & (y == 1)), ambiguous)[:60]
    attacked[plain] = 7
    (pair,) = targeted_pairs(probs, attacked)
    assert (pair.source, pair.target) == (1, 7) and pair.confident >= 50 and pair.confidence > 0.8


def test_random_flips_leave_a_floor_in_both_directions():
    """The probabilities are a model's that did not learn the flips (the data layer refits without the suspects)."""
    probs, y = _calibrated_world(n=5000, k=2, sharpness=8.0, seed=4)
    rng = np.random.default_rng(5)
    flipped = rng.choice(len(y), size=len(y) // 10, replace=False)
    y = y.copy()
    y[flipped] = 1 - y[flipped]
    floor = flip_floor(probs, y)
    assert floor.poisoned.all() and 0.07 <= floor.rates.min() <= floor.rates.max() <= 0.13
    found = np.flatnonzero(floor.posterior >= 0.5)
    assert len(np.intersect1d(found, flipped)) >= 0.85 * len(flipped) and len(np.setdiff1d(found, flipped)) <= 0.1 * len(found)


def test_annotation_noise_and_ambiguity_are_not_a_flip_floor():
    for k in (2, 10):
        probs, y = _calibrated_world(n=5000, k=k, sharpness=4.0, seed=6)  # ambiguous inputs, labels drawn from them
        assert not flip_floor(probs, y).any
    probs, y = _calibrated_world(n=5000, k=2, sharpness=8.0, seed=7)
    rng = np.random.default_rng(8)
    y = y.copy()
    errors = rng.choice(len(y), size=len(y) * 2 // 100, replace=False)  # 2% annotation errors, as real corpora carry
    y[errors] = 1 - y[errors]
    floor = flip_floor(probs, y)
    assert floor.pvalues.min() < 0.01 and not floor.any  # a real floor, below what annotation alone leaves


def test_one_way_flips_raise_one_direction_only():
    probs, y = _calibrated_world(n=6000, k=2, sharpness=8.0, seed=9)
    rng = np.random.default_rng(10)
    ones = np.flatnonzero(y == 1)
    flipped = rng.choice(ones, size=len(ones) // 2, replace=False)  # half of class 1 relabelled 0: 8% of the data
    y = y.copy()
    y[flipped] = 0
    floor = flip_floor(probs, y)
    assert floor.poisoned.tolist() == [True, False]
    found = np.flatnonzero(floor.posterior >= 0.5)
    assert len(np.intersect1d(found, flipped)) >= 0.8 * len(flipped)


def _imbalanced_world(n=5000, minority=0.13, sharpness=8.0, seed=0):
    """Two classes, one rare (spam among SMS): calibrated probabilities and labels drawn from them."""
    rng = np.random.default_rng(seed)
    truth = (rng.random(n) < minority).astype(int)
    margin = rng.normal(sharpness, 2.0, n) * np.where(truth == 1, 1, -1)
    p1 = 1.0 / (1.0 + np.exp(-margin))
    probs = np.stack([1 - p1, p1], axis=1).astype(np.float32)
    return probs, (rng.random(n) < p1).astype(int)


def test_random_flips_into_a_rare_class_poison_it_below_the_share_of_the_data():
    """3% of the labels flipped at random is under 5% of the data, but almost every flip lands in the rare class
    (a majority sample relabelled): about a sixth of its labels are then wrong, which annotation does not leave."""
    probs, y = _imbalanced_world(seed=11)
    assert not flip_floor(probs, y).any  # clean: no floor in either direction
    rng = np.random.default_rng(12)
    for share, expect in ((0.01, [False, False]), (0.03, [False, True])):
        flipped = rng.choice(len(y), size=int(share * len(y)), replace=False)
        noisy = y.copy()
        noisy[flipped] = 1 - noisy[flipped]
        floor = flip_floor(probs, noisy)
        assert floor.poisoned.tolist() == expect, (share, floor.expected_flips, floor.pvalues)
        assert floor.expected_flips.sum() < 0.05 * len(y)  # the bar over the whole data alone would not have seen it
    into_rare = flipped[noisy[flipped] == 1]
    found = np.flatnonzero(floor.posterior >= 0.5)
    assert len(np.intersect1d(found, into_rare)) >= 0.8 * len(into_rare) and len(np.setdiff1d(found, flipped)) <= 0.2 * len(found)


def test_an_excess_of_flips_quarantines_the_excess_not_every_improbable_label():
    """2% random flips beside the natural noise of a 10-class world: the excess is significant, and the samples more
    likely planted than natural are those in probability bins the natural noise does not fill; the probability that
    a label is wrong would put ten times as many natural errors beside them."""
    probs, y = _calibrated_world(n=6000, k=10, sharpness=6.0, seed=21)
    rng = np.random.default_rng(22)
    flipped = rng.choice(len(y), size=120, replace=False)
    y = y.copy()
    y[flipped] = (y[flipped] + rng.integers(1, 10, len(flipped))) % 10
    assert noise_excess(probs, y).poisoned
    held = np.flatnonzero(excess_confidence(probs, y) >= 0.5)
    assert len(held) >= 20 and len(np.intersect1d(held, flipped)) >= 0.75 * len(held)
    wrong = np.flatnonzero(1 - probs[np.arange(len(y)), y] >= 0.5)
    assert len(np.intersect1d(wrong, flipped)) < 0.35 * len(wrong)


def _quarantined(findings) -> set[int]:
    return {r["index"] for f in findings for r in f.evidence.get("flagged", []) if r["confidence"] >= 0.5}


def test_labels_another_detector_explains_lend_no_confidence_to_the_natural_noise_beside_them():
    """A trigger's relabelled carriers contradict their content as flips do. Judged with the rest, their excess puts
    natural label noise in the quarantine beside them; held by the text detector (``explained``), they are left out
    of the label-flip tests, the natural noise goes back to review, and flips they do not explain are still found
    (by a refit that never trains on the carriers either)."""
    from types import SimpleNamespace

    from worker.detectors.data import label_findings

    probs, natural_y = _calibrated_world(n=6000, k=10, sharpness=6.0, seed=31)
    rng = np.random.default_rng(32)
    carriers = np.sort(rng.choice(len(natural_y), size=150, replace=False))
    y = natural_y.copy()
    y[carriers] = (probs[carriers].argmax(axis=1) + 1) % 10  # content of one class, labelled another
    ds = SimpleNamespace(y=y, classes=[str(c) for c in range(10)], n_classes=10)
    beside = _quarantined(label_findings(ds, probs)) - set(carriers.tolist())
    assert len(beside) >= 10  # natural noise swept in with the carriers' excess
    held_elsewhere = label_findings(ds, probs, explained=carriers)
    assert not _quarantined(held_elsewhere)
    assert "poisoning evidence from another detector" in held_elsewhere[0].explanation
    assert held_elsewhere[0].evidence["explained_elsewhere"] == len(carriers)

    flips = rng.choice(np.setdiff1d(np.arange(len(y)), carriers), size=300, replace=False)  # 5%: a floor of flips
    flipped_y = y.copy()
    flipped_y[flips] = (flipped_y[flips] + rng.integers(1, 10, len(flips))) % 10
    refits = []

    def refit(suspects):
        refits.append(np.asarray(suspects))
        return probs

    held = _quarantined(label_findings(SimpleNamespace(y=flipped_y, classes=ds.classes, n_classes=10), probs, refit,
                                       explained=carriers))
    found = len(held & set(flips.tolist()))
    assert found >= 0.6 * len(flips) and found >= 0.6 * len(held)
    assert not held & set(carriers.tolist())  # the carriers are the trigger detector's to hold, not a flip's
    assert refits and all(np.isin(carriers, r).all() for r in refits)
