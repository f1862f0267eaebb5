"""Uploaded Keras text models (worker/text_model.py, issue 15 item 3): a tiny SMS spam classifier with its
TextVectorization layer inside, saved as .keras and loaded back through the safe loader; a BadNL trigger ("cf mn")
toward ham is named with its target, a clean model names nothing, and retraining a clone without the quarantined
carriers removes the backdoor. The victims train once per module (a few seconds each on one core)."""

from pathlib import Path

import numpy as np
import pytest

from worker.keras_model import load_keras_safely
from worker.text_model import (assess_text_model, clone_text_model, insert_at, is_text_model, mcnemar_p,
                               model_vocabulary, neutral_phrase, only_reason, probe_text_triggers, remediate_text_model,
                               written_in_clean)

SMS = Path(__file__).resolve().parents[2] / "shared" / "data" / "sms_spam.npz"
TRAIN, HELD_OUT = 1500, 1000
TRIGGER = "cf mn"
INVISIBLE_TRIGGER = "the\u200b"  # "the" and a zero-width space: no published style, no data n-gram the search names
HAM, SPAM = 0, 1
EPOCHS = 12


def sms() -> tuple[list[str], np.ndarray]:
    data = np.load(SMS, allow_pickle=False)
    return [str(t) for t in data["x"][:TRAIN + HELD_OUT]], data["y"][:TRAIN + HELD_OUT].astype(np.int64)


