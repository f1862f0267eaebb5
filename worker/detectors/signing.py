"""Supply chain: verify an OpenSSF model-signing (``model-signing``) signature over a model, fully offline.

Only the two offline trust models are supported: a public key (ECDSA P-256/P-384/P-521) or an X.509
certificate chain (PEM CA certificates). Sigstore keyless signing is never used: it needs the network.

The library's high-level API (``model_signing.verifying.Config``) does the verification; this module
picks the verifier that matches the trust anchor, reads the bundle beforehand only to choose settings
and to report what was signed, and turns every outcome (including unexpected exceptions) into exactly
one finding.
"""

from __future__ import annotations

import ast
import base64
import binascii
import contextlib
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

from worker.detector_config import SignatureConfig
from worker.findings import Finding, InputFile, ScanInputs, Severity
from worker.registry import registry

TECHNIQUE = "AML.T0010"
MAX_LISTED_FILES = 1000  # cap on the signed-file list kept in evidence
MAX_TITLE_NAMES = 3  # file names named per category in a title
_GIT_PATHS = {".git", ".gitattributes", ".github", ".gitignore"}  # model-signing's default exclusions

_REMEDIATE_TAMPERED = (
    "Do not load or deploy this model. Fetch it again from the publisher's official source, verify it again, "
    "and if it still fails, report the mismatch to the publisher and your security team."
)
_REMEDIATE_ASK_SIGN = (
    "Ask the publisher to sign the model with OpenSSF model-signing (`model_signing sign key|certificate ...`) "
    "and to publish the signature and their public key or CA certificate, then scan again with both."
)


def verify_model_signature(
    model_path: Path,
    signature_path: Path | None,
    *,
    public_key_path: Path | None = None,
    certificate_chain_paths: list[Path] | None = None,
) -> list[Finding]:
    """Verifies ``signature_path`` (a model-signing Sigstore bundle) over ``model_path`` (a file or a
    directory) with a public key or a CA certificate chain. Returns exactly one finding; never raises
    for a bad signature, key, certificate or model."""
    model_path = Path(model_path)
    signature_path = Path(signature_path) if signature_path is not None else None
    public_key_path = Path(public_key_path) if public_key_path is not None else None
    chain = [Path(p) for p in (certificate_chain_paths or [])]
    try:
        return [_verify(model_path, signature_path, public_key_path, chain)]
    except Exception as exc:  # last resort: nothing escapes as a crash, and nothing passes
        return [_finding(
            "model signature verification failed",
            Severity.critical, 1.0,
            "Checking the model's signature failed unexpectedly, so the model's integrity and origin are not "
            f"established ({type(exc).__name__}: {exc}). A failed check is treated as a failed verification.",
            _REMEDIATE_TAMPERED,
            {"check": "model-signing", "model_path": str(model_path),
             "signature_path": str(signature_path) if signature_path else None,
             "library_error": _err(exc)},
        )]


# --------------------------------------------------------------------------------------------------

