"""The static pickle scanner against published bypass classes, and its false-positive rate on
benign files. Nothing here is ever unpickled: the canary file must never appear."""

import time
import zipfile

import pytest

from tests import payloads
from worker.inspect.archives import Limits, Walker
from worker.local import scan_local_files
from worker.options import ScanOptions
from worker.inspect.allowlist import classify


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, canary):
    root = tmp_path_factory.mktemp("corpus")
    written = {}
    for group, files in (("malicious", payloads.malicious_files(canary)), ("benign", payloads.benign_files())):
        for name, data in files.items():
            (root / group).mkdir(exist_ok=True)
            path = root / group / name
            path.write_bytes(data)
            written[(group, name)] = path
    return written


def serialization_findings(report):
    return next(d for d in report["detectors"] if d["name"] == "unsafe_serialization")["findings"]




def test_every_malicious_file_fails(corpus, canary):
    missed = {}
    for (group, name), path in corpus.items():
        if group != "malicious":
            continue
        report = scan_local_files({"model": path}, ScanOptions())
        critical = [f["title"] for f in serialization_findings(report) if f["severity"] == "critical"]
        if report["verdict"] != "fail" or not critical:
            missed[name] = [(f["severity"], f["title"]) for f in serialization_findings(report)]
    assert missed == {}
    assert not canary.exists()


def test_benign_files_never_fail(corpus):
    for (group, name), path in corpus.items():
        if group != "benign":
            continue
        report = scan_local_files({"model": path}, ScanOptions())
        bad = [(f["severity"], f["title"]) for f in serialization_findings(report) if f["severity"] in ("critical", "high")]
        assert report["verdict"] != "fail" and bad == [], (name, bad)
        allowed = scan_local_files({"model": path}, ScanOptions(detector_config={"unsafe_serialization": {"allow_pickle": True}}))
        assert allowed["verdict"] == "pass", (name, serialization_findings(allowed))


def test_pickle_formats_warn_by_default(corpus):
    report = scan_local_files({"model": corpus[("benign", "state_dict.pkl")]}, ScanOptions())
    assert report["verdict"] == "warn"
    assert any(f["title"] == "model uses pickle serialization" for f in serialization_findings(report))


def test_the_break_does_not_hide_the_payload(corpus):
    findings = serialization_findings(scan_local_files({"model": corpus[("malicious", "broken_after_payload.pkl")]}, ScanOptions()))
    titles = [f["title"] for f in findings]
    assert "model pickle imports posix.system and calls it" in titles or "model pickle imports os.system and calls it" in titles
    broken = next(f for f in findings if "cannot be parsed to the end" in f["title"])
    assert broken["severity"] == "high" and broken["evidence"]["globals_before_break"]  # not understood: fails closed


def test_dynamic_stack_global_is_critical(corpus):
    findings = serialization_findings(scan_local_files({"model": corpus[("malicious", "dynamic_global.pkl")]}, ScanOptions()))
    critical = {f["evidence"]["global"] for f in findings if f["severity"] == "critical"}
    assert critical == {"builtins.getattr", "<result of builtins.getattr>.system"}


def test_where_the_payload_was_found(corpus):
    findings = serialization_findings(scan_local_files({"model": corpus[("malicious", "zip_in_zip.zip")]}, ScanOptions()))
    critical = next(f for f in findings if f["severity"] == "critical")
    assert critical["evidence"]["occurrences"][0]["location"] == "zip_in_zip.zip!inner.zip!model.pkl"
    summary = next(f for f in findings if f["title"] == "model serialization scanned")
    assert summary["evidence"]["files"][0]["containers"] == ["zip_in_zip.zip", "zip_in_zip.zip!inner.zip"]


def test_allowlist_first_classification():
    assert classify("torch._utils", "_rebuild_tensor_v2") == "safe"
    assert classify("collections", "OrderedDict") == "safe"
    assert classify("sklearn.linear_model._logistic", "LogisticRegression") == "safe"
    assert classify("sklearn.utils._testing", "assert_run_python_script") == "unknown"  # functions are never allowed by prefix
    assert classify("mypackage.models", "Net") == "unknown"
    for module, name in [("os", "system"), ("posix", "system"), ("nt", "system"), ("subprocess", "check_output"), ("builtins", "getattr"),
                         ("torch.serialization", "load"), ("numpy.testing._private.utils", "runstring"), ("operator", "attrgetter"),
                         ("pip._internal.cli.main", "main"), ("webbrowser", "open"), ("shutil", "rmtree"), ("socket", "create_connection")]:
        assert classify(module, name) == "dangerous", (module, name)


def test_zip_bomb_is_a_finding_not_a_hang(tmp_path):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("weights.bin", b"\0" * (64 * 1024 * 1024))
    started = time.monotonic()
    scan = Walker().scan_file(bomb)
    assert time.monotonic() - started < 5
    assert [p.title for p in scan.problems] == ["compression bomb"]
    report = scan_local_files({"model": bomb}, ScanOptions())
    assert report["verdict"] == "fail"


def test_deep_nesting_and_member_limits(tmp_path):
    data = payloads.zip_of({"leaf.txt": b"hello"})
    for level in range(10):
        data = payloads.zip_of({f"level{level}.zip": data})
    nested = tmp_path / "nested.zip"
    nested.write_bytes(data)
    assert "containers nested too deep" in [p.title for p in Walker().scan_file(nested).problems]
    many = tmp_path / "many.zip"
    many.write_bytes(payloads.zip_of({f"m{i}.bin": b"x" for i in range(50)}))
    assert "too many archive members" in [p.title for p in Walker(Limits(max_members=10)).scan_file(many).problems]


def test_zip_slip_member_names(tmp_path):
    path = tmp_path / "slip.zip"
    path.write_bytes(payloads.zip_of({"../../etc/cron.d/evil": b"* * * * * root id", "ok.bin": b"x"}))
    problems = Walker().scan_file(path).problems
    assert [(p.title, p.severity) for p in problems] == [("archive member escapes its folder", "high")]


def test_tensorflow_savedmodel_file_ops(tmp_path):
    import os
    import zipfile

    import tensorflow as tf

    class Reader(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
        def read(self, path):
            return tf.io.read_file(path)

    class Clean(tf.Module):
        def __init__(self):
            self.scale = tf.Variable(2.0)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def __call__(self, x):
            return x * self.scale

    titles = {}
    for name, module in (("reader", Reader()), ("clean", Clean())):
        tf.saved_model.save(module, str(tmp_path / name))
        archive = tmp_path / f"{name}.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            for root, _, files in os.walk(tmp_path / name):
                for fn in files:
                    zf.write(os.path.join(root, fn), os.path.relpath(os.path.join(root, fn), tmp_path))
        titles[name] = [p.title for p in Walker().scan_file(archive).problems]
    assert titles == {"reader": ["TensorFlow graph reads or writes files"], "clean": []}


def test_zip_entry_hidden_from_the_central_directory(corpus):
    path = corpus[("malicious", "zip_hidden_local_entry.zip")]
    assert zipfile.ZipFile(path).namelist() == ["config.json"]  # what directory-based tools see
    titles = {(f["severity"], f["title"]) for f in serialization_findings(scan_local_files({"model": path}, ScanOptions()))}
    assert ("high", "model zip entry hidden from the central directory") in titles
    assert any(sev == "critical" and "system" in title for sev, title in titles)
