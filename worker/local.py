"""Scan files on local disk with the same pipeline the worker runs (``poisonscan scan``)."""

from pathlib import Path

from worker.findings import InputFile, ScanInputs
from worker.hashing import sha256_file
from worker.inspect.formats import sniff, wrong_kind_for_role
from worker.options import ScanOptions
from worker.pipeline import Progress, run_pipeline


def scan_local_files(files: dict[str, Path], options: ScanOptions, progress: Progress | None = None,
                     output_dir: Path | None = None) -> dict:
    """``files`` maps role ('model', 'dataset', 'holdout', 'trigger', ...) to a path; files the scan produces go to
    ``output_dir`` (a new temporary folder when None; the report's ``outputs`` has their paths). Raises ValueError for
    an input of the wrong kind (a model is never refused: what poisonscan cannot understand fails the scan).
    ``files["model"]`` may be a folder (a Hugging Face-style snapshot): every file in it is inspected."""
    inputs = {}
    for role, path in files.items():
        kind = "folder" if path.is_dir() else sniff(path, path.name)
        if why := wrong_kind_for_role(role, kind):
            raise ValueError(f"{path} {why}")
        inputs[role] = InputFile(role, path, sha256_file(path), path.name, kind)
    kwargs = {"progress": progress} if progress else {}
    return run_pipeline(ScanInputs(**inputs), options, output_dir=output_dir, **kwargs)