def _verify(model_path: Path, signature_path: Path | None, public_key_path: Path | None, chain: list[Path]) -> Finding:
    evidence: dict = {"check": "model-signing", "model_path": str(model_path),
                      "model_kind": "directory" if model_path.is_dir() else "file" if model_path.exists() else "missing",
                      "signature_path": str(signature_path) if signature_path else None}

    if signature_path is None:
        return _finding(
            "model is unsigned", Severity.medium, 0.5,
            "No signature was supplied for this model, so its integrity and provenance cannot be established: "
            "nothing shows that these files are the ones the publisher released, or who released them. "
            "A model swapped or altered anywhere in the supply chain (mirror, hub account, cache, storage) "
            "would look exactly the same.",
            _REMEDIATE_ASK_SIGN, {**evidence, "check": "none (no signature supplied)"},
        )

    if not model_path.exists():
        return _finding(
            "model signature could not be checked: model not found", Severity.high, 1.0,
            f"The model path {model_path} does not exist, so its signature could not be checked.",
            "Make sure the model was stored before the signature check runs, then scan again.", evidence,
        )
    if not signature_path.is_file():
        return _finding(
            "model signature could not be checked: signature file not found", Severity.high, 1.0,
            f"A signature was named ({signature_path}) but there is no such file, so nothing was verified.",
            "Upload the signature file that the publisher distributes with the model and scan again.", evidence,
        )

    sig_bytes = signature_path.read_bytes()
    evidence["signature_sha256"] = hashlib.sha256(sig_bytes).hexdigest()
    bundle, parse_error = _parse_bundle(sig_bytes)
    if bundle is not None:
        evidence["signature_kind"] = bundle["kind"]
        if bundle.get("serialization"):
            evidence["serialization"] = bundle["serialization"]
        if bundle.get("signer_certificate"):
            evidence["signer_certificate"] = bundle["signer_certificate"]

    if public_key_path is None and not chain:
        if parse_error:
            evidence["bundle_parse_error"] = parse_error
        expects = {"key": " It says it was made with a private key; supply the publisher's public key.",
                   "certificate": " It says it was made with a certificate; supply the CA certificate(s) it chains to."}
        return _finding(
            "signature present but no trust anchor supplied; not verified", Severity.medium, 0.5,
            "A signature file was supplied, but neither a public key nor a CA certificate chain to check it "
            "against, so the signature was NOT verified and the model's integrity and provenance are unknown. "
            "A signature is only meaningful against a key or certificate obtained independently from the publisher."
            + (expects.get(bundle["kind"], "") if bundle else
               f" The file also does not look like a model-signing bundle ({parse_error})."),
            "Obtain the publisher's public key or CA certificate from a trusted channel (not from the same place "
            "as the model) and scan again with it.", evidence,
        )

    if bundle is None:
        return _finding(
            "signature file is not a valid model signature bundle", Severity.critical, 1.0,
            "The supplied signature file is corrupt or is not an OpenSSF model-signing bundle, so it proves nothing "
            f"about the model ({parse_error}). A damaged or substituted signature is a sign of tampering.",
            _REMEDIATE_TAMPERED, {**evidence, "bundle_parse_error": parse_error},  # rejected before the library runs
        )

    try:
        from cryptography import exceptions as crypto_exceptions
        from model_signing import hashing, verifying
    except ImportError as exc:  # model-signing (or pyOpenSSL, which it imports but does not declare) missing
        return _finding(
            "model signature could not be checked: model-signing unavailable", Severity.high, 1.0,
            f"The signature verification library could not be loaded ({exc}), so the signature was not verified.",
            "Install model-signing and pyOpenSSL in the worker environment.", {**evidence, "library_error": _err(exc)},
        )

    # Pick the verifier that matches how the bundle was signed and what the caller trusts.
    mode = _choose_mode(bundle["kind"], public_key_path, chain)
    if mode is None:
        supplied = "public key" if public_key_path else "certificate chain"
        evidence["trust_anchor"] = _anchor_evidence(public_key_path, chain)
        return _finding(
            "model signature does not verify with the supplied trust anchor", Severity.critical, 0.9,
            f"The signature was made with a {bundle['kind'] or 'unknown method'}, but only a {supplied} was supplied, "
            "so it cannot have been produced by the signer you trust. Either the wrong key/certificate was supplied, "
            "or the model was re-signed by someone else.",
            _REMEDIATE_TAMPERED, evidence,
        )
    evidence["check"] = f"model-signing/{mode}"
    evidence["trust_anchor"] = _anchor_evidence(public_key_path if mode == "key" else None, chain if mode == "certificate" else [])
    evidence["library_version"] = _library_version()

    try:
        config = verifying.Config()
        if mode == "key":
            config.use_elliptic_key_verifier(public_key=public_key_path)
        else:
            # Never pass an empty chain: the library would then trust every public CA in certifi.
            config.use_certificate_verifier(certificate_chain=chain)
    except Exception as exc:
        return _finding(
            "model signature could not be checked: trust anchor unusable", Severity.high, 1.0,
            f"The supplied {'public key' if mode == 'key' else 'certificate chain'} could not be loaded "
            f"({type(exc).__name__}: {exc}), so the signature was not verified. Supported: PEM public keys on "
            "NIST P-256/P-384/P-521, PEM CA certificates.",
            "Supply the publisher's public key or CA certificate(s) in PEM format and scan again.",
            {**evidence, "library_error": _err(exc)},
        )

    hashing_config, ignored = _hashing_config(hashing, bundle, model_path, signature_path)
    if hashing_config is not None:
        config.set_hashing_config(hashing_config)
    if ignored:
        evidence["ignored_paths"] = ignored

    try:
        config.verify(model_path, signature_path)
    except crypto_exceptions.InvalidSignature as exc:
        return _invalid_signature(mode, bundle, public_key_path, evidence, exc)
    except Exception as exc:
        return _classify_failure(exc, mode, model_path, evidence)

    signed = bundle.get("resources") or []
    evidence.update({
        "signed_model_name": bundle.get("model_name"),
        "signed_root_digest": bundle.get("root_digest"),
        "signed_file_count": len(signed),
        "signed_files": signed[:MAX_LISTED_FILES],
    })
    if len(signed) > MAX_LISTED_FILES:
        evidence["signed_files_truncated"] = True
    not_covered = sorted(set((bundle.get("serialization") or {}).get("ignore_paths") or []) - _GIT_PATHS)
    who = (f"the holder of the private key for the supplied public key (SHA-256 {evidence['trust_anchor'].get('public_key_sha256')})"
           if mode == "key" else
           f"a certificate ({(bundle.get('signer_certificate') or {}).get('subject', 'unknown subject')}) that chains to the supplied CA")
    return _finding(
        f"model signature verified ({mode}-based)", Severity.info, 0.0,
        f"The model's signature is valid and was made by {who}. Every file in the model ({len(signed)} signed "
        f"{'entry' if len(signed) == 1 else 'entries'}) matches the digest that was signed, and no files were added or "
        "removed since signing. This establishes integrity and origin relative to the key/CA you trust; it says "
        "nothing about whether the publisher's model is itself safe."
        + (f" Note: the signer excluded these paths from the signature, so their content is not vouched for: "
           f"{', '.join(not_covered)}." if not_covered else ""),
        "", evidence,
    )


