"""Supply chain: recompute each input's SHA-256 and compare it with what it is supposed to be;
for an archive (a model folder packed as zip/tar, a PyTorch or Keras file), a manifest of its
members' SHA-256, compared with an expected manifest when one is given."""

import hashlib
import os
import tarfile
import zipfile

from worker.detector_config import IntegrityConfig
from worker.findings import Finding, ScanInputs, Severity
from worker.hashing import folder_manifest, sha256_file
from worker.registry import registry

MAX_RATIO = 200.0


def archive_manifest(path, max_members: int = 100_000) -> dict[str, str] | None:
    """member name -> SHA-256 for a zip or tar file; None for anything else. Bomb-like members are not read."""
    manifest: dict[str, str] = {}
    if os.path.isdir(path):
        return folder_manifest(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist()[:max_members]:
                if info.is_dir():
                    continue
                if info.compress_size and info.file_size / info.compress_size > MAX_RATIO and info.file_size > 16 << 20:
                    manifest[info.filename] = "not hashed: compression bomb"
                    continue
                with zf.open(info) as m:
                    manifest[info.filename] = hashlib.file_digest(m, "sha256").hexdigest()
        return manifest
    try:
        with tarfile.open(path, mode="r:") as tf:
            for info in tf:
                if info.isfile() and len(manifest) < max_members:
                    manifest[info.name] = hashlib.file_digest(tf.extractfile(info), "sha256").hexdigest()
        return manifest
    except (tarfile.TarError, OSError):
        return None


def manifest_findings(f, settings: IntegrityConfig) -> list[Finding]:
    expected = settings.expected_manifest.get(f.role)
    if not expected and f.path.stat().st_size > settings.manifest_max_bytes:
        return []
    try:
        manifest = archive_manifest(f.path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        return [Finding(f"{f.role} archive manifest could not be computed", Severity.medium, 0.5, f"Reading the archive failed: {exc}.")]
    if manifest is None:
        return []
    if not expected:
        return [Finding(f"{f.role} archive manifest ({len(manifest)} members)", Severity.info, 0.0,
                        "SHA-256 of every member, for comparison with the publisher's manifest.", evidence={"manifest": manifest})]
    changed = sorted(n for n in expected if n in manifest and manifest[n] != expected[n].lower())
    added, missing = sorted(set(manifest) - set(expected)), sorted(set(expected) - set(manifest))
    if not (changed or added or missing):
        return [Finding(f"{f.role} archive manifest matches the expected one", Severity.info, 0.0,
                        f"All {len(manifest)} members hash to the expected SHA-256.", evidence={"manifest": manifest})]
    return [Finding(
        title=f"{f.role} archive members differ from the expected manifest",
        severity=Severity.critical,
        score=1.0,
        explanation=f"{len(changed)} member(s) changed, {len(added)} added, {len(missing)} missing compared with the manifest you supplied: "
        "the archive is not the one that was published.",
        remediation="Do not use it; fetch the archive again from the publisher and compare its manifest.",
        evidence={"changed": changed, "added": added, "missing": missing, "manifest": manifest},
    )]


@registry.register(name="artifact_integrity", layer="supply_chain", technique="AML.T0010", config=IntegrityConfig)
def artifact_integrity(inputs: ScanInputs, config: dict) -> list[Finding]:
    """Recomputes each input's SHA-256 from the stored bytes and compares it with the expected one; manifests archives.

    config: ``IntegrityConfig`` (``expected_manifest``, ``manifest_max_bytes``).
    """
    settings = IntegrityConfig.model_validate(config)
    findings = []
    for f in inputs.files:
        findings += manifest_findings(f, settings)
        actual = sha256_file(f.path)
        expected = f.expected_sha256 or f.sha256
        evidence = {"role": f.role, "filename": f.filename, "actual_sha256": actual, "stored_as": f.sha256, "expected_sha256": f.expected_sha256}
        if actual != f.sha256 or (f.expected_sha256 and actual != f.expected_sha256.lower()):
            findings.append(Finding(
                title=f"{f.role} bytes do not match their expected SHA-256",
                severity=Severity.critical,
                score=1.0,
                explanation=f"The {f.role} hashes to {actual}, but it was expected to hash to {expected}: "
                "the file was altered in storage or in transit, or it is not the file you meant to scan.",
                remediation="Do not use this file. Fetch it again from a trusted source and compare its hash with the publisher's.",
                evidence=evidence,
            ))
        else:
            findings.append(Finding(
                title=f"{f.role} SHA-256 verified",
                severity=Severity.info,
                score=0.0,
                explanation=f"The stored bytes hash to {actual}"
                + (", the SHA-256 you supplied." if f.expected_sha256 else ", the address they were stored under (no expected hash was supplied)."),
                evidence=evidence,
            ))
    return findings
