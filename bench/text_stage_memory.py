"""Peak memory per stage of the trigger search and of the model layer on a large text CSV (the one written by
``bench/text_load_memory.py --scan``: text,label with label spam/ham).

    .venv/bin/python bench/text_load_memory.py --scan --rows 1000000 --folder /tmp/text-bench   # writes the CSV
    .venv/bin/python bench/text_stage_memory.py triggers /tmp/text-bench/texts.csv
    .venv/bin/python bench/text_stage_memory.py model /tmp/text-bench/texts.csv
    .venv/bin/python bench/text_stage_memory.py untangle 1000000   # SCAn alone on synthetic float32 activations

Each stage resets the process's peak RSS (``/proc/self/clear_refs``, Linux) before it starts and prints its RSS before,
its peak and its RSS after, and its seconds. ``triggers``: ``worker.text_triggers.find_text_triggers`` on the texts
(tokenise, n-grams and carriers, proxy, partners, search rounds, refit, pair recurrence). ``model``: a dataset-only scan
with ``backdoor_activations`` alone (proxy network, activations, input features, activation clustering, SCAn,
projections). ``untangle N``: ``worker.untangle.untangle`` alone on N x 64 float32 activations of two classes (a
seeded 2% of class 0 shifted along four other directions, half of it outside the reference), its peak over the
activations and the poison share its split recovers. Memory a stage frees can stay with the allocator and serve the next one, so a stage's "before" may
already hold it: compare peaks, not sums. Output: stdout only.
"""

from __future__ import annotations

import csv
import functools
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def mb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024)
    raise RuntimeError(f"no {field} in /proc/self/status")


def measured(fn, label: str):
    @functools.wraps(fn)
    def stage(*args, **kwargs):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        before, started = mb("VmRSS"), time.perf_counter()
        out = fn(*args, **kwargs)
        print(f"{label}: before {before} MB, peak {mb('VmHWM')} MB, after {mb('VmRSS')} MB, "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        return out
    return stage


def triggers(path: Path) -> None:
    import worker.text_insertion as insertion
    import worker.text_triggers as search

    texts, labels = [], []
    with path.open(newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        next(rows)
        for text, label in rows:
            texts.append(text)
            labels.append(label == "spam")
    print(f"{len(texts)} texts read: RSS {mb('VmRSS')} MB", flush=True)
    search.TokenCorpus.from_texts = staticmethod(measured(search.TokenCorpus.from_texts, "tokenise"))
    search._Grams.build = classmethod(measured(search._Grams.build.__func__, "n-grams and carriers"))
    for owner, name, label in ((search._Proxy, "__init__", "proxy"), (search._Search, "__init__", "partners"),
                               (search._Search, "run", "search rounds"), (search._Search, "refit_without", "refit"),
                               (insertion.PairRecurrence, "__init__", "pair recurrence")):
        setattr(owner, name, measured(getattr(owner, name), label))
    started = time.perf_counter()
    found = search.find_text_triggers(texts, np.array(labels, dtype=np.int64), 2)
    print(f"total {time.perf_counter() - started:.0f} s, {len(found)} triggers", flush=True)


def model(path: Path) -> None:
    import worker.backdoor
    import worker.figures
    import worker.keras_model
    import worker.model_layer
    import worker.proxy
    import worker.proxy_network
    from worker.local import scan_local_files
    from worker.options import ScanOptions

    for module, name, label in ((worker.proxy_network, "train_proxy", "proxy network"),
                                (worker.keras_model, "embed_layers", "activations"),
                                (worker.proxy, "features_for", "input features"),
                                (worker.backdoor, "analyze", "activation clustering + spectral"),
                                (worker.model_layer, "_untangle", "SCAn"),
                                (worker.figures, "class_projections", "projections")):
        setattr(module, name, measured(getattr(module, name), label))
    started = time.perf_counter()
    report = scan_local_files({"dataset": path}, ScanOptions(detectors=["backdoor_activations"]),
                              output_dir=path.parent / "stage-memory-out")
    print(f"total {time.perf_counter() - started:.0f} s, verdict {report['verdict']}", flush=True)


def untangle(rows: str) -> None:
    from worker.untangle import untangle as scan

    n, rng = int(rows), np.random.default_rng(0)
    labels = rng.integers(0, 2, n)
    reps = rng.standard_normal((n, 64), dtype=np.float32)
    reps[labels == 1, :4] += 1.5
    poison = np.flatnonzero(labels == 0)[: n // 50]
    reps[poison, 4:8] += 3.0
    reference = np.setdiff1d(np.arange(n), poison[: len(poison) // 2])
    result = measured(scan, f"SCAn on {n} x 64 float32")(reps, labels, reference=reference, seed=0)
    print(f"statistic {result.statistic.round(4).tolist()}, poison in class 0's minority "
          f"{np.isin(poison, result.minority[0]).mean():.3f}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("triggers", "model", "untangle"):
        sys.exit(__doc__)
    {"triggers": triggers, "model": model, "untangle": lambda arg: untangle(arg)}[sys.argv[1]](
        sys.argv[2] if sys.argv[1] == "untangle" else Path(sys.argv[2]))