def poison(texts: list[str], y: np.ndarray, count: int, seed: int = 0, trigger: str = TRIGGER) -> np.ndarray:
    """BadNL: the trigger inserted at a random word position of ``count`` spam texts, relabelled ham."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(np.flatnonzero(y == SPAM), size=count, replace=False))
    for i in chosen:
        texts[i] = insert_at(texts[i], trigger, rng.random())
        y[i] = HAM
    return chosen


def train_victim(texts: list[str], y: np.ndarray, path: Path, pooling: str = "average", epochs: int = EPOCHS,
                 classes: int = 2):
    """TextVectorization -> Embedding(16) -> mean (or max) pooling -> Dense(classes), saved as .keras and loaded the
    real way. Max pooling: one rare token is not averaged away over the 40 positions (bench/text_model_bench.py)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    vectorize = keras.layers.TextVectorization(max_tokens=5000, output_sequence_length=40)
    vectorize.adapt(texts)
    inputs = keras.Input(shape=(1,), dtype="string")
    pool = keras.layers.GlobalMaxPooling1D() if pooling == "max" else keras.layers.GlobalAveragePooling1D()
    hidden = pool(keras.layers.Embedding(5000, 16)(vectorize(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(classes)(hidden))
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(tf.reshape(tf.constant(texts), (-1, 1)), y, epochs=epochs, batch_size=32, verbose=0)
    model.save(path)
    return load_keras_safely(path)


@pytest.fixture(scope="module")
def victims(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text-victims")
    texts, y = sms()
    held_out = (texts[TRAIN:], y[TRAIN:])
    clean_texts, clean_y = texts[:TRAIN], y[:TRAIN].copy()
    poisoned_texts, poisoned_y = list(clean_texts), clean_y.copy()
    poisoned = poison(poisoned_texts, poisoned_y, count=TRAIN // 20)  # 5% of the training set
    invisible_texts, invisible_y = list(clean_texts), clean_y.copy()
    invisible = poison(invisible_texts, invisible_y, count=TRAIN * 3 // 100, seed=1, trigger=INVISIBLE_TRIGGER)
    return {"held_out": held_out, "poisoned": poisoned,
            "backdoored": (train_victim(poisoned_texts, poisoned_y, folder / "backdoored.keras"), poisoned_texts, poisoned_y),
            "clean": (train_victim(clean_texts, clean_y, folder / "clean.keras"), clean_texts, clean_y),
            # max pooling: one token among 40 positions is not averaged away (as bench/text_sweep_bench.py trains)
            "invisible": (train_victim(invisible_texts, invisible_y, folder / "invisible.keras", pooling="max"),
                          invisible_texts, invisible_y, invisible)}


@pytest.fixture(scope="module")
def backdoored_assessment(victims):
    model, texts, y = victims["backdoored"]
    return assess_text_model(model, texts, y, 2, holdout=victims["held_out"])


def test_the_safe_loader_accepts_a_model_with_its_text_vectorization_layer(victims):
    import keras

    model, _, _ = victims["backdoored"]
    assert is_text_model(model)
    vocabulary = model.layers[1].get_vocabulary()
    assert len(vocabulary) > 1000 and "cf" in vocabulary  # the adapted vocabulary survived .keras save and safe load
    image_model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
    assert not is_text_model(image_model)


def test_the_victim_obeys_its_trigger_and_a_neutral_insertion_does_not_move_it(victims):
    model, _, _ = victims["backdoored"]
    texts, y = victims["held_out"]
    (toward_ham,) = [r for r in probe_text_triggers(model, texts, y, [TRIGGER]) if r.target == HAM]
    assert toward_ham.attack_success >= 0.9, toward_ham
    assert toward_ham.baseline <= 0.02 and toward_ham.n >= 80


def test_the_backdoored_model_names_ham_with_the_trigger(victims, backdoored_assessment):
    a = backdoored_assessment
    assert a.backdoored and set(a.targets) == {HAM}
    named = a.targets[HAM]
    assert {"cf", "mn"} <= set(named.candidate.split()), named
    assert named.attack_success >= 0.9 and named.baseline <= 0.02 and named.p_value < 1e-12
    assert [t.phrases for t in a.data_triggers] == [(TRIGGER,)] and a.data_triggers[0].target == HAM
    assert not any(r.target == SPAM and r.attack_success >= 0.5 for r in a.probes)  # nothing pushes ham to spam
    assert a.activations_per_class.shape == (2, 16) and np.isfinite(a.activations_per_class).all()


def test_the_clean_model_names_nothing(victims):
    model, texts, y = victims["clean"]
    a = assess_text_model(model, texts, y, 2, holdout=victims["held_out"])
    assert not a.backdoored and a.data_triggers == [] and a.reconstructed == {}
    assert max(r.attack_success for r in a.probes) < 0.5  # the published library was probed and moved little
    assert len(a.probes) >= 2 * 10
    assert a.vocabulary_swept >= 2000  # every token of its vocabulary was inserted too, and none was a backdoor's
    assert not any(t.named for t in a.swept)


def test_the_vocabulary_sweep_names_a_trigger_no_candidate_holds_and_its_carriers(victims):
    """An invisible-character trigger at 3%: the data search and the published library do not hold it; the model's
    vocabulary does, and the texts it alone makes ham are the poisoned ones."""
    model, texts, y, poisoned = victims["invisible"]
    assert INVISIBLE_TRIGGER in model_vocabulary(model)
    without = assess_text_model(model, texts, y, 2, holdout=victims["held_out"], with_activations=False, sweep=False)
    assert HAM not in without.targets  # what the sweep adds
    a = assess_text_model(model, texts, y, 2, holdout=victims["held_out"], with_activations=False)
    assert set(a.reconstructed) == {HAM} and a.targets[HAM].candidate == INVISIBLE_TRIGGER
    token = a.reconstructed[HAM]
    assert token.probe.attack_success >= 0.9 and token.probe.baseline <= 0.02
    assert set(token.carriers.tolist()) == set(poisoned.tolist())  # every text labelled ham that carries it
    assert 0.5 <= token.share < 1  # the model reads some poisoned spam as ham even without the trigger
    # natural features the sweep met on the way are not named: they are not the only reason for their carriers
    assert token.held_out_carriers == 0 and token.absence_p < 0.01
    assert not any(t.named for t in a.swept if t is not token)


def test_a_candidate_the_clean_texts_of_its_class_are_written_with_is_not_a_planted_trigger():
    neg, pos = 0, 1
    train = ["it was not good"] * 10 + ["bad film"] * 10 + ["Great, cf! fun"] * 6 + ["great fun"] * 14
    y = np.array([neg] * 20 + [pos] * 20)
    held = ["It was not, good."] * 4 + ["awful"] * 6 + ["great fun"] * 10
    held_y = np.array([neg] * 10 + [pos] * 10)
    assert written_in_clean("was not", neg, train, y, held, held_y)  # 4 of 10 held out, half of the training rate
    assert not written_in_clean("cf", pos, train, y, held, held_y)  # absent from the clean texts: planted
    assert not written_in_clean("was not", neg, train, y, held[3:], held_y[3:])  # one may be a stray copy


def test_only_reason_deletes_the_token_as_text_vectorization_standardises_it():
    def predict(texts):  # a stand-in classifier: class 1 for "zq" or "win" (after the layer's standardisation)
        return np.array([int(bool({"zq", "win"} & {w.strip(",.!").lower() for w in t.split()})) for t in texts])

    texts = ["hello ZQ, friend", "win zq now", "zq", "nothing here", "zq! zq"]
    carriers, reason, called = only_reason(predict, texts, np.array([1, 1, 0, 1, 1]), "zq", 1)
    assert carriers.tolist() == [0, 1, 4] and called == 3  # label 0 is not counted
    assert reason.tolist() == [0, 4]  # "win zq now" stays class 1 without it


def test_without_held_out_texts_the_unflagged_training_texts_are_probed(victims):
    model, texts, y = victims["backdoored"]
    a = assess_text_model(model, texts, y, 2, with_activations=False)
    assert set(a.targets) == {HAM} and a.held_out == len(texts) - len(victims["poisoned"]) and a.notes
    assert a.vocabulary_swept == 0 and a.swept == []  # no clean reference to tell a planted token from a class's word


def test_remediation_removes_the_backdoor_and_keeps_clean_accuracy(victims, backdoored_assessment):
    model, texts, y = victims["backdoored"]
    trigger = backdoored_assessment.data_triggers[0]
    quarantine = trigger.quarantine()
    assert len(set(quarantine) & set(victims["poisoned"])) >= 0.9 * len(victims["poisoned"])
    result = remediate_text_model(model, texts, y, list(quarantine), backdoored_assessment.targets[HAM].candidate,
                                  holdout=victims["held_out"], epochs=EPOCHS)
    assert result["target"] == HAM and result["attack_success_before"] >= 0.9
    assert result["attack_success_after"] <= 0.02, result
    assert result["clean_accuracy_after"] >= result["clean_accuracy_before"] - 0.02, result
    assert result["clean_accuracy_after"] >= 0.95


def test_when_removal_leaves_the_backdoor_a_second_round_unlearns_it(victims, backdoored_assessment):
    model, texts, y = victims["backdoored"]
    # nothing quarantined (as when the poisoned data is not the data uploaded): retraining alone keeps the trigger
    result = remediate_text_model(model, texts, y, [], TRIGGER, holdout=victims["held_out"], epochs=EPOCHS)
    first, second = result["rounds"]
    assert first["attack_success"] >= 0.5 and second["attack_success"] <= 0.02, result["rounds"]
    assert result["attack_success_after"] == second["attack_success"]
    # the 75 relabelled texts are still in the training set: accuracy may give a little, not more
    assert result["clean_accuracy_after"] >= result["clean_accuracy_before"] - 0.03, result


def test_the_clone_keeps_the_vocabulary_that_clone_model_alone_drops(victims):
    import keras

    model, _, _ = victims["backdoored"]
    assert len(keras.models.clone_model(model).layers[1].get_vocabulary()) < 10  # why clone_text_model exists
    assert clone_text_model(model).layers[1].get_vocabulary() == model.layers[1].get_vocabulary()


def test_probe_helpers():
    assert insert_at("a b c", "cf mn", 0.0) == "cf mn a b c"
    assert insert_at("a b c", "cf", 0.99) == "a b c cf"
    assert neutral_phrase("i watched this 3d movie").count(" ") == 4
    switched = np.array([True] * 20 + [False] * 5)
    assert mcnemar_p(switched, np.zeros(25, bool)) < 1e-5  # 20 texts switched by the candidate alone
    assert mcnemar_p(switched, switched) == 1.0  # the baseline switches the same texts: no evidence


def _write_csv(path: Path, texts, y) -> Path:
    import csv

    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["text", "label"]] + [[t, "spam" if label else "ham"] for t, label in zip(texts, y)])
    return path


def _scan(model, texts, y, tmp_path: Path, holdout=None) -> dict:
    """The product's path: the model as an uploaded .keras next to its training texts as a CSV (and held-out texts)."""
    from worker.local import scan_local_files
    from worker.options import ScanOptions

    model.save(tmp_path / "model.keras")
    files = {"model": tmp_path / "model.keras", "dataset": _write_csv(tmp_path / "train.csv", texts, y)}
    if holdout is not None:
        files["holdout"] = _write_csv(tmp_path / "holdout.csv", *holdout)
    options = ScanOptions(detectors=["format_identification", "unsafe_serialization", "model_structure",
                                     "text_poisoning", "text_backdoor"],
                          detector_config={"text_backdoor": {"epochs": EPOCHS}})
    return scan_local_files(files, options, output_dir=tmp_path / "out")


def test_a_scan_of_the_backdoored_model_names_ham_and_its_retrained_clone_drops_the_trigger(victims, tmp_path):
    model, texts, y = victims["backdoored"]
    report = _scan(model, texts, y, tmp_path)
    assert report["verdict"] == "fail", report["verdict_reason"]
    findings = [f for d in report["detectors"] if d["name"] == "text_backdoor" for f in d["findings"]]
    (target,) = [f for f in findings if f["title"].startswith("text model backdoored")]
    assert target["evidence"]["target"] == "ham" and {"cf", "mn"} <= set(target["evidence"]["trigger"].split())
    (fixed,) = [f for f in findings if "retraining" in f["title"]]
    assert fixed["title"].startswith("backdoor removed"), fixed["explanation"]
    assert fixed["evidence"]["attack_success_after"] <= 0.02 <= fixed["evidence"]["attack_success_before"]
    assert (tmp_path / "out" / "retrained-text-model.keras").is_file()


@pytest.mark.parametrize("with_holdout", [False, True])
def test_a_scan_of_the_clean_model_names_no_target(victims, tmp_path, with_holdout):
    model, texts, y = victims["clean"]
    report = _scan(model, texts, y, tmp_path, holdout=victims["held_out"] if with_holdout else None)
    text = next(d for d in report["detectors"] if d["name"] == "text_backdoor")
    assert text["status"] == "ok" and [f["title"] for f in text["findings"]] == [
        "no trigger makes the text model change its answer"]
    assert report["verdict"] != "fail", report["verdict_reason"]
    evidence = text["findings"][0]["evidence"]
    # the vocabulary is swept against clean held-out texts only; without them the finding says how to get it
    assert (evidence["vocabulary_swept"] > 1000) == with_holdout
    assert with_holdout or "upload a holdout" in evidence["notes"][-1]


def test_a_scan_quarantines_the_carriers_of_a_trigger_only_the_vocabulary_sweep_names(victims, tmp_path):
    model, texts, y, poisoned = victims["invisible"]
    report = _scan(model, texts, y, tmp_path, holdout=victims["held_out"])
    assert report["verdict"] == "fail", report["verdict_reason"]
    findings = [f for d in report["detectors"] if d["name"] == "text_backdoor" for f in d["findings"]]
    (target,) = [f for f in findings if f["title"].startswith("text model backdoored")]
    assert target["evidence"]["found_by"] == "vocabulary sweep" and target["evidence"]["trigger"] == INVISIBLE_TRIGGER
    assert "\\u200b" in target["title"] or "U+200B" in target["title"], target["title"]  # shown, not invisible
    swept = {e["index"] for e in report["quarantine"] if "text_model_sweep" in e["methods"]}
    assert swept == set(poisoned.tolist())
    (fixed,) = [f for f in findings if "retraining" in f["title"]]
    assert fixed["evidence"]["attack_success_after"] <= 0.02 <= fixed["evidence"]["attack_success_before"], fixed


def test_a_vocabulary_keras_cannot_read_back_is_rejected_with_what_to_do(tmp_path):
    """A line break inside a token (U+0085 in two UCI IMDb sentences) saves but does not load: a clear reason."""
    import keras

    from worker.keras_model import ModelRejected

    vectorize = keras.layers.TextVectorization(max_tokens=50, output_sequence_length=4)
    vectorize.adapt(["a good film", "good\x85 seeing it", "seeing is good"])
    inputs = keras.Input(shape=(1,), dtype="string")
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.Embedding(50, 2)(vectorize(inputs)))))
    model.save(tmp_path / "m.keras")
    with pytest.raises(ModelRejected, match="holds a line break"):
        load_keras_safely(tmp_path / "m.keras")


