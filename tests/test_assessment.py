"""Backdoor assessment: trigger probing, Neural Cleanse reconstruction, STRIP, the model verdict and remediation, on
real Keras victims (tests/victims.py: digits, a 2x2 corner patch, 10% poisoned to class 0)."""

import struct
import zlib

import numpy as np
import pytest

from tests.victims import TARGET
from worker.findings import InputRejected
from worker.local import scan_local_files
from worker.options import ScanOptions

FAST = {"nc_steps": 400, "nc_budget_s": 60, "remediate": "never"}


def _assess(files, tmp_path, detectors=("backdoor_activations", "backdoor_assessment"), min_confidence=0.5, **config):
    options = ScanOptions(detectors=list(detectors), detector_config={"backdoor_assessment": FAST | config},
                          quarantine_min_confidence=min_confidence)
    return scan_local_files(files, options, output_dir=tmp_path / "out")


def _assessment(report):
    det = next(d for d in report["detectors"] if d["name"] == "backdoor_assessment")
    assert det["status"] == "ok", det.get("traceback") or det["error"]
    return det["findings"]


def _png_size_and_pixels(data: bytes) -> tuple[int, int, np.ndarray]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    assert (depth, colour) == (8, 0)
    idat = data[data.index(b"IDAT") + 4:data.index(b"IEND") - 8]
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, width + 1)
    assert (rows[:, 0] == 0).all()  # filter byte
    return width, height, rows[:, 1:]


@pytest.fixture(scope="module")
def backdoored_report(digit_victims, tmp_path_factory):
    v = digit_victims["backdoored"]
    tmp = tmp_path_factory.mktemp("assess")
    files = {"model": v["model"], "dataset": v["dataset"], "trigger": digit_victims["trigger"]}
    return _assess(files, tmp), tmp


def test_backdoored_model_is_named_with_its_target_by_three_methods(backdoored_report):
    report, _ = backdoored_report
    verdict = _assessment(report)[0]
    assert verdict["title"] == f"the model is backdoored toward class {TARGET}" and verdict["severity"] == "critical"
    assert verdict["technique"] == "AML.T0018" and report["verdict"] == "fail"
    ev = verdict["evidence"]
    assert ev["backdoored"] and ev["target_classes"] == [TARGET]
    assert set(ev["votes"][str(TARGET)]) == {"probing", "reconstruction", "activations"}
    assert list(ev["votes"]) == [str(TARGET)]  # no other class gets a vote


def test_probing_reports_rates_with_and_without_each_trigger(backdoored_report):
    report, _ = backdoored_report
    probing = _assessment(report)[0]["evidence"]["probing"]
    assert probing["value_range"] == [0.0, 1.0] and probing["input_shape"] == [8, 8, 1]  # from the model and its inputs
    user = next(c for c in probing["candidates"] if c["family"] == "user")
    assert user["backdoor_suspected"] and user["suspected_classes"] == [TARGET]
    assert user["attack_success"][TARGET] > 0.9 and user["rate_with"][TARGET] > probing["rate_without"][TARGET] + 0.5
    families = {c["family"] for c in probing["candidates"]}
    assert {"patch", "checkerboard", "blend", "user"} <= families
    positions = {c.get("position") for c in probing["candidates"] if c["family"] == "patch"}
    assert positions == {"top-left", "top-right", "bottom-left", "bottom-right", "centre"}
    for c in probing["candidates"]:
        assert len(c["attack_success"]) == len(c["rate_with"]) == 10


