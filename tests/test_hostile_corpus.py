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


def test_files_written_by_the_libraries_do_not_fail(tmp_path):
    """The allowlist grows from evidence: scikit-learn estimators and pipelines through joblib (every compression),
    numpy random state inside them, numpy object arrays. (torch.save checkpoints are in the benchmark: torch is not
    a dependency.)"""
    import joblib
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_digits(return_X_y=True)
    x, y = x[:300], y[:300]
    estimators = {
        "gboost": GradientBoostingClassifier(n_estimators=3, random_state=np.random.RandomState(0)).fit(x, y),
        "forest": RandomForestClassifier(n_estimators=3, random_state=0).fit(x, y),
        "pipeline": make_pipeline(StandardScaler(), LogisticRegression(max_iter=50)).fit(x, y),
    }
    paths = []
    for name, est in estimators.items():
        for compress in (0, 3, ("gzip", 3), ("lzma", 3)):
            path = tmp_path / f"{name}-{str(compress).replace(' ', '')}.joblib"
            joblib.dump(est, path, compress=compress)
            paths.append(path)
    np.save(tmp_path / "objects.npy", np.array(["a", 1, 2.5, None], dtype=object), allow_pickle=True)
    paths.append(tmp_path / "objects.npy")
    for path in paths:
        report = scan_local_files({"model": path}, ScanOptions())
        assert report["verdict"] == "warn", (path.name, worst_findings(report))  # a pickle: medium, never fail
