import numpy as np
import pytest

from worker.catalog import default_registry
from worker.findings import Finding, InputFile, ScanInputs, Severity
from worker.options import ScanOptions
from worker.pipeline import run_pipeline
from worker.policy import Policy, decide
from worker.registry import Registry


def test_verdicts_follow_the_policy():
    p = Policy()
    assert decide(p, [], 0)[0] == "pass"
    assert decide(p, [Severity.info, Severity.low], 0)[0] == "pass"
    assert decide(p, [Severity.medium], 0)[0] == "warn"
    assert decide(p, [Severity.high], 0)[0] == "fail"
    assert decide(Policy(fail_at="medium"), [Severity.medium], 0)[0] == "fail"
    assert decide(Policy(warn_at="critical", fail_at="critical"), [Severity.high], 0)[0] == "pass"
    # a crashed detector means an incomplete scan: never a clean pass by default
    assert decide(p, [], 1)[0] == "warn"
    assert decide(Policy(on_detector_error="fail"), [], 1)[0] == "fail"


def _dataset(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((4, 2)), y=np.array([0, 1, 0, 1]))
    from worker.hashing import sha256_file

    return ScanInputs(dataset=InputFile("dataset", path, sha256_file(path), "d.npz", "npz"))


def test_failing_detector_is_isolated_and_reported(tmp_path):
    reg = Registry()

    @reg.register(name="boom", layer="data", technique="AML.T0020", needs=("dataset",))
    def boom(inputs, config):
        raise RuntimeError("detector exploded")

    @reg.register(name="ok", layer="supply_chain", technique="AML.T0010")
    def ok(inputs, config):
        return [Finding("fine", Severity.low, 0.1, "all good")]

    stages = []
    report = run_pipeline(_dataset(tmp_path), ScanOptions(), registry=reg, progress=lambda s, p: stages.append((s, p)))
    by_name = {d["name"]: d for d in report["detectors"]}
    assert [d["name"] for d in report["detectors"]] == ["ok", "boom"]  # supply chain runs first
    assert by_name["boom"]["status"] == "error" and "detector exploded" in by_name["boom"]["error"]
    assert by_name["ok"]["findings"][0]["technique"] == "AML.T0010"
    assert report["verdict"] == "warn" and report["summary"]["detectors_failed"] == 1
    assert [s for s, _ in stages] == ["supply_chain:ok", "data:boom", "verdict"]


def test_detectors_that_do_not_apply_are_not_run(tmp_path):
    reg = Registry()

    @reg.register(name="needs_model", layer="model", technique="AML.T0018", needs=("model",), queue="gpu")
    def needs_model(inputs, config):
        raise AssertionError("must not run without a model")

    report = run_pipeline(_dataset(tmp_path), ScanOptions(), registry=reg)
    assert report["detectors"] == [] and report["verdict"] == "pass"
    assert reg.queue_for({"model"}) == "gpu" and reg.queue_for({"model", "dataset"}) == "gpu"
    assert reg.queue_for({"dataset"}) == "cpu"


def test_data_layer_moves_to_the_gpu_queue_when_it_runs_the_uploaded_model():
    reg = default_registry()
    assert reg.queue_for({"dataset"}, ["data_poisoning"]) == "cpu"  # proxy features: scikit-learn only
    assert reg.queue_for({"dataset", "model"}, ["data_poisoning"]) == "gpu"  # the model's embeddings: TensorFlow


def test_integrity_detector_catches_altered_bytes(tmp_path):
    inputs = _dataset(tmp_path)
    clean = run_pipeline(inputs, ScanOptions(detectors=["artifact_integrity"]))
    assert clean["verdict"] == "pass"
    inputs.dataset.path.write_bytes(inputs.dataset.path.read_bytes() + b"tampered")
    tampered = run_pipeline(inputs, ScanOptions(detectors=["artifact_integrity"]))
    assert tampered["verdict"] == "fail"
    finding = next(f for f in tampered["detectors"][0]["findings"] if f["severity"] == "critical")
    assert finding["title"] == "dataset bytes do not match their expected SHA-256" and finding["technique"] == "AML.T0010"


