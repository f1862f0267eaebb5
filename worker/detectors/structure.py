"""Supply chain: the model's own formats checked statically (Keras configs, safetensors headers, ONNX, GGUF,
SavedModel graphs, chat templates, YAML), for a single file or every file of a folder or bundle; a file of a
kind poisonscan does not understand is a ``high`` finding (the gate fails closed).

The per-format work lives in ``worker.inspect``; this adapter only reads the scan's static inspection
(``worker.context``: done once per file and settings)."""

from worker.context import ScanContext
from worker.detector_config import SerializationConfig
from worker.detectors.static_inspection import tagged
from worker.findings import Finding, ScanInputs, Severity
from worker.registry import registry


@registry.register(name="model_structure", layer="supply_chain", technique="AML.T0010", needs=("model",), uses=("inspection",))
def model_structure(inputs: ScanInputs, config: dict, context: ScanContext) -> list[Finding]:
    """Checks the model's own format statically: Keras configs (Lambda layers, custom modules, file references),
    safetensors headers (offsets, overlaps, hidden data), ONNX (external data paths, custom op domains), and more."""
    # the format checks do not depend on the pickle allowlist: unsafe_serialization's inspection of the model (with the
    # sandbox limits the user set there) will do; the default settings only when it has not run
    inspection = context.inspection(inputs.model, SerializationConfig(), any_settings=True)
    findings = []
    for fi in inspection.files:
        findings += tagged(inputs.model, fi.file, fi.structure)
    for f in findings:  # code that runs on load can also plant a backdoor
        if f.severity == Severity.critical and f.technique is None:
            f.evidence.setdefault("also", "AML.T0018 Backdoor ML Model")
    return findings