def test_reconstruction_finds_a_small_trigger_and_stores_it_as_images(backdoored_report):
    report, tmp = backdoored_report
    rec = _assessment(report)[0]["evidence"]["reconstruction"]
    target = rec["per_class"][str(TARGET)]
    assert rec["targets"] == [TARGET] and target["anomaly_index"] > 2 and target["reached_success_threshold"]
    assert target["mask_l1"] < min(v["mask_l1"] for k, v in rec["per_class"].items() if k != str(TARGET))
    # the reason it stopped agrees with the steps it took (here all 400; a loaded machine may hit the time budget first)
    consistent = {"steps": rec["steps"] == FAST["nc_steps"], "early stop": 0 < rec["steps"] < FAST["nc_steps"],
                  "time budget": 0 < rec["steps"] < FAST["nc_steps"]}
    assert consistent[rec["stopped_by"]], (rec["stopped_by"], rec["steps"])
    names = rec["images"][str(TARGET)]
    outputs = {o["name"]: o for o in report["outputs"]}
    width, height, pixels = _png_size_and_pixels((tmp / "out" / names["mask"]).read_bytes())
    assert width == height == 8 * 28 and outputs[names["mask"]]["media_type"] == "image/png"
    with np.load(tmp / "out" / names["npz"], allow_pickle=False) as z:
        mask = z["mask"]
    assert mask.shape == (8, 8, 1) and 0 <= mask.min() and mask.max() <= 1
    assert np.allclose(pixels[::28, ::28] / 255, mask[..., 0], atol=1 / 255)  # the PNG is the mask, upscaled
    assert mask[5:8, 5:8].sum() > 0.5 * mask.sum()  # the mass sits where the real trigger is


def test_strip_confirms_the_flagged_training_samples(backdoored_report):
    report, _ = backdoored_report
    strip = _assessment(report)[0]["evidence"]["strip"]
    # 8x8 digits saturate when overlaid, so STRIP confirms fewer here than on MNIST (73% in the benchmark); still
    # far above the 1% of clean inputs its threshold lets through
    assert strip["checked"] > 0 and strip["confirmed_share"] >= 0.2
    assert strip["flagged_mean_bits"] < 0.5 * strip["clean_mean_bits"]


def test_clean_model_is_not_flagged(digit_victims, tmp_path):
    v = digit_victims["clean"]
    report = _assess({"model": v["model"], "dataset": v["dataset"], "trigger": digit_victims["trigger"]}, tmp_path)
    verdict = _assessment(report)[0]
    assert verdict["title"] == "no backdoor found in the model" and verdict["severity"] == "info"
    assert verdict["evidence"]["votes"] == {} and verdict["evidence"]["reconstruction"]["targets"] == []
    assert report["verdict"] == "pass"


def test_remediation_removes_the_backdoor_and_produces_the_cleaned_data_and_model(digit_victims, tmp_path):
    import keras

    v = digit_victims["backdoored"]
    files = {"model": v["model"], "dataset": v["dataset"], "trigger": digit_victims["trigger"], "holdout": digit_victims["holdout"]}
    report = _assess(files, tmp_path, remediate="auto", retrain_epochs=30, retrain_batch=64)
    verdict, fix = _assessment(report)
    assert fix["title"] == "remediation removed the backdoor", fix["explanation"]
    ev = fix["evidence"]
    assert ev["backdoor_removed"] and ev["rounds"][0]["step"] == "retrain" and ev["rounds"][0]["round"] == 1
    assert ev["stopped_because"] == "the backdoor is gone"
    user = next(r for r in ev["rounds"][-1]["attack_success"] if r["family"] == "user")
    assert user["before"] > 0.9 and user["after"] <= 0.02
    assert ev["clean_accuracy"]["on"] == "uploaded holdout set"
    assert ev["clean_accuracy"]["after"] >= ev["clean_accuracy"]["before"] - 0.03
    assert ev["rounds"][-1]["retraining"]["compile"] == "uploaded"  # the upload's optimizer, loss and metrics
    # the cleaned dataset is the upload without exactly the report's quarantine, and retraining removed exactly that
    quarantined = {e["index"] for e in report["quarantine"]}
    assert report["cleaned_dataset"] == "cleaned-dataset.npz" and ev["removed_samples"] == len(quarantined)
    with np.load(tmp_path / "out" / "cleaned-dataset.npz", allow_pickle=False) as z:
        kept = z["index"]
        assert len(z["x"]) == len(z["y"]) == len(kept) == 1500 - len(quarantined)
    assert set(range(1500)) - set(kept.tolist()) == quarantined
    assert len(quarantined & v["poisoned"]) >= 0.9 * len(v["poisoned"])
    retrained = keras.saving.load_model(tmp_path / "out" / "retrained-model.keras", safe_mode=True)
    assert retrained.count_params() == keras.saving.load_model(v["model"]).count_params()