def test_report_schema(tmp_path):
    import time

    started = time.perf_counter()
    report = run_pipeline(_dataset(tmp_path), ScanOptions(), scan_id="abc")
    elapsed = time.perf_counter() - started
    assert report["schema_version"] == "1.0"
    assert report["inputs"][0]["sha256"] and report["inputs"][0]["kind"] == "npz"
    assert {d["name"] for d in report["detectors"]} == {s.name for s in default_registry().select({"dataset"})}
    assert "signature_verification" not in {d["name"] for d in report["detectors"]}  # needs a model
    durations = [d["duration_s"] for d in report["detectors"]]
    assert all(d > 0 for d in durations) and sum(durations) <= elapsed  # each one timed, within the run
    assert report["policy"]["fail_at"] == "high"


def test_archive_manifest_and_expected_manifest(tmp_path):
    import hashlib
    import zipfile

    from worker.hashing import sha256_file

    path = tmp_path / "model.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", b"{}")
        zf.writestr("weights.bin", b"\x01" * 100)
    inputs = ScanInputs(model=InputFile("model", path, sha256_file(path), "model.zip", "zip"))
    expected = {"config.json": hashlib.sha256(b"{}").hexdigest(), "weights.bin": hashlib.sha256(b"\x01" * 100).hexdigest()}
    only = ScanOptions(detectors=["artifact_integrity"])
    plain = run_pipeline(inputs, only)["detectors"][0]["findings"]
    assert plain[0]["title"] == "model archive manifest (2 members)" and plain[0]["evidence"]["manifest"] == expected
    ok = run_pipeline(inputs, ScanOptions(detectors=["artifact_integrity"], detector_config={"artifact_integrity": {"expected_manifest": {"model": expected}}}))
    assert ok["verdict"] == "pass"
    tampered = {"config.json": expected["config.json"], "weights.bin": "0" * 64, "tokenizer.json": "1" * 64}
    bad = run_pipeline(inputs, ScanOptions(detectors=["artifact_integrity"], detector_config={"artifact_integrity": {"expected_manifest": {"model": tampered}}}))
    finding = bad["detectors"][0]["findings"][0]
    assert bad["verdict"] == "fail" and finding["evidence"]["changed"] == ["weights.bin"] and finding["evidence"]["missing"] == ["tokenizer.json"]


def test_detectors_report_sub_stages_and_cancellation_is_not_a_detector_error(tmp_path):
    import pytest

    from worker.pipeline import PipelineStopped

    reg = Registry()

    @reg.register(name="long", layer="data", technique="AML.T0020", needs=("dataset",))
    def long_running(inputs, config, progress):
        progress("folds", 0.5)
        if config.get("stop"):
            progress("cleanlab", 1.0)
        return []

    stages = []
    run_pipeline(_dataset(tmp_path), ScanOptions(), registry=reg, progress=lambda s, p: stages.append((s, round(p, 1))))
    assert stages == [("data:long", 0.0), ("data:long:folds", 49.5), ("verdict", 99.0)]

    def cancel_at_cleanlab(stage, percent):
        if stage.endswith("cleanlab"):
            raise PipelineStopped("canceled")

    with pytest.raises(PipelineStopped):
        run_pipeline(_dataset(tmp_path), ScanOptions.model_construct(detectors=None, policy=ScanOptions().policy, detector_config={"long": {"stop": True}}),
                     registry=reg, progress=cancel_at_cleanlab)


def test_a_detector_runs_after_the_ones_it_reads_whatever_the_registration_order():
    reg = Registry()

    @reg.register(name="reader", layer="data", technique="AML.T0020", needs=("dataset",), after=("writer",))
    def reader(inputs, config):
        return []

    @reg.register(name="other", layer="data", technique="AML.T0020", needs=("dataset",))
    def other(inputs, config):
        return []

    @reg.register(name="writer", layer="data", technique="AML.T0020", needs=("dataset",))
    def writer(inputs, config):
        return []

    assert [s.name for s in reg.select({"dataset"})] == ["other", "writer", "reader"]
    assert [s.name for s in reg.select({"dataset"}, ["reader"])] == ["reader"]  # after= orders, it never adds
    looping = Registry()
    for name, waits_on in (("a", "b"), ("b", "a")):
        looping.register(name=name, layer="data", technique="AML.T0020", after=(waits_on,))(lambda inputs, config: [])
    with pytest.raises(ValueError, match="wait on each other"):
        looping.select({"dataset"})
    # the label-flip tests judge what the trigger search leaves: it must have run (worker.detectors.data)
    names = [s.name for s in default_registry().select({"dataset"})]
    assert names.index("text_poisoning") < names.index("data_poisoning")