# --------------------------------------------------------------------------------------------------
# Outcomes

def _invalid_signature(mode, bundle, public_key_path, evidence, exc) -> Finding:
    evidence = {**evidence, "library_error": _err(exc)}
    if mode == "key":
        hint = bundle.get("key_hint")
        if hint and hint == evidence["trust_anchor"].get("public_key_sha256"):
            return _tampered_signature(evidence)
        # Older bundles carry no key hint: a wrong key and a damaged signature fail the same way.
        return _finding(
            "model signature does not verify with the supplied key", Severity.critical, 0.9,
            "The signature does not verify with the supplied public key. Either the model was signed with a different "
            "key (re-signed by someone else) or the signature or the signed manifest was altered. The signature "
            "format does not say which key it expects, so the two cannot be told apart.",
            _REMEDIATE_TAMPERED, evidence,
        )
    # Certificate mode: the chain already verified, so the signer's key is known; the signature itself is bad.
    return _tampered_signature(evidence)


def _tampered_signature(evidence) -> Finding:
    return _finding(
        "model signature is invalid (signature or signed manifest altered)", Severity.critical, 1.0,
        "The signature was made for the trusted key, but its cryptographic check fails: the signature bytes or the "
        "signed list of files and digests were altered after signing. Someone may have edited the manifest to cover "
        "for modified model files.",
        _REMEDIATE_TAMPERED, evidence,
    )


