"""The scan context (worker.context): each expensive thing is computed once per scan, and a detector gets only what it
declared. Loads are counted by wrapping the real loaders (they still run); nothing is mocked."""

import pickle

import numpy as np
import pytest

import worker.datasets
import worker.inspect.sandbox
import worker.keras_model
from worker.context import ScanContext, UndeclaredNeed
from worker.findings import Finding, InputFile, ScanInputs, Severity
from worker.hashing import sha256_file
from worker.keras_model import ModelRejected
from worker.local import scan_local_files
from worker.options import ScanOptions
from worker.pipeline import run_pipeline
from worker.registry import Registry


def _count(monkeypatch, module, name: str) -> list:
    """Wrap ``module.name`` so each call is recorded (its first argument) and still made."""
    real, calls = getattr(module, name), []

    def counted(*args, **kwargs):
        calls.append(args[0] if args else None)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def _file(role: str, path) -> InputFile:
    return InputFile(role, path, sha256_file(path), path.name)


def test_dataset_and_model_are_loaded_once_for_the_data_and_model_layers(digit_victims, tmp_path, monkeypatch):
    v = digit_victims["backdoored"]
    datasets = _count(monkeypatch, worker.datasets, "load_dataset")
    models = _count(monkeypatch, worker.keras_model, "load_keras_safely")
    options = ScanOptions(detectors=["data_poisoning", "backdoor_activations", "backdoor_assessment"],
                          detector_config={"backdoor_assessment": {"nc_steps": 50, "remediate": "never"}})
    report = scan_local_files({"model": v["model"], "dataset": v["dataset"]}, options, output_dir=tmp_path / "out")
    ran = {d["name"]: d for d in report["detectors"]}
    assert all(d["status"] == "ok" for d in ran.values()), {n: d["error"] for n, d in ran.items()}
    assert list(ran) == ["data_poisoning", "backdoor_activations", "backdoor_assessment"]
    features = next(f for f in ran["data_poisoning"]["findings"] if f["evidence"].get("features"))
    assert features["evidence"]["features"] == "model"  # the data layer used the uploaded model
    assert ran["backdoor_assessment"]["findings"][0]["evidence"]["model"] == {"model": "uploaded"}
    assert datasets == [v["dataset"]]  # once, for three detectors
    assert models == [v["model"]]


def test_a_rejected_model_is_remembered_not_loaded_again(tmp_path, monkeypatch):
    path = tmp_path / "model.bin"
    path.write_bytes(b"not a keras model")
    calls = _count(monkeypatch, worker.keras_model, "load_keras_safely")
    context = ScanContext(ScanInputs(model=_file("model", path))).for_detector("d", ["model"])
    for _ in range(2):
        with pytest.raises(ModelRejected, match="not a Keras"):
            context.model()
    assert calls == [path]


def test_the_static_inspection_runs_once_for_both_supply_chain_detectors(tmp_path, monkeypatch):
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    calls = _count(monkeypatch, worker.inspect.sandbox, "inspect_in_child")
    report = scan_local_files({"model": path}, ScanOptions(detectors=["unsafe_serialization", "model_structure"]))
    assert [d["status"] for d in report["detectors"]] == ["ok", "ok"]
    assert calls == [path]


def _dataset_inputs(tmp_path) -> ScanInputs:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.arange(8.0).reshape(4, 2), y=np.array([0, 1, 0, 1]))
    return ScanInputs(dataset=_file("dataset", path))


def test_an_undeclared_need_is_refused(tmp_path):
    reg = Registry()

    @reg.register(name="declared", layer="data", technique="AML.T0020", needs=("dataset",), uses=("dataset",))
    def declared(inputs, config, context):
        return [Finding(f"{len(context.dataset().y)} rows", Severity.info, 0.0, "")]

    @reg.register(name="sneaky", layer="data", technique="AML.T0020", needs=("dataset",), uses=("dataset",))
    def sneaky(inputs, config, context):
        context.outputs.add("x.txt", b"x", media_type="text/plain", description="not declared")
        return []

    report = run_pipeline(_dataset_inputs(tmp_path), ScanOptions(), registry=reg, output_dir=tmp_path / "out")
    ran = {d["name"]: d for d in report["detectors"]}
    assert ran["declared"]["status"] == "ok" and ran["declared"]["findings"][0]["title"] == "4 rows"
    assert ran["sneaky"]["status"] == "error" and ran["sneaky"]["error"].startswith("UndeclaredNeed")
    assert "'sneaky'" in ran["sneaky"]["error"] and "'outputs'" in ran["sneaky"]["error"]
    assert report["outputs"] == []

    nothing = ScanContext(_dataset_inputs(tmp_path)).for_detector("plain", ())
    for need in (nothing.dataset, nothing.model, lambda: nothing.outputs, lambda: nothing.model_layer({}, print)):
        with pytest.raises(UndeclaredNeed):
            need()


def test_registration_checks_what_a_detector_uses():
    reg = Registry()
    with pytest.raises(ValueError, match="unknown uses"):
        reg.register(name="a", layer="data", technique="AML.T0020", uses=("gpu",))
    with pytest.raises(ValueError, match="no ``context`` parameter"):
        reg.register(name="b", layer="data", technique="AML.T0020", uses=("dataset",))(lambda inputs, config: [])
    with pytest.raises(ValueError, match="take ``context``"):
        reg.register(name="c", layer="data", technique="AML.T0020")(lambda inputs, config, shared: [])