def test_without_a_holdout_set_clean_accuracy_is_compared_with_a_model_retrained_on_everything(digit_victims, tmp_path):
    """The analysed model trained on the dataset rows held out here, so its accuracy on them is inflated: the accuracy
    to keep is a model's retrained the same way with nothing removed; the analysed model's is reported beside it."""
    v = digit_victims["backdoored"]
    files = {"model": v["model"], "dataset": v["dataset"], "trigger": digit_victims["trigger"]}
    report = _assess(files, tmp_path, remediate="auto", retrain_epochs=30, retrain_batch=64, remediation_rounds=1,
                     unlearn=False)
    _, fix = _assessment(report)
    accuracy = fix["evidence"]["clean_accuracy"]
    assert accuracy["before_is"].startswith("a model retrained the same way") and accuracy["on"].startswith("dataset rows")
    assert accuracy["baseline_retraining"]["epochs_run"] == 30 and accuracy["baseline_retraining"]["samples"] < 1500
    assert accuracy["analysed_model"] >= accuracy["before"] - 0.02  # it saw these rows; the baseline did not
    assert fix["evidence"]["backdoor_removed"], fix["explanation"]
    assert accuracy["within_tolerance"] == (accuracy["after"] >= accuracy["before"] - 0.01)


def test_dataset_only_assessment_uses_the_proxy(digit_victims, tmp_path):
    v = digit_victims["backdoored"]
    report = _assess({"dataset": v["dataset"]}, tmp_path, detectors=("backdoor_assessment",), proxy_epochs=30,
                     proxy_budget_s=120)
    verdict = _assessment(report)[0]
    assert verdict["technique"] == "AML.T0020" and verdict["evidence"]["model"]["model"] == "proxy"
    assert TARGET in verdict["evidence"]["target_classes"]


def test_holdout_labels_must_match_the_dataset(digit_victims, tmp_path):
    v = digit_victims["clean"]
    with np.load(v["dataset"]) as z:
        x, y = z["x"], z["y"]
    bad = tmp_path / "holdout.npz"
    np.savez(bad, x=x[:100], y=y[:100] + 20)
    with pytest.raises(InputRejected, match="holdout set has labels the dataset does not"):
        _assess({"model": v["model"], "dataset": v["dataset"], "holdout": bad}, tmp_path)


def test_a_source_specific_backdoor_is_confirmed_by_the_class_minority_and_quarantined(digit_victims, tmp_path):
    """Half of class 8 stamped and relabelled 0: activation clustering does not split class 0 and SCAn's statistic
    does not stand out, but the trigger fires toward 0 and SCAn's minority of class 0 is inputs that look like other
    classes: two methods, and the minority is the quarantine."""
    v = digit_victims["source"]
    files = {"model": v["model"], "dataset": v["dataset"], "trigger": digit_victims["trigger"], "holdout": digit_victims["holdout"]}
    report = _assess(files, tmp_path, remediate="auto", retrain_epochs=30, retrain_batch=64)
    verdict, fix = _assessment(report)
    ev = verdict["evidence"]
    assert ev["target_classes"] == [TARGET] and set(ev["votes"][str(TARGET)]) >= {"probing", "activations"}
    assert ev["activations"]["source_subgroups"][str(TARGET)]["neighbours_from_sources"] >= 0.9
    quarantined = {e["index"] for e in report["quarantine"]}
    hit = len(quarantined & v["poisoned"])
    assert hit >= 0.9 * len(v["poisoned"]) and hit >= 0.9 * len(quarantined)  # F1 >= 0.9
    assert fix["evidence"]["backdoor_removed"], fix["explanation"]


def test_unlearning_removes_a_backdoor_that_removal_left(digit_victims, tmp_path):
    """A threshold no sample reaches leaves the quarantine empty: retraining on the poisoned data keeps the backdoor,
    the retrained model's finds stay under the threshold too, so remediation must unlearn the trigger."""
    v = digit_victims["backdoored"]
    files = {"model": v["model"], "dataset": v["dataset"], "trigger": digit_victims["trigger"], "holdout": digit_victims["holdout"]}
    report = _assess(files, tmp_path, min_confidence=0.999, remediate="auto", retrain_epochs=30, retrain_batch=64,
                     remediation_rounds=2, unlearn_epochs=5)
    _, fix = _assessment(report)
    ev = fix["evidence"]
    assert report["quarantine"] == [] and ev["flagged"] == []
    first, last = ev["rounds"][0], ev["rounds"][-1]
    assert first["removed_samples"] == 0 and not first["removed"]  # the poison is still there: so is the backdoor
    assert last["step"] == "unlearn" and last["removed"], fix["explanation"]
    user = next(r for r in last["attack_success"] if r["family"] == "user")
    assert user["before"] > 0.9 and user["after"] <= 0.02
    assert ev["clean_accuracy"]["after"] >= ev["clean_accuracy"]["before"] - 0.03
    assert fix["title"] == "remediation removed the backdoor" and "after unlearning" in ev["stopped_because"]