def _classify_failure(exc: Exception, mode: str, model_path: Path, evidence: dict) -> Finding:
    evidence = {**evidence, "library_error": _err(exc)}
    msg = str(exc)
    cls = type(exc)

    if cls.__module__.startswith("OpenSSL") and cls.__name__ == "X509StoreContextError":
        errors = getattr(exc, "errors", None)
        if errors:
            evidence["x509_verify_error"] = {"code": errors[0], "depth": errors[1] if len(errors) > 1 else None,
                                             "reason": errors[2] if len(errors) > 2 else None}
        return _finding(
            "model signed by an untrusted certificate", Severity.critical, 1.0,
            f"The model was signed with a certificate that does not chain to the CA certificate(s) you supplied ({msg}). "
            "The signer is not the party you trust: the model may have been re-signed by someone else.",
            _REMEDIATE_TAMPERED, evidence,
        )
    if isinstance(exc, ValueError) and msg.startswith("Key mismatch"):
        return _finding(
            "model signed by a different key than the one supplied", Severity.critical, 1.0,
            "The signature names a signing key that is not the public key you supplied: the model was signed by someone "
            "else (or re-signed after modification). It must not be treated as coming from the publisher you trust.",
            _REMEDIATE_TAMPERED, evidence,
        )
    if isinstance(exc, ValueError) and msg.startswith("Signing certificate cannot be used for signing"):
        return _finding(
            "signing certificate is not authorized for code signing", Severity.critical, 1.0,
            "The certificate in the signature chains to your CA but does not permit signing (no digitalSignature key "
            "usage and no codeSigning extended key usage), so the signature is not acceptable.",
            _REMEDIATE_TAMPERED, evidence,
        )
    if isinstance(exc, ValueError) and msg.startswith("Signature mismatch"):
        return _files_changed(msg, model_path, evidence)
    if isinstance(exc, ValueError) and "is a symlink" in msg:
        return _finding(
            "model contains a symlink not covered by its signature", Severity.critical, 1.0,
            f"The model contains a symbolic link, which the signature does not allow ({msg}). A symlink can make the model "
            "load files from outside the signed set.",
            _REMEDIATE_TAMPERED, evidence,
        )
    malformed_prefixes = ("Invalid sigstore bundle", "Expected DSSE payload", "Expected in-toto", "Predicate type mismatch",
                          "Expected only one subject", "Manifest is inconsistent", "Invalid resource name",
                          "Unknown serialization type")
    parse_types = (KeyError, IndexError, TypeError, AttributeError, UnicodeDecodeError, json.JSONDecodeError, binascii.Error)
    if (isinstance(exc, parse_types) or cls.__name__ == "ValidationError"
            or (isinstance(exc, ValueError) and msg.startswith(malformed_prefixes))):
        return _finding(
            "signature file is not a valid model signature bundle", Severity.critical, 1.0,
            "The signature file is corrupt or malformed, so it proves nothing about the model "
            f"({type(exc).__name__}: {msg}). A damaged or substituted signature is a sign of tampering.",
            _REMEDIATE_TAMPERED, evidence,
        )
    return _finding(
        "model signature verification failed", Severity.critical, 1.0,
        f"The signature check failed ({type(exc).__name__}: {msg}), so the model's integrity and origin are not "
        "established. A failed check is treated as a failed verification.",
        _REMEDIATE_TAMPERED, evidence,
    )


_EXTRA_RE = re.compile(r"^Extra files found in model '.*?': (?P<files>.*)$", re.S)
_MISSING_RE = re.compile(r"^Missing files in model '.*?': (?P<files>.*)$", re.S)
_HASH_RE = re.compile(r"^Hash mismatch for '(?P<name>.*?)': Expected '(?P<expected>.*)', Actual '(?P<actual>.*)'$", re.S)
_DIGEST_RE = re.compile(r"digest_value=(b'(?:[^'\\]|\\.)*'|b\"(?:[^\"\\]|\\.)*\")")


