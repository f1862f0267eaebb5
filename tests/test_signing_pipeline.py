"""Signature verification wired into the pipeline: the model as the store keeps it (under its hash),
attachments as scan inputs, and the policy for unsigned models."""

import shutil

from tests.test_signing import key_sign, pki  # noqa: F401  (fixture)
from worker.hashing import sha256_file
from worker.findings import InputFile, ScanInputs
from worker.options import ScanOptions
from worker.pipeline import run_pipeline

OPTIONS = ScanOptions(detectors=["signature_verification"])


def stored(path, role, tmp_path):
    """Copy a file into a content-addressed layout, as the artifact store holds it."""
    sha = sha256_file(path)
    target = tmp_path / "store" / sha[:2] / sha
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, target)
    return InputFile(role, target, sha, path.name, None)


def only_finding(report):
    (detector,) = report["detectors"]
    assert detector["status"] == "ok", detector
    (finding,) = detector["findings"]
    return finding


def test_signed_model_verifies_from_the_store(pki, tmp_path):  # noqa: F811
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"\x01" * 512)
    sig = key_sign(pki, model, tmp_path / "model.sig")
    inputs = ScanInputs(model=stored(model, "model", tmp_path), signature=stored(sig, "signature", tmp_path),
                        public_key=stored(pki["pub"], "public_key", tmp_path))
    report = run_pipeline(inputs, OPTIONS)
    assert only_finding(report)["title"] == "model signature verified (key-based)" and report["verdict"] == "pass"
    assert {i["role"] for i in report["inputs"]} == {"model", "signature", "public_key"}


def test_tampered_model_fails(pki, tmp_path):  # noqa: F811
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"\x01" * 512)
    sig = key_sign(pki, model, tmp_path / "model.sig")
    model.write_bytes(b"\x02" * 512)  # changed after signing
    inputs = ScanInputs(model=stored(model, "model", tmp_path), signature=stored(sig, "signature", tmp_path),
                        public_key=stored(pki["pub"], "public_key", tmp_path))
    report = run_pipeline(inputs, OPTIONS)
    assert only_finding(report)["severity"] == "critical" and report["verdict"] == "fail"


def test_unsigned_is_reported_and_policy_decides(tmp_path):
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"\x01" * 64)
    inputs = ScanInputs(model=stored(model, "model", tmp_path))
    default = only_finding(run_pipeline(inputs, OPTIONS))
    assert (default["title"], default["severity"]) == ("model is unsigned", "low")
    strict = run_pipeline(inputs, ScanOptions(detectors=["signature_verification"], detector_config={"signature_verification": {"require_signature": True}}))
    assert only_finding(strict)["severity"] == "high" and strict["verdict"] == "fail"