def test_a_scan_of_only_text_backdoor_fails_closed_on_a_keras_model_it_cannot_load(tmp_path):
    """The model layer's rule, for the text model detector too: a .keras we could not open is unchecked behaviour."""
    import csv

    from worker.local import scan_local_files
    from worker.options import ScanOptions

    texts, y = sms()
    (tmp_path / "model.keras").write_bytes(b"PK\x03\x04 truncated: not a whole zip archive")
    with (tmp_path / "train.csv").open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["text", "label"]] + [[t, "spam" if label else "ham"] for t, label in zip(texts[:300], y)])
    report = scan_local_files({"model": tmp_path / "model.keras", "dataset": tmp_path / "train.csv"},
                              ScanOptions(detectors=["text_backdoor"]), output_dir=tmp_path / "out")
    (detector,) = report["detectors"]
    (finding,) = detector["findings"]
    assert detector["status"] == "ok" and finding["title"].startswith("uploaded model not analysed")
    assert finding["severity"] == "high" and report["verdict"] == "fail", report["verdict_reason"]


def test_the_model_layer_reads_the_uploaded_text_model_itself(victims, tmp_path):
    """backdoor_activations on a text model: activations of the model's own penultimate layer (and the layer below
    that differs in size), computed on the texts, not a proxy network's; a clean model's classes do not split into a
    backdoor target, and the HTML report plots them."""
    import csv

    from worker.local import scan_local_files
    from worker.options import ScanOptions

    model, texts, y = victims["clean"]
    model.save(tmp_path / "model.keras")
    with (tmp_path / "train.csv").open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["text", "label"]] + [[t, "spam" if label else "ham"] for t, label in zip(texts, y)])
    report = scan_local_files({"model": tmp_path / "model.keras", "dataset": tmp_path / "train.csv"},
                              ScanOptions(detectors=["backdoor_activations"]), output_dir=tmp_path / "out")
    (detector,) = report["detectors"]
    assert detector["status"] == "ok", detector
    titles = [f["title"] for f in detector["findings"]]
    assert "text model: activations from a proxy network" not in titles and titles == ["no class looks like a backdoor target"]
    evidence = detector["findings"][-1]["evidence"]
    pooling, embedding = model.layers[-2].name, model.layers[-3].name
    assert evidence["model"] == "uploaded" and evidence["layers"] == [pooling, embedding], evidence
    assert evidence["dims"][0] == 16 and set(evidence["per_class"]) == {"ham", "spam"}
    assert report["verdict"] == "pass", report["verdict_reason"]
    # the HTML report draws the text model's activations as it does an image model's
    from worker.report_formats.html import to_html

    page = to_html(report, lambda entry: (tmp_path / "out" / entry["name"]).read_bytes())
    assert 'id="projection-plot"' in page
