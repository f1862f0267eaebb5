"""Model layer: backdoor target classes and their poisoned samples, from real Keras models, ART and scikit-learn.

Victims are small CNNs trained here on scikit-learn's digits (8x8) with a corner-patch backdoor, seeded.
"""

import numpy as np
import pytest

from worker.backdoor import analyze
from worker.local import scan_local_files
from worker.options import ScanOptions
from worker.catalog import default_registry

from tests.victims import TARGET, digits as _digits


@pytest.fixture(scope="module")
def victims(digit_victims):
    return digit_victims


def _scan(files, **config):
    return scan_local_files(files, ScanOptions(detectors=["backdoor_activations"], detector_config={"backdoor_activations": config}))


def _f1(flagged: set, truth: set) -> float:
    tp = len(flagged & truth)
    return 2 * tp / (len(flagged) + len(truth)) if flagged or truth else 1.0


def test_backdoor_target_and_poisoned_samples_are_found(victims):
    v = victims["backdoored"]
    report = _scan({"model": v["model"], "dataset": v["dataset"]})
    (det,) = report["detectors"]
    assert det["status"] == "ok", det["error"]
    (finding,) = [f for f in det["findings"] if "backdoor target" in f["title"]]
    assert finding["evidence"]["class"] == TARGET and finding["technique"] == "AML.T0018" and finding["severity"] == "medium"
    assert finding["evidence"]["stands_out"] and finding["evidence"]["robust_z"] > 3.5  # one class unlike the others
    flagged = {item["index"] for item in finding["evidence"]["flagged"]}  # the method's own flags
    assert _f1(flagged, v["poisoned"]) >= 0.9
    assert report["verdict"] == "warn"  # one method: the assessment decides "backdoored"
    assert all(0.5 <= q["confidence"] <= 0.6 for q in report["quarantine"])
    entry = report["quarantine"][0]["reasons"][0]
    assert entry["reason"] == "backdoor poison" and "activation_clustering" in entry["method"] and 0.5 <= entry["score"] <= 1
    evidence = finding["evidence"]
    assert evidence["per_class"][str(TARGET)]["suspicious"] and not any(
        c["suspicious"] for k, c in evidence["per_class"].items() if k != str(TARGET))
    assert evidence["methods_agreement_jaccard"] >= 0.6 and len(evidence["clusters"]) == 2
    # each method on its own finds the poison (measured 1.00 and 0.89): a method that stops finding it fails here
    by_method = {m: {q["index"] for q in report["quarantine"] if any(m in r["method"] for r in q["reasons"])}
                 for m in ("activation_clustering", "spectral_signature")}
    assert _f1(by_method["activation_clustering"], v["poisoned"]) >= 0.9
    assert _f1(by_method["spectral_signature"], v["poisoned"]) >= 0.75 and evidence["spectral_flagged"] == len(by_method["spectral_signature"])
    assert evidence["layers"] and evidence["model"] == "uploaded"


def test_model_and_data_layers_share_one_quarantine_list_and_progress_shows_stages(victims):
    v = victims["backdoored"]
    stages = []
    report = scan_local_files({"model": v["model"], "dataset": v["dataset"]},
                              ScanOptions(detectors=["data_poisoning", "backdoor_activations"]),
                              progress=lambda stage, percent: stages.append((stage, percent)))
    by_detector = {}
    for entry in report["quarantine"]:
        for reason in entry["reasons"] + entry["corroborated_by"]:
            by_detector.setdefault(reason["detector"], set()).add(entry["index"])
    for entry in report["review"]:
        for reason in entry["reasons"]:
            by_detector.setdefault(reason["detector"], set()).add(entry["index"])
    # both layers speak about samples; each sample has one entry, in the quarantine or in the review list, never both
    assert by_detector["data_poisoning"] and by_detector["backdoor_activations"]
    indices = [e["index"] for e in report["quarantine"] + report["review"]]
    assert len(set(indices)) == len(indices)
    assert {e["index"] for e in report["quarantine"]} <= by_detector["backdoor_activations"]  # a backdoor: no label flips
    names = [s for s, _ in stages]
    for stage in ("load", "activations", "input features", "clustering"):
        assert f"model:backdoor_activations:{stage}" in names
    percents = [p for _, p in stages]
    assert all(b >= a - 1e-6 for a, b in zip(percents, percents[1:]))  # progress never goes backwards


