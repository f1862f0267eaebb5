"""Supply chain: static scan of pickle-based serialization, through every container layer, of every file of the
input (a folder or a zip/tar of one included), in a sandboxed child process.

Maps to AML.T0010 (ML Supply Chain Compromise); code that runs on load can also plant a backdoor (AML.T0018),
which the critical findings say. The work is ``worker.inspect``'s; this adapter picks the inputs and the config.
"""

from worker.context import ScanContext
from worker.detector_config import SerializationConfig
from worker.detectors.static_inspection import tagged
from worker.findings import Finding, ScanInputs, Severity
from worker.registry import registry


@registry.register(name="unsafe_serialization", layer="supply_chain", technique="AML.T0010", config=SerializationConfig,
                   uses=("inspection",))
def unsafe_serialization(inputs: ScanInputs, config: dict, context: ScanContext) -> list[Finding]:
    """Statically scans every pickle stream, recursively through archives, against an allowlist of globals."""
    settings = SerializationConfig.model_validate(config)
    findings = []
    for f in inputs.files:
        inspection = context.inspection(f, settings)
        for fi in inspection.files:
            findings += tagged(f, fi.file, fi.serialization)
        findings.append(Finding(
            f"{f.role} serialization scanned", Severity.info, 0.0,
            f"Content kind {inspection.kind}; {len(inspection.files)} file(s) inspected in a sandboxed child process. "
            "Nothing was loaded or executed.",
            evidence={"role": f.role, "file": f.filename or f.path.name, "kind": inspection.kind, "files": [{"file": x.file, "kind": x.kind, "containers": x.containers} for x in inspection.files][:500]}))
    return findings