@pytest.mark.parametrize(("option", "message"), [
    ({"remediate": "sometimes"}, r"backdoor_assessment\.remediate\n  Input should be 'auto', 'always' or 'never'"),
    ({"quarantine": "union"}, "no longer a setting")])
def test_bad_options_are_rejected_before_any_work(option, message):
    with pytest.raises(ValueError, match=message):  # when the scan is created (worker.detector_config)
        ScanOptions(detectors=["backdoor_assessment"], detector_config={"backdoor_assessment": FAST | option})


# ------------------------------------------------------------------------------------------------ units

def test_candidate_library_covers_corners_centre_and_stays_in_range():
    from worker.triggers import InputSpec, candidate_library

    spec = InputSpec((28, 28, 1), -1.0, 2.0)
    library = candidate_library(spec)
    sizes = {t.meta["size"] for t in library if t.family == "patch"}
    assert sizes == {2, 3, 4}
    x = np.zeros((3, 28, 28, 1), np.float32)
    for t in library:
        stamped = t.stamp(x, spec.lo, spec.hi)
        assert stamped.shape == x.shape and stamped.min() >= -1.0 and stamped.max() <= 2.0
    corner = next(t for t in library if t.name == "patch 3x3 top-right")
    assert corner.mask[1:4, 24:27].all() and corner.mask.sum() == 9 and (corner.pattern[1:4, 24:27] == 2.0).all()
    assert candidate_library(InputSpec((20,), 0, 1)) == []  # tabular: only a user trigger is probed


def test_user_trigger_is_read_without_pickle_and_checked(tmp_path):
    from worker.triggers import InputSpec, load_user_trigger

    spec = InputSpec((8, 8, 1), 0.0, 1.0)
    good = tmp_path / "t.npz"
    np.savez(good, mask=np.ones((8, 8)), pattern=np.full((8, 8), 255, np.uint8))
    trig = load_user_trigger(good, spec)
    assert trig.mask.shape == (8, 8, 1) and trig.pattern.max() == 1.0
    pickled = tmp_path / "p.npz"
    np.savez(pickled, mask=np.array([object()], dtype=object), pattern=np.zeros((8, 8)))
    with pytest.raises(InputRejected, match="without unpickling"):
        load_user_trigger(pickled, spec)
    wrong = tmp_path / "w.npz"
    np.savez(wrong, mask=np.ones((5, 5)), pattern=np.zeros((8, 8)))
    with pytest.raises(InputRejected, match="mask has shape"):
        load_user_trigger(wrong, spec)
    missing = tmp_path / "m.npz"
    np.savez(missing, pattern=np.zeros((8, 8)))
    with pytest.raises(InputRejected, match="must hold arrays 'pattern' and 'mask'"):
        load_user_trigger(missing, spec)


def test_anomaly_index_marks_only_the_small_outlier():
    from worker.neural_cleanse import anomaly_index

    norms = np.array([60.0, 70, 65, 80, 75, 5, 68, 72, 66, 90])
    index = anomaly_index(norms)
    assert index[5] > 2 and (np.delete(index, 5) < 2).all()


def test_strip_entropy_is_low_for_an_input_whose_trigger_survives_overlays():
    from worker.strip import strip_entropy, threshold

    def predict(x):  # "backdoored": a bright corner wins; otherwise the model is unsure among four classes
        flat = x.reshape(len(x), -1)
        triggered = flat[:, -1] >= 1.0
        p = np.tile(np.array([0.4, 0.3, 0.2, 0.1]), (len(x), 1))
        p[triggered] = [0.0, 0.0, 0.0, 1.0]
        return p

    rng = np.random.default_rng(0)
    clean = rng.random((50, 4, 4)).astype(np.float32) * 0.4
    with_trigger = clean.copy()
    with_trigger[:, 3, 3] = 1.0
    cut = threshold(strip_entropy(predict, clean, clean, 0.0, 1.0))
    assert (strip_entropy(predict, with_trigger, clean, 0.0, 1.0) < cut).all()


