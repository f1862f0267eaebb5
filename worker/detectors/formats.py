"""Supply chain: identify each input's format by content and flag what the name or format hides."""

from worker.findings import Finding, ScanInputs, Severity
from worker.inspect.formats import (
    ROLE_KINDS,
    extension_matches,
    sniff,
    wrong_kind_for_role,
)
from worker.registry import registry


@registry.register(name="format_identification", layer="supply_chain", technique="AML.T0010")
def format_identification(inputs: ScanInputs, config: dict) -> list[Finding]:
    """Identifies each input's format from its magic bytes, not its extension."""
    findings = []
    for f in inputs.files:
        if f.path.is_dir():
            findings.append(Finding(f"{f.role} is a folder", Severity.info, 0.0, "Every file in it is identified and checked "
                                    "by the other supply-chain detectors.", evidence={"role": f.role, "detected_kind": "folder"}))
            continue
        kind = sniff(f.path, f.filename)
        evidence = {"role": f.role, "filename": f.filename, "detected_kind": kind}
        findings.append(Finding(f"{f.role} is {kind}", Severity.info, 0.0, f"Content-based identification says {kind}.", evidence=evidence))
        if not extension_matches(f.filename, kind):
            findings.append(Finding(
                title=f"{f.role} name '{f.filename}' does not match its content ({kind})",
                severity=Severity.medium,
                score=0.8,
                explanation="The file's extension promises one format while its bytes are another. Loaders pick a parser by "
                "extension, so a disguised file can reach a loader that executes code.",
                remediation="Find out why the file is misnamed before using it; load it only with a loader for its real format.",
                evidence=evidence,
            ))
        if wrong_kind_for_role(f.role, kind):  # never for a model: one poisonscan cannot understand fails in model_structure
            findings.append(Finding(
                title=f"{f.role} is {kind}, not a supported {f.role} format",
                severity=Severity.medium,
                score=0.5,
                explanation=f"poisonscan cannot analyse a {kind} file as a {f.role}.",
                remediation=f"Upload the {f.role} in one of: {', '.join(sorted(ROLE_KINDS[f.role]))}.",
                evidence=evidence,
            ))
    return findings
