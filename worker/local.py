"""Scan files on local disk with the same pipeline the worker runs (``poisonscan scan``)."""

from pathlib import Path

from worker.detectors.integrity import sha256_file
from worker.findings import InputFile, ScanInputs
from worker.formats import DATASET_KINDS, MODEL_KINDS, sniff
from worker.options import ScanOptions
from worker.pipeline import Progress, run_pipeline

ROLE_KINDS = {"model": MODEL_KINDS, "dataset": DATASET_KINDS}


def scan_local_files(files: dict[str, Path], options: ScanOptions, progress: Progress | None = None) -> dict:
    """``files`` maps role ('model', 'dataset') to a path. Raises ValueError for an input of the wrong kind."""
    inputs = {}
    for role, path in files.items():
        kind = sniff(path)
        if kind not in ROLE_KINDS[role]:
            raise ValueError(f"{path} is {kind}, which cannot be scanned as a {role}; expected one of: {', '.join(sorted(ROLE_KINDS[role]))}")
        inputs[role] = InputFile(role, path, sha256_file(path), path.name, kind)
    kwargs = {"progress": progress} if progress else {}
    return run_pipeline(ScanInputs(**inputs), options, **kwargs)
