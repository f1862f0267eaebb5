"""Supply chain: recompute each input's SHA-256 and compare it with what it is supposed to be."""

import hashlib

from worker.findings import Finding, ScanInputs, Severity
from worker.registry import registry


def sha256_file(path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@registry.register(name="artifact_integrity", layer="supply_chain", technique="AML.T0010")
def artifact_integrity(inputs: ScanInputs, config: dict) -> list[Finding]:
    """Recomputes each input's SHA-256 from the stored bytes and compares it with the expected one."""
    findings = []
    for f in inputs.files:
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