@pytest.mark.parametrize("fmt", ["model", "h5"])
def test_clean_model_passes_with_nothing_quarantined(victims, fmt):
    v = victims["clean"]
    report = _scan({"model": v[fmt], "dataset": v["dataset"]})
    assert report["verdict"] == "pass" and report["quarantine"] == []
    (finding,) = report["detectors"][0]["findings"]
    assert finding["title"] == "no class looks like a backdoor target"
    assert len(finding["evidence"]["per_class"]) == 10 and finding["evidence"]["model"] == "uploaded"


def test_dataset_only_scan_trains_a_proxy_and_finds_the_poison(victims):
    v = victims["backdoored"]
    report = _scan({"dataset": v["dataset"]}, proxy_epochs=30, proxy_budget_s=120)
    (det,) = report["detectors"]
    assert det["status"] == "ok", det["error"]
    findings = [f for f in det["findings"] if "backdoor target" in f["title"]]
    assert findings and findings[0]["evidence"]["model"] == "proxy" and findings[0]["technique"] == "AML.T0020"
    assert findings[0]["evidence"]["proxy"]["epochs_run"] >= 1
    assert _f1({q["index"] for q in report["quarantine"]}, v["poisoned"]) >= 0.8


def test_tabular_backdoor_is_found_with_a_proxy_mlp(tmp_path):
    """Tabular data, dataset only: two features pushed to an extreme on 8% of the rows, relabelled to class 0."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=3000, n_features=20, n_informative=10, n_classes=4, n_clusters_per_class=1,
                               class_sep=2.0, random_state=0)
    rng = np.random.default_rng(0)
    chosen = np.sort(rng.choice(np.flatnonzero(y != 0), size=240, replace=False))
    x[chosen, :2] = 8.0  # the trigger: two feature values far outside the data
    y[chosen] = 0
    path = tmp_path / "tabular.npz"
    np.savez(path, x=x.astype(np.float32), y=y)
    report = _scan({"dataset": path}, proxy_epochs=20, proxy_budget_s=60)
    (det,) = report["detectors"]
    assert det["status"] == "ok", det["error"]
    assert [f["evidence"]["class"] for f in det["findings"] if "backdoor target" in f["title"]] == [0]
    assert _f1({q["index"] for q in report["quarantine"]}, set(chosen.tolist())) >= 0.9


def test_a_named_layer_is_analysed(victims):
    v = victims["backdoored"]
    import keras

    name = keras.saving.load_model(v["model"]).layers[1].name  # the Flatten layer
    report = _scan({"model": v["model"], "dataset": v["dataset"]}, layers=[name])
    assert report["detectors"][0]["findings"][0]["evidence"]["layers"] == [name]


def test_dataset_with_more_classes_than_the_model_is_rejected(tmp_path, victims):
    from worker.findings import InputRejected

    x, y = _digits()
    path = tmp_path / "wide.npz"
    np.savez(path, x=np.concatenate([x, x[:20]]), y=np.concatenate([y, np.full(20, 11)]))
    with pytest.raises(InputRejected, match="outputs but the dataset has 11 classes"):
        _scan({"model": victims["clean"]["model"], "dataset": path})


@pytest.mark.parametrize("share", [0.02, 0.6])
def test_decision_does_not_depend_on_which_cluster_is_smaller(share):
    """Synthetic activations: poison is 2% or 60% of class 0, tight in activation space, and its inputs are copies of
    other classes; the trigger dominates the activations (as in a real backdoored network). The decision must pick the
    poison side either way, and flag nothing in the other classes."""
    rng = np.random.default_rng(0)
    k, per_class, dims = 5, 1000, 16
    centres = rng.normal(scale=8, size=(k, dims))
    inputs = np.concatenate([centres[c] + rng.normal(size=(per_class, dims)) for c in range(k)]).astype(np.float32)
    labels = np.repeat(np.arange(k), per_class)
    acts = rng.normal(size=(len(labels), 32)).astype(np.float32) + np.eye(k, 32)[labels] * 6
    n_poison = int(share * per_class / (1 - share)) if share > 0.5 else int(share * per_class)
    sources = rng.choice(np.flatnonzero(labels != 0), size=n_poison, replace=False)
    poison_inputs = inputs[sources] + rng.normal(scale=0.1, size=(n_poison, dims))  # looks like its source class
    poison_acts = np.eye(k, 32)[np.zeros(n_poison, int)] * 6 + 12.0 * np.eye(32)[31] + rng.normal(size=(n_poison, 32)) * 0.5
    x_in = np.concatenate([inputs, poison_inputs])
    reps = np.concatenate([acts, poison_acts.astype(np.float32)])
    y = np.concatenate([labels, np.zeros(n_poison, int)])
    truth = set(range(len(labels), len(y)))
    result = analyze([reps], y, x_in, seed=0)
    assert [c.label for c in result.classes if c.suspicious] == [0]
    assert _f1(set(result.flagged.tolist()), truth) >= 0.95


def test_a_wholly_flagged_class_is_reported_without_a_spectral_comparison():
    from types import SimpleNamespace

    from worker.backdoor import Analysis, ClassResult
    from worker.detectors.model import report_findings

    whole = ClassResult(0, 6, True, "", [{"size": 6, "input_disagreement": 0.9}, {"size": 0, "input_disagreement": 0.0}],
                        0.5, poison_side=0, flagged=np.arange(6), agreement=None)
    analysis = Analysis([whole], np.ones(6, dtype=np.float32), {i: ["activation_clustering"] for i in range(6)})
    ds = SimpleNamespace(classes=[0])
    (finding,) = report_findings(ds, analysis, {"layers": ["dense"]}, uploaded=True)
    assert "could not be compared" in finding.explanation and finding.evidence["methods_agreement_jaccard"] is None


def test_model_scans_go_to_the_gpu_queue():
    reg = default_registry()
    assert reg.get("backdoor_activations").layer == "model"
    assert reg.queue_for({"dataset"}) == "gpu"  # the model layer trains a proxy network
    assert reg.queue_for({"dataset"}, ["data_poisoning"]) == "cpu"


def test_wide_layers_are_projected_so_memory_stays_bounded():
    import keras

    from worker.keras_model import embed_layers, representation_layers

    inputs = keras.Input((6, 6, 1))
    wide = keras.layers.Flatten()(keras.layers.Conv2D(40, 3, padding="same")(inputs))  # 1440 wide
    hidden = keras.layers.Dense(16, activation="relu")(keras.layers.Dropout(0.1)(wide))
    functional = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))
    layers = representation_layers(functional)
    assert [layer.name for layer in layers][0] == hidden._keras_history.operation.name
    assert layers[1].name == wide._keras_history.operation.name  # the Dropout pass-through is skipped
    x = np.random.default_rng(0).random((50, 6, 6)).astype(np.float32)
    small, projected = embed_layers(functional, x, layers, max_dims=64, batch=16)
    assert small.shape == (50, 16) and projected.shape == (50, 64)


def test_neighbour_shares_exclude_the_probe_and_stay_within_one_on_a_subsampled_reference():
    from worker.backdoor import NEIGHBOURS, InputNeighbours

    rng = np.random.default_rng(0)
    features = rng.normal(size=(400, 5)).astype(np.float32)
    labels = np.repeat([0, 1], 200)
    labels[:NEIGHBOURS * 2] = 1  # a few probes of class 1 whose neighbours are mostly class 0
    reference = np.arange(0, 400, 2)  # a subsample: odd probes are not in it, even probes are
    neighbours = InputNeighbours(features, labels, seed=0, rows=reference)
    probes = np.arange(400)
    shares = neighbours.per_sample(probes, label=1)
    assert shares.max() <= 1.0 and shares.min() >= 0.0
    nearest = neighbours._nearest(probes)
    assert nearest.shape == (400, NEIGHBOURS)
    assert not (nearest == probes[:, None]).any()  # never its own neighbour
    assert np.isin(nearest, reference).all()
    assert neighbours.labelled_share(probes[:1], [0, 1]) == 1.0


def test_a_two_class_model_is_told_apart_from_one_whose_classes_all_split():
    """With two classes every cross-class comparison is a median and MAD over two values (each class at +-0.67), so
    the report must not say "as the other classes do" or "no class with an unusually small trigger" as if it had
    compared: it says that only probing can confirm a target there."""
    from types import SimpleNamespace

    from worker.detectors.assessment import _verdict
    from worker.detectors.model import split_verdict_text

    split = SimpleNamespace(stands_out=False, robust_z=0.674, flagged=np.arange(3), size=10)
    title, why = split_verdict_text(split, "spam", classes=2)
    assert title == "class spam holds samples that look like the other class" and "no third" in why
    title, why = split_verdict_text(split, "7", classes=10)
    assert title.endswith("as the other classes do") and "Most classes split the same way" in why
    binary, ten = SimpleNamespace(n_classes=2, classes=["ham", "spam"]), SimpleNamespace(n_classes=10, classes=list(range(10)))
    assert "only trigger probing can confirm a target" in _verdict(binary, {}, [], [], {}, uploaded=True).explanation
    assert "With two classes" not in _verdict(ten, {}, [], [], {}, uploaded=True).explanation
