"""Supply chain: the model's own format checked statically (Keras configs, safetensors headers, ONNX, ...).

The per-format work lives in ``worker.inspect``; this detector only picks the check for the content's kind."""

from worker.findings import Finding, ScanInputs, Severity
from worker.inspect import structure_check
from worker.inspect.formats import sniff
from worker.registry import registry


@registry.register(name="model_structure", layer="supply_chain", technique="AML.T0010", needs=("model",))
def model_structure(inputs: ScanInputs, config: dict) -> list[Finding]:
    """Checks the model's own format statically: Keras configs (Lambda layers, custom modules, file references),
    safetensors headers (offsets, overlaps, hidden data), ONNX (external data paths, custom op domains)."""
    kind = sniff(inputs.model.path)
    check = structure_check(kind)
    if check is None:
        return []
    findings = check(inputs.model.path)
    for f in findings:  # code that runs on load can also plant a backdoor
        if f.severity == Severity.critical and f.technique is None:
            f.evidence.setdefault("also", "AML.T0018 Backdoor ML Model")
    return findings