def _parse_mismatch(message: str) -> dict | None:
    """Parses model-signing 1.1's ``ValueError("Signature mismatch: " + str(list_of_diffs))``."""
    rest = message[len("Signature mismatch:"):].strip()
    try:
        diffs = ast.literal_eval(rest)
    except (ValueError, SyntaxError):
        return None
    if not isinstance(diffs, list) or not all(isinstance(d, str) for d in diffs):
        return None
    added, removed, modified, unparsed = [], [], [], []
    for d in diffs:
        if m := _EXTRA_RE.match(d):
            added += [f for f in m["files"].split(", ") if f]
        elif m := _MISSING_RE.match(d):
            removed += [f for f in m["files"].split(", ") if f]
        elif m := _HASH_RE.match(d):
            modified.append({"file": m["name"], "expected_digest": _digest_hex(m["expected"]),
                             "actual_digest": _digest_hex(m["actual"])})
        else:
            unparsed.append(d)
    return {"added": added, "removed": removed, "modified": modified, "unparsed": unparsed}


def _digest_hex(text: str) -> str | None:
    m = _DIGEST_RE.search(text)
    if not m:
        return None
    try:
        return ast.literal_eval(m[1]).hex()
    except (ValueError, SyntaxError):
        return None


def _files_changed(message: str, model_path: Path, evidence: dict) -> Finding:
    parsed = _parse_mismatch(message)
    if parsed is None:
        return _finding(
            "model files changed after signing", Severity.critical, 1.0,
            "The signature is valid, but the model's files no longer match what was signed: files were added, removed "
            f"or modified after signing. Library report: {message}",
            _REMEDIATE_TAMPERED, evidence,
        )
    evidence["changed_files"] = parsed
    sharded = (evidence.get("serialization") or {}).get("method") == "shards"

    def files(names):  # manifest identifiers -> file names ('.' is a single-file model; shards are 'path:start:end')
        out = []
        for n in names:
            n = n.rsplit(":", 2)[0] if sharded and n.count(":") >= 2 else n
            n = model_path.name if n == "." else n
            if n not in out:
                out.append(n)
        return out

    for item in parsed["modified"]:
        if item["file"] == ".":
            item["file"] = model_path.name
    modified = files(m["file"] for m in parsed["modified"])
    parsed = {**parsed, "added": files(parsed["added"]), "removed": files(parsed["removed"])}
    parts = []
    for label, names in (("modified", modified), ("added", parsed["added"]), ("removed", parsed["removed"])):
        if names:
            shown = ", ".join(names[:MAX_TITLE_NAMES]) + (f" +{len(names) - MAX_TITLE_NAMES} more" if len(names) > MAX_TITLE_NAMES else "")
            parts.append(f"{label}: {shown}")
    detail = "; ".join(parts) or "see evidence"
    sentences = []
    if modified:
        sentences.append(f"{len(modified)} signed file(s) now have different content ({', '.join(modified)})")
    if parsed["added"]:
        sentences.append(f"{len(parsed['added'])} file(s) are present that were not signed ({', '.join(parsed['added'])})")
    if parsed["removed"]:
        sentences.append(f"{len(parsed['removed'])} signed file(s) are missing ({', '.join(parsed['removed'])})")
    return _finding(
        f"model files changed after signing ({detail})"[:290], Severity.critical, 1.0,
        "The signature itself is valid and from the trusted signer, but the model no longer matches it: "
        + "; ".join(sentences or parsed["unparsed"]) + ". Files changed or added after signing can carry a backdoor or "
        "malicious code (for example a pickle or a loader script) that the publisher never approved.",
        _REMEDIATE_TAMPERED, evidence,
    )


# --------------------------------------------------------------------------------------------------
# Helpers

