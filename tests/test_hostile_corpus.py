"""Every class of the fail-closed issue, built by tests/hostile_files.py (the same builders the supply-chain
benchmark uses): each malicious or unreadable file fails, each benign counterpart does not, and nothing runs.
Files that live in a folder ('dir/name') are scanned as that folder, as a model snapshot would be."""

from pathlib import Path

import pytest

from tests import hostile_files
from worker.local import scan_local_files
from worker.options import ScanOptions


def write_set(root: Path, files: dict[str, bytes]) -> list[Path]:
    """Write the files; return what to scan: top-level files, and each top-level folder once."""
    targets = []
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        top = root / Path(name).parts[0]
        if top not in targets:
            targets.append(top)
    return targets


def worst_findings(report) -> list[tuple[str, str]]:
    return [(f["severity"], f["title"]) for d in report["detectors"] for f in d["findings"] if f["severity"] not in ("info", "low")]


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory):
    return tmp_path_factory.mktemp("hostile")


def _cases(sets):
    return [(cls, name) for cls, files in sets.items() for name in sorted({Path(n).parts[0] for n in files})]


MALICIOUS = _cases(hostile_files.malicious_sets(Path("/nonexistent")) | hostile_files.hostile_sets(Path("/nonexistent")))
BENIGN = _cases(hostile_files.benign_sets())


@pytest.mark.parametrize(("cls", "target"), MALICIOUS, ids=[f"{c}:{t}" for c, t in MALICIOUS])
def test_every_hostile_class_fails(corpus_root, canary, cls, target):
    sets = hostile_files.malicious_sets(canary) | hostile_files.hostile_sets(canary)
    files = {n: d for n, d in sets[cls].items() if Path(n).parts[0] == target}
    (path,) = write_set(corpus_root / cls, files)
    report = scan_local_files({"model": path}, ScanOptions())
    assert report["verdict"] == "fail", worst_findings(report)
    assert not canary.exists()


@pytest.mark.parametrize(("cls", "target"), BENIGN, ids=[f"{c}:{t}" for c, t in BENIGN])
def test_benign_counterparts_do_not_fail(corpus_root, cls, target):
    files = {n: d for n, d in hostile_files.benign_sets()[cls].items() if Path(n).parts[0] == target}
    (path,) = write_set(corpus_root / f"benign-{cls}", files)
    report = scan_local_files({"model": path}, ScanOptions())
    assert report["verdict"] != "fail", worst_findings(report)
