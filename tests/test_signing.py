"""OpenSSF model-signing verification, offline: real key- and certificate-based signatures built here."""

import base64
import datetime
import json

import pytest

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402
from model_signing import signing  # noqa: E402

from worker.detectors.signing import verify_model_signature  # noqa: E402
from worker.findings import Severity  # noqa: E402

NOW = datetime.datetime.now(datetime.timezone.utc)


def write_key_pair(directory, name):
    key = ec.generate_private_key(ec.SECP256R1())
    priv, pub = directory / f"{name}.key", directory / f"{name}.pub"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return key, priv, pub


def key_usage(*, digital_signature=False, key_cert_sign=False):
    return x509.KeyUsage(digital_signature=digital_signature, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign,
                         crl_sign=key_cert_sign, encipher_only=False, decipher_only=False)


def make_ca(directory, name):
    key, _, _ = write_key_pair(directory, name)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1)).not_valid_after(NOW + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(key_usage(key_cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    path = directory / f"{name}.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def make_leaf(directory, ca_key, ca_cert, name):
    """A leaf with what model-signing checks: chains to the CA, and digitalSignature key usage (or codeSigning EKU)."""
    key, priv, _ = write_key_pair(directory, name)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(hours=1)).not_valid_after(NOW + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    path = directory / f"{name}.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return priv, path


@pytest.fixture
def pki(tmp_path):
    d = tmp_path / "pki"
    d.mkdir()
    _, priv, pub = write_key_pair(d, "publisher")
    _, _, other_pub = write_key_pair(d, "attacker")
    ca_key, ca_cert, ca_path = make_ca(d, "Publisher CA")
    leaf_priv, leaf_cert = make_leaf(d, ca_key, ca_cert, "publisher-signer")
    _, _, other_ca = make_ca(d, "Other CA")
    return {"priv": priv, "pub": pub, "other_pub": other_pub, "ca": ca_path, "other_ca": other_ca,
            "leaf_priv": leaf_priv, "leaf_cert": leaf_cert}


@pytest.fixture
def model_dir(tmp_path):
    m = tmp_path / "model"
    (m / "tokenizer").mkdir(parents=True)
    (m / "config.json").write_text('{"hidden": 8}')
    (m / "model.safetensors").write_bytes(b"\x00" * 256)
    (m / "tokenizer" / "vocab.txt").write_text("a\nb\n")
    return m


def key_sign(pki, model, sig):
    signing.Config().use_elliptic_key_signer(private_key=pki["priv"]).sign(model, sig)
    return sig


def one(findings):
    assert len(findings) == 1
    f = findings[0]
    assert f.technique == "AML.T0010"
    json.dumps(f.to_dict())  # evidence is JSON-serializable
    return f


def test_valid_key_based_directory(pki, model_dir, tmp_path):
    sig = key_sign(pki, model_dir, tmp_path / "model.sig")
    f = one(verify_model_signature(model_dir, sig, public_key_path=pki["pub"]))
    assert f.severity == Severity.info
    assert f.title == "model signature verified (key-based)"
    assert f.evidence["check"] == "model-signing/key"
    assert f.evidence["trust_anchor"]["public_key_path"] == str(pki["pub"])
    assert {r["name"] for r in f.evidence["signed_files"]} == {"config.json", "model.safetensors", "tokenizer/vocab.txt"}
    assert all(len(r["digest"]) == 64 for r in f.evidence["signed_files"])


def test_valid_key_based_single_file(pki, tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"onnx-bytes")
    sig = key_sign(pki, model, tmp_path / "model.onnx.sig")
    f = one(verify_model_signature(model, sig, public_key_path=pki["pub"]))
    assert (f.severity, f.title) == (Severity.info, "model signature verified (key-based)")


def test_signature_inside_model_directory_is_ignored(pki, model_dir):
    sig = model_dir / "model.sig"  # signed before the signature file existed, as publishers ship it
    signing.Config().use_elliptic_key_signer(private_key=pki["priv"]).sign(model_dir, model_dir.parent / "tmp.sig")
    (model_dir.parent / "tmp.sig").rename(sig)
    f = one(verify_model_signature(model_dir, sig, public_key_path=pki["pub"]))
    assert f.severity == Severity.info
    assert f.evidence["ignored_paths"] == ["model.sig"]


def test_valid_certificate_based(pki, model_dir, tmp_path):
    sig = tmp_path / "model.sig"
    signing.Config().use_certificate_signer(private_key=pki["leaf_priv"], signing_certificate=pki["leaf_cert"],
                                            certificate_chain=[pki["ca"]]).sign(model_dir, sig)
    f = one(verify_model_signature(model_dir, sig, certificate_chain_paths=[pki["ca"]]))
    assert f.severity == Severity.info
    assert f.title == "model signature verified (certificate-based)"
    assert f.evidence["check"] == "model-signing/certificate"
    assert f.evidence["signer_certificate"]["subject"] == "CN=publisher-signer"
    assert f.evidence["trust_anchor"]["trusted_certificates"][0]["subject"] == "CN=Publisher CA"


def test_certificate_from_untrusted_ca(pki, model_dir, tmp_path):
    sig = tmp_path / "model.sig"
    signing.Config().use_certificate_signer(private_key=pki["leaf_priv"], signing_certificate=pki["leaf_cert"],
                                            certificate_chain=[pki["ca"]]).sign(model_dir, sig)
    f = one(verify_model_signature(model_dir, sig, certificate_chain_paths=[pki["other_ca"]]))
    assert f.severity == Severity.critical
    assert "untrusted certificate" in f.title


def test_unsigned(model_dir):
    f = one(verify_model_signature(model_dir, None, public_key_path=None))
    assert (f.severity, f.title) == (Severity.medium, "model is unsigned")
    assert "model-signing" in f.remediation


def test_corrupted_signature_file(pki, model_dir, tmp_path):
    sig = key_sign(pki, model_dir, tmp_path / "model.sig")
    sig.write_bytes(sig.read_bytes()[:200])  # truncated
    f = one(verify_model_signature(model_dir, sig, public_key_path=pki["pub"]))
    assert f.severity == Severity.critical
    assert "not a valid model signature bundle" in f.title


def test_not_a_signature_bundle(pki, model_dir, tmp_path):
    sig = tmp_path / "model.sig"
    sig.write_text('{"hello": "world"}')
    f = one(verify_model_signature(model_dir, sig, public_key_path=pki["pub"]))
    assert f.severity == Severity.critical
    assert "not a valid model signature bundle" in f.title


def test_tampered_signature_bytes(pki, model_dir, tmp_path):
    sig = key_sign(pki, model_dir, tmp_path / "model.sig")
    bundle = json.loads(sig.read_text())
    raw = bytearray(base64.b64decode(bundle["dsseEnvelope"]["signatures"][0]["sig"]))
    raw[12] ^= 0x01
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(raw)).decode()
    sig.write_text(json.dumps(bundle))
    f = one(verify_model_signature(model_dir, sig, public_key_path=pki["pub"]))
    assert f.severity == Severity.critical
    assert "signature is invalid" in f.title


def test_different_key(pki, model_dir, tmp_path):
    sig = key_sign(pki, model_dir, tmp_path / "model.sig")
    f = one(verify_model_signature(model_dir, sig, public_key_path=pki["other_pub"]))
    assert f.severity == Severity.critical
    assert f.title == "model signed by a different key than the one supplied"
    assert "Key mismatch" in f.evidence["library_error"]["message"]


def test_file_modified_after_signing(pki, model_dir, tmp_path):
    sig = key_sign(pki, model_dir, tmp_path / "model.sig")
    (model_dir / "model.safetensors").write_bytes(b"\x01" * 256)
    f = one(verify_model_signature(model_dir, sig, public_key_path=pki["pub"]))
    assert f.severity == Severity.critical
    assert f.title.startswith("model files changed after signing")
    assert "modified: model.safetensors" in f.title
    changed = f.evidence["changed_files"]
    assert [m["file"] for m in changed["modified"]] == ["model.safetensors"]
    assert changed["modified"][0]["actual_digest"] == __import__("hashlib").sha256(b"\x01" * 256).hexdigest()
    assert changed["added"] == [] and changed["removed"] == []
    assert f.evidence["library_error"]["message"].startswith("Signature mismatch")


def test_single_file_modified_after_signing(pki, tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"onnx-bytes")
    sig = key_sign(pki, model, tmp_path / "model.onnx.sig")
    model.write_bytes(b"onnx-bytez")
    f = one(verify_model_signature(model, sig, public_key_path=pki["pub"]))
    assert f.severity == Severity.critical
    assert "modified: model.onnx" in f.title


def test_file_added_after_signing(pki, model_dir, tmp_path):
    sig = key_sign(pki, model_dir, tmp_path / "model.sig")
    (model_dir / "loader.py").write_text("import os; os.system('id')")
    f = one(verify_model_signature(model_dir, sig, public_key_path=pki["pub"]))
    assert f.severity == Severity.critical
    assert "added: loader.py" in f.title
    assert f.evidence["changed_files"]["added"] == ["loader.py"]


def test_file_removed_after_signing(pki, model_dir, tmp_path):
    sig = key_sign(pki, model_dir, tmp_path / "model.sig")
    (model_dir / "config.json").unlink()
    f = one(verify_model_signature(model_dir, sig, public_key_path=pki["pub"]))
    assert f.severity == Severity.critical
    assert "removed: config.json" in f.title


def test_signature_without_trust_anchor(pki, model_dir, tmp_path):
    sig = key_sign(pki, model_dir, tmp_path / "model.sig")
    f = one(verify_model_signature(model_dir, sig))
    assert (f.severity, f.title) == (Severity.medium, "signature present but no trust anchor supplied; not verified")
    f = one(verify_model_signature(model_dir, sig, certificate_chain_paths=[]))  # empty chain is no anchor
    assert f.severity == Severity.medium


def test_key_signature_checked_with_only_a_certificate_chain(pki, model_dir, tmp_path):
    sig = key_sign(pki, model_dir, tmp_path / "model.sig")
    f = one(verify_model_signature(model_dir, sig, certificate_chain_paths=[pki["ca"]]))
    assert f.severity == Severity.critical
    assert "does not verify with the supplied trust anchor" in f.title


def test_unusable_public_key_is_not_a_pass(pki, model_dir, tmp_path):
    sig = key_sign(pki, model_dir, tmp_path / "model.sig")
    f = one(verify_model_signature(model_dir, sig, public_key_path=pki["ca"]))  # a certificate, not a key
    assert f.severity == Severity.high
    assert "trust anchor unusable" in f.title


def test_unexpected_library_exception_is_a_critical_finding(pki, model_dir, tmp_path, monkeypatch):
    from model_signing import verifying

    sig = key_sign(pki, model_dir, tmp_path / "model.sig")

    def boom(self, model_path, signature_path):
        raise RuntimeError("library exploded")

    monkeypatch.setattr(verifying.Config, "verify", boom)
    f = one(verify_model_signature(model_dir, sig, public_key_path=pki["pub"]))
    assert f.severity == Severity.critical
    assert f.title == "model signature verification failed"
    assert f.evidence["library_error"] == {"type": "builtins.RuntimeError", "message": "library exploded"}