def _finding(title, severity, score, explanation, remediation, evidence) -> Finding:
    return Finding(title=title, severity=severity, score=score, explanation=explanation, remediation=remediation,
                   evidence=evidence, technique=TECHNIQUE)


def _err(exc: BaseException) -> dict:
    return {"type": f"{type(exc).__module__}.{type(exc).__qualname__}", "message": str(exc)}


def _library_version() -> str | None:
    try:
        from importlib.metadata import version
        return version("model-signing")
    except Exception:
        return None


def _choose_mode(kind: str | None, public_key_path: Path | None, chain: list[Path]) -> str | None:
    if kind == "key":
        return "key" if public_key_path else None
    if kind == "certificate":
        return "certificate" if chain else None
    return "key" if public_key_path else "certificate"  # unknown kind: let the library decide and fail


def _parse_bundle(data: bytes) -> tuple[dict | None, str | None]:
    """Reads what the bundle claims (unauthenticated until the library verifies it): signing method, key hint,
    signer certificate, and the signed manifest. Returns (info, None) or (None, reason)."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except json.JSONDecodeError as exc:
        return None, f"not JSON: {exc}"
    if not isinstance(doc, dict):
        return None, "JSON is not an object"
    material, envelope = doc.get("verificationMaterial"), doc.get("dsseEnvelope")
    if not isinstance(material, dict) or not isinstance(envelope, dict):
        return None, "missing verificationMaterial or dsseEnvelope"
    info: dict = {"media_type": doc.get("mediaType"), "kind": None}
    if isinstance(material.get("publicKey"), dict):
        info["kind"] = "key"
        info["key_hint"] = material["publicKey"].get("hint")
    elif isinstance(material.get("x509CertificateChain"), dict):
        info["kind"] = "certificate"
        info["signer_certificate"] = _bundle_leaf(material["x509CertificateChain"])
    try:
        payload = json.loads(base64.b64decode(envelope["payload"], validate=True))
    except (KeyError, TypeError, ValueError, binascii.Error):
        return None, "DSSE payload missing or not base64-encoded JSON"
    if not isinstance(payload, dict):
        return None, "DSSE payload is not a JSON object"
    predicate = payload.get("predicate") if isinstance(payload.get("predicate"), dict) else {}
    subjects = payload.get("subject") if isinstance(payload.get("subject"), list) else []
    if subjects and isinstance(subjects[0], dict):
        info["model_name"] = subjects[0].get("name")
        info["root_digest"] = subjects[0].get("digest")
    if isinstance(predicate.get("serialization"), dict):
        info["serialization"] = predicate["serialization"]
    resources = predicate.get("resources")
    if isinstance(resources, list):
        info["resources"] = [{"name": r.get("name"), "algorithm": r.get("algorithm"), "digest": r.get("digest")}
                             for r in resources if isinstance(r, dict)]
    elif subjects:  # pre-1.0 (v0.2) payloads list the files as subjects
        info["resources"] = [{"name": s.get("name"), "algorithm": "sha256", "digest": (s.get("digest") or {}).get("sha256")}
                             for s in subjects if isinstance(s, dict)]
    return info, None


def _bundle_leaf(chain: dict) -> dict | None:
    try:
        from cryptography import x509
        raw = base64.b64decode(chain["certificates"][0]["rawBytes"])
        return _cert_info(x509.load_der_x509_certificate(raw))
    except Exception:
        return None


def _cert_info(cert) -> dict:
    from cryptography.hazmat.primitives import hashes
    return {"subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(),
            "serial": format(cert.serial_number, "x"), "sha256_fingerprint": cert.fingerprint(hashes.SHA256()).hex(),
            "not_valid_before": cert.not_valid_before_utc.isoformat(), "not_valid_after": cert.not_valid_after_utc.isoformat()}


def _anchor_evidence(public_key_path: Path | None, chain: list[Path]) -> dict:
    out: dict = {}
    if public_key_path is not None:
        out["public_key_path"] = str(public_key_path)
        try:
            from cryptography.hazmat.primitives import serialization
            key = serialization.load_pem_public_key(public_key_path.read_bytes())
            pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            out["public_key_sha256"] = hashlib.sha256(pem).hexdigest()  # what model-signing stores as the key hint
            out["public_key_type"] = getattr(getattr(key, "curve", None), "name", type(key).__name__)
        except Exception as exc:
            out["public_key_error"] = f"{type(exc).__name__}: {exc}"
    if chain:
        out["certificate_chain_paths"] = [str(p) for p in chain]
        try:
            from cryptography import x509
            certs = x509.load_pem_x509_certificates(b"".join(p.read_bytes() for p in chain))
            out["trusted_certificates"] = [_cert_info(c) for c in certs]
        except Exception as exc:
            out["certificate_chain_error"] = f"{type(exc).__name__}: {exc}"
    return out


def _hashing_config(hashing, bundle: dict, model_path: Path, signature_path: Path):
    """Rebuilds the hashing settings the signer recorded, as the library's own guess does, with two differences:
    the signature file is ignored when it sits inside the model directory, and "blake2b" (the name 1.1 records)
    maps to "blake2" (the name it accepts; its own guess fails on it). The signed ``ignore_paths`` are added by
    the library itself. Returns (config or None to let the library guess, ignored relative paths)."""
    ignored: list[str] = []
    if model_path.is_dir():
        try:
            rel = signature_path.resolve().relative_to(model_path.resolve())
            ignored.append(rel.as_posix())
        except ValueError:
            pass
    args = bundle.get("serialization")
    if not isinstance(args, dict):
        return None, []  # pre-1.0 bundle: let the library guess (the signature file must then be outside the model)
    try:
        algo = {"blake2b": "blake2"}.get(args["hash_type"], args["hash_type"])
        config = hashing.Config()
        if args["method"] == "files":
            config.use_file_serialization(hashing_algorithm=algo)
        elif args["method"] == "shards":
            config.use_shard_serialization(hashing_algorithm=algo, shard_size=int(args["shard_size"]))
        else:
            return None, []
        config.set_ignored_paths(paths=ignored, ignore_git_paths=True)
        return config, ignored
    except Exception:
        return None, []


@registry.register(name="signature_verification", layer="supply_chain", technique="AML.T0010", needs=("model",),
                   config=SignatureConfig)
def signature_verification(inputs: ScanInputs, config: dict) -> list[Finding]:
    """Verifies an OpenSSF model-signing signature over the model, offline (key- or certificate-based).

    config: ``SignatureConfig`` (``require_signature``: an unsigned model is high instead of low).
    """
    settings = SignatureConfig.model_validate(config)
    attach = {role: getattr(inputs, role) for role in ("signature", "public_key", "certificate_chain")}
    with _as_named_file(inputs.model) as model_path:
        findings = verify_model_signature(
            model_path,
            attach["signature"].path if attach["signature"] else None,
            public_key_path=attach["public_key"].path if attach["public_key"] else None,
            certificate_chain_paths=[attach["certificate_chain"].path] if attach["certificate_chain"] else None,
        )
    if attach["signature"] is None:  # most models are unsigned today: say so, and fail only where policy asks
        for f in findings:
            f.severity = Severity.high if settings.require_signature else Severity.low
    return findings


@contextlib.contextmanager
def _as_named_file(model: InputFile):
    """The signature covers the file under its published name; the store keeps it under its hash."""
    name = Path(model.filename or model.path.name).name
    if model.path.name == name:
        yield model.path
        return
    with tempfile.TemporaryDirectory(prefix="poisonscan-sig-", dir=model.path.parent.parent) as tmp:
        view = Path(tmp) / name
        try:
            os.link(model.path, view)
        except OSError:  # another filesystem: a symlink still shows the published name
            view.symlink_to(model.path)
        yield view