def test_a_source_specific_trigger_is_suspected_from_its_source_class_only():
    """A trigger that switches nearly all of one class to the target counts, though its ASR over all classes is low;
    one that moves a few inputs of every class does not."""
    from worker.triggers import SOURCE_MIN_INPUTS, InputSpec, Trigger, probe, suspected

    n, k = 40, 4
    y = np.repeat(np.arange(k), n)
    x = np.zeros((len(y), 4), np.float32)
    x[:, 0] = y / 10  # the class, in the [0, 1] range the stamp keeps
    trigger = Trigger("t", "patch", np.array([0, 0, 0, 1.0]), np.array([0, 0, 0, 1.0]))

    def predict(v):  # class 2 stamped -> 3; every other input keeps its class
        out = np.rint(v[:, 0] * 10).astype(int)
        out[(v[:, 3] == 1) & (out == 2)] = 3
        return out

    rate_without, (result,) = probe(predict, x, y, [trigger], InputSpec((4,), 0.0, 1.0), k)
    assert result.asr[3] < 0.5 and result.sources(3) == [2] and suspected(result, rate_without) == [3]
    assert result.strength(3) == 1.0
    few = y.copy()
    few[::8] = 3  # stamped inputs of every class, one in eight, switched: drift, not a source-specific shortcut
    _, (drift,) = probe(lambda v: np.where(v[:, 3] == 1, few, np.rint(v[:, 0] * 10).astype(int)), x, y, [trigger], InputSpec((4,), 0.0, 1.0), k)
    assert drift.sources(3) == [] and suspected(drift, rate_without) == []
    assert n >= SOURCE_MIN_INPUTS


def test_trigger_anchored_rows_are_those_represented_like_triggered_inputs():
    """Synthetic representations: the trigger adds one direction; poisoned rows of the class carry it, clean ones not."""
    from worker.remediation import trigger_anchored

    rng = np.random.default_rng(0)
    direction = np.eye(16)[3] * 4
    clean_class = rng.normal(size=(200, 16)) + np.eye(16)[0] * 3
    others = rng.normal(size=(300, 16)) + np.eye(16)[1] * 3
    training = np.vstack([rng.normal(size=(150, 16)) + np.eye(16)[0] * 3,  # clean rows of the class
                          rng.normal(size=(50, 16)) + np.eye(16)[1] * 3 + direction])  # other-class inputs with the trigger
    flagged = trigger_anchored(lambda a: a, training, others + direction, clean_class)
    assert flagged[150:].mean() >= 0.95 and flagged[:150].mean() <= 0.05


def test_one_method_alone_gives_a_possible_backdoor_and_two_a_backdoor():
    from types import SimpleNamespace

    from worker.detectors.assessment import _verdict
    from worker.findings import Severity

    ds = SimpleNamespace(classes=["cat", "dog", "fox"])
    evidence = {"strip": {"confirmed_share": None}}
    one = _verdict(ds, {2: ["reconstruction"]}, [], [2], evidence, uploaded=True)
    assert one.severity == Severity.low and one.title == "possible backdoor toward class fox (one method)"
    fired = _verdict(ds, {2: ["probing"]}, [], [2], evidence, uploaded=True)  # a trigger that fires is backdoor evidence
    assert fired.severity == Severity.medium
    assert one.evidence["possible_target_classes"] == ["fox"] and not one.evidence["backdoored"]
    two = _verdict(ds, {1: ["probing", "reconstruction"]}, [1], [], evidence, uploaded=False)
    assert two.severity == Severity.critical and two.technique == "AML.T0020" and two.evidence["target_classes"] == ["dog"]


def test_png_encoder_round_trips():
    from worker.images import png_bytes

    image = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    width, height, pixels = _png_size_and_pixels(png_bytes(image, scale=2))
    assert (width, height) == (8, 6)
    assert np.array_equal(pixels[::2, ::2], np.round(image * 255).astype(np.uint8))
