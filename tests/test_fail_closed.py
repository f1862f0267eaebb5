"""The gate fails closed: what poisonscan could not read, parse or understand is a `fail` with the reason, at the
default policy; a critical supply-chain finding ends the scan early; exit 2 is only for usage errors; output
cannot lie. Nothing here is ever unpickled or loaded (the canary must never appear)."""

import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from worker.findings import Finding, ScanInputs, Severity
from worker.inspect import artifact
from worker.inspect.artifact import InspectOptions, inspect_artifact
from worker.local import scan_local_files
from worker.options import ScanOptions
from worker.pipeline import run_pipeline
from worker.registry import Registry

BIN = str(Path(sys.executable).with_name("poisonscan"))
# numpy.f2py.crackfortran.myeval evaluates its argument; it is on no danger list, and that must not matter.
UNKNOWN_CALL = b"\x80\x02cnumpy.f2py.crackfortran\nmyeval\nX\x03\x00\x00\x001+1\x85R."
UNKNOWN_IMPORT_ONLY = b"\x80\x02cmypackage.layers\nCONSTANT\n."


def findings_of(report, detector=None):
    return [f for d in report["detectors"] if detector in (None, d["name"]) for f in d["findings"]]


def cli(*args, timeout=180):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout)


def test_a_called_global_outside_the_allowlist_fails_even_when_no_denylist_knows_it(tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(UNKNOWN_CALL)
    report = scan_local_files({"model": path}, ScanOptions())
    assert report["verdict"] == "fail"
    high = [f for f in findings_of(report, "unsafe_serialization") if f["severity"] == "high"]
    assert [f["title"] for f in high] == ["model pickle calls 1 global(s) outside the allowlist"]
    assert "numpy.f2py.crackfortran.myeval" in high[0]["evidence"]["globals"]


def test_a_global_only_handed_out_is_high_too(tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(UNKNOWN_IMPORT_ONLY)
    report = scan_local_files({"model": path}, ScanOptions())
    assert report["verdict"] == "fail"
    assert any("not called while loading" in f["title"] and f["severity"] == "high" for f in findings_of(report, "unsafe_serialization"))


def test_a_user_allowlist_admits_named_globals_and_says_which_entry_did(tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(UNKNOWN_CALL)
    options = ScanOptions(detector_config={"unsafe_serialization": {"allow_globals": ["numpy.f2py.*"], "allow_pickle": True}})
    report = scan_local_files({"model": path}, options)
    assert report["verdict"] == "pass", findings_of(report, "unsafe_serialization")
    allowed = next(f for f in findings_of(report) if f["title"].endswith("allowed by your allowlist"))
    assert allowed["evidence"]["allowed_by"] == {"numpy.f2py.*": ["numpy.f2py.crackfortran.myeval"]}


def test_a_wildcard_never_admits_a_dangerous_global(tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    report = scan_local_files({"model": path}, ScanOptions(detector_config={"unsafe_serialization": {"allow_globals": ["os.*"]}}))
    assert report["verdict"] == "fail"
    assert any(f["severity"] == "critical" for f in findings_of(report, "unsafe_serialization"))


def test_allowlist_entries_are_validated_when_the_scan_is_created():
    with pytest.raises(ValueError, match="allow_globals"):
        ScanOptions(detector_config={"unsafe_serialization": {"allow_globals": ["os.system; rm -rf"]}})
    with pytest.raises(ValueError):
        ScanOptions(detector_config={"unsafe_serialization": {"alow_pickle": True}})


def test_a_crashed_inspector_is_not_inspected_and_fails(tmp_path, monkeypatch):
    def broken_check(path):
        raise RuntimeError("parser bug")

    monkeypatch.setattr(artifact, "structure_check", lambda kind: broken_check)
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    result = inspect_artifact(path, path.name, InspectOptions())
    (finding,) = result.files[0].structure
    assert finding.severity == Severity.high and "not inspected" in finding.title and "parser bug" in finding.explanation


def test_a_crashed_supply_chain_detector_fails_the_scan(tmp_path):
    reg = Registry()

    @reg.register(name="crashes", layer="supply_chain", technique="AML.T0010")
    def crashes(inputs, config):
        raise RuntimeError("boom")

    path = tmp_path / "m.bin"
    path.write_bytes(b"x")
    from worker.findings import InputFile

    inputs = ScanInputs(model=InputFile("model", path, "0" * 64, "m.bin"))
    report = run_pipeline(inputs, ScanOptions(), registry=reg)
    assert report["verdict"] == "fail" and "on_supply_chain_error" in report["verdict_reason"]
    lenient = run_pipeline(inputs, ScanOptions(policy={"on_supply_chain_error": "warn"}), registry=reg)
    assert lenient["verdict"] == "warn"


def test_a_child_killed_by_its_limit_is_not_inspected_and_fails(tmp_path):
    # ~4.8 million opcodes: seconds of CPU to walk, far over a 1 s CPU limit
    path = tmp_path / "slow.pkl"
    path.write_bytes(b"\x80\x04" + b"N0" * 2_400_000 + b"N.")
    options = ScanOptions(detector_config={"unsafe_serialization": {"sandbox": {"cpu_s": 1}}})
    report = scan_local_files({"model": path}, options)
    assert report["verdict"] == "fail"
    killed = [f for f in findings_of(report) if "not inspected" in f["title"]]
    assert killed and "resource limit" in killed[0]["explanation"], [f["title"] for f in findings_of(report)]


def test_a_file_of_no_known_format_gets_a_verdict_not_an_error(tmp_path):
    path = tmp_path / "weights.dat"
    path.write_bytes(bytes(range(256)) * 64)
    result = cli("scan", "--model", str(path), "--format", "json")
    assert result.returncode == 1, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["verdict"] == "fail"
    assert any("not inspected" in f["title"] for f in findings_of(report, "model_structure"))
    for name, data in (("notes.txt", b"just some text\n"), ("table.csv", b"a,b\n1,2\n"), ("empty.bin", b"")):
        lone = tmp_path / name  # data on its own is no model: never a pass
        lone.write_bytes(data)
        report = scan_local_files({"model": lone}, ScanOptions())
        assert report["verdict"] == "fail", (name, [f["title"] for f in findings_of(report)])
    (tmp_path / "empty-folder").mkdir()
    assert scan_local_files({"model": tmp_path / "empty-folder"}, ScanOptions())["verdict"] == "fail"
    missing = cli("scan", "--model", str(tmp_path / "nope.bin"))
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_a_critical_model_finding_ends_the_scan_before_the_data_layer(tmp_path, canary):
    model = tmp_path / "model.pkl"
    model.write_bytes(f"cos\nsystem\n(S'touch {canary}'\ntR.".encode())
    dataset = tmp_path / "train.npz"
    rng = np.random.default_rng(0)
    np.savez(dataset, x=rng.normal(size=(400, 8)).astype(np.float32), y=rng.integers(0, 2, 400))
    started = time.perf_counter()
    report = scan_local_files({"model": model, "dataset": dataset}, ScanOptions())
    fast = time.perf_counter() - started
    skipped = [d["name"] for d in report["detectors"] if d["status"] == "skipped"]
    assert report["verdict"] == "fail" and "data_poisoning" in skipped and "backdoor_activations" in skipped
    assert "stop_at_critical" in next(d for d in report["detectors"] if d["status"] == "skipped")["skipped_because"]
    full = cli("scan", "--model", str(model), "--dataset", str(dataset), "--full-scan", "--format", "json",
               "--detectors", "unsafe_serialization,data_poisoning")
    assert full.returncode == 1 and [d["status"] for d in json.loads(full.stdout)["detectors"]] == ["ok", "ok"]
    assert fast < 60 and not canary.exists()


def hf_snapshot(root: Path, canary: Path) -> Path:
    from tests.payloads import Payload, torch_like_state_dict

    import pickle

    root.mkdir()
    (root / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "hidden_size": 8}))
    (root / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 512}))
    (root / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\n")
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    (root / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\x00" * 8)
    with zipfile.ZipFile(root / "pytorch_model.bin", "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(Payload(canary), protocol=2) + torch_like_state_dict())
    return root


def test_a_model_folder_is_scanned_in_one_process_and_each_file_reported(tmp_path, canary):
    folder = hf_snapshot(tmp_path / "snapshot", canary)
    result = cli("scan", "--model", str(folder), "--format", "json")
    assert result.returncode == 1, result.stderr[-2000:]
    report = json.loads(result.stdout)
    verdicts = {f["file"]: f["verdict"] for f in report["files"]}
    assert verdicts["pytorch_model.bin"] == "fail"
    assert {verdicts[n] for n in ("config.json", "tokenizer_config.json", "vocab.txt", "model.safetensors")} == {"pass"}
    assert any(f["evidence"].get("file") == "pytorch_model.bin" and f["severity"] == "critical" for f in findings_of(report))
    assert not canary.exists()


def test_escape_sequences_in_artifact_strings_never_reach_the_terminal(tmp_path):
    path = tmp_path / "evil.zip"
    forged = "x\x1b[2K\r\x1b[1A\x1b[2Kverdict: PASS (nothing found)\x1b]0;title\x07.pkl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(forged, b"cos\nsystem\n(S'true'\ntR.")
    result = cli("scan", "--model", str(path))
    assert result.returncode == 1
    assert "\x1b" not in result.stdout and "\r" not in result.stdout and "\x07" not in result.stdout
    assert "\\x1b[2K" in result.stdout  # shown, escaped
    as_json = json.loads(cli("scan", "--model", str(path), "--format", "json").stdout)
    locations = [o["location"] for f in findings_of(as_json) for o in f["evidence"].get("occurrences", [])]
    assert f"evil.zip!{forged}" in locations  # JSON stays exact


def test_finding_round_trips_through_the_sandbox_format():
    f = Finding("t", Severity.high, 0.5, "e", "r", {"k": [1, "\x1b"]}, "AML.T0010")
    assert Finding.from_dict(json.loads(json.dumps(f.to_dict()))) == f


def test_a_text_file_that_is_not_utf8_fails_with_what_to_do_and_the_refused_bytes_hash(tmp_path):
    import hashlib

    path = tmp_path / "reviews.csv"
    path.write_bytes("text,label\r\nCaf\xe9 tr\xe8s bon,pos\r\nNever again,neg\r\n".encode("latin-1"))
    done = cli("scan", "--dataset", str(path), "--format", "json")
    assert done.returncode == 1, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["verdict"] == "fail"
    assert "not valid UTF-8: line 2" in report["verdict_reason"] and "save it as UTF-8" in report["verdict_reason"]
    assert report["inputs"] == [{"role": "dataset", "filename": "reviews.csv", "kind": "unknown",
                                 "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}]
