"""What both supply-chain detectors that read the static inspection share (``unsafe_serialization``: pickles and what
could not be read; ``model_structure``: each format's own checks). The scan context (``worker.context``) runs the
inspection in a sandboxed child, once per input file and settings (``worker.detector_config.SerializationConfig``)
per scan."""

import dataclasses

from worker.findings import Finding, InputFile


def tagged(f: InputFile, file: str, findings: list[Finding]) -> list[Finding]:
    """Say which input (and which file inside a folder or bundle) each finding is about; copies, so the shared
    inspection stays as the child reported it."""
    prefix = f"{f.role} {'file ' + file + ': ' if file else ''}"
    where = {"role": f.role, "file": file or f.filename or f.path.name}
    return [dataclasses.replace(x, title=prefix + x.title, evidence=where | x.evidence) for x in findings]
