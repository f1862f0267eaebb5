"""The scan context: one per scan (``run_pipeline`` makes it), it computes each expensive thing once, on first use, and
hands it to every detector that asks: the static inspection of an input file, the dataset, the safely loaded uploaded
model, and the model layer's run (activations and their analysis); and the scan's output sink.

A detector declares what it uses when it registers (``registry.register(..., uses=("dataset", "model"))``) and takes a
``context`` parameter; the context it gets refuses anything else (``UndeclaredNeed``), so what a detector depends on
is written next to its name.

Plain Python: no Celery, no database, no TensorFlow at import time, and no detector module (``worker.detectors``)
imported, so helpers can use it without an import cycle.
"""

import copy
import tempfile
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from worker.findings import InputFile, ScanInputs, evidence_confidence

if TYPE_CHECKING:
    import numpy as np
    from worker.datasets import Dataset
    from worker.detector_config import ModelLayerConfig
    from worker.inspect.artifact import ArtifactInspection
    from worker.model_layer import ModelLayerRun
    from worker.outputs import OutputSink

NEEDS = ("inspection", "dataset", "model", "model_layer", "outputs", "quarantine")
"""What a detector may declare in ``uses``:
  inspection   ``context.inspection(file, settings)``: the sandboxed static inspection of an input file
  dataset      ``context.dataset(label_column, text_column)``: the uploaded dataset, loaded and validated
  model        ``context.model()``: the uploaded Keras model, loaded in safe mode after the static checks
  model_layer  ``context.model_layer(settings, progress)``: the model layer's run (it loads the dataset and model itself)
  outputs      ``context.outputs``: the sink for the files a detector produces
  quarantine   ``context.quarantine()``: the samples earlier detectors of the scan put in the quarantine
"""


class UndeclaredNeed(RuntimeError):
    """A detector asked the scan context for something its registration does not declare in ``uses``."""


class ScanContext:
    """``inputs``: the scan's files; ``outputs``: where detectors write the files they produce (a new temporary folder,
    made on first write, when None); ``quarantine_min_confidence``: the scan's quarantine threshold (what remediation
    removes is what the report quarantines)."""

    def __init__(self, inputs: ScanInputs, outputs: "OutputSink | None" = None, *,
                 quarantine_min_confidence: float = 0.5) -> None:
        if outputs is None:
            from worker.outputs import OutputSink

            outputs = OutputSink(Path(tempfile.gettempdir()) / f"poisonscan-outputs-{uuid.uuid4().hex}")  # made on first write
        self.inputs = inputs
        self.quarantine_min_confidence = quarantine_min_confidence
        self._outputs = outputs
        self._memo: dict = {}  # shared by every view of this scan's context
        self._allowed: frozenset[str] | None = None  # None: the scan's own view (everything)
        self._who = "the scan"

    def for_detector(self, name: str, uses: Iterable[str]) -> "ScanContext":
        """The view detector ``name`` gets: the same memo, but only what it declared."""
        unknown = set(uses) - set(NEEDS)
        if unknown:
            raise ValueError(f"detector {name!r} declares unknown uses {sorted(unknown)}; known: {NEEDS}")
        view = copy.copy(self)
        view._allowed = frozenset(uses)
        view._who = f"detector {name!r}"
        return view

    def _need(self, what: str) -> None:
        if self._allowed is not None and what not in self._allowed:
            declared = ", ".join(sorted(self._allowed)) or "nothing"
            raise UndeclaredNeed(f"{self._who} asked the scan context for {what!r} but declares only: {declared}; "
                                 f"add {what!r} to its registry.register(..., uses=...)")

    def _whole(self) -> "ScanContext":
        """The scan's own view (same memo, everything allowed): what the context uses to compute for a detector."""
        whole = copy.copy(self)
        whole._allowed, whole._who = None, "the scan"
        return whole

    # ------------------------------------------------------------------------------------------ the memoised things

    def inspection(self, f: InputFile, settings, *, any_settings: bool = False) -> "ArtifactInspection":
        """The static inspection of input ``f`` in a sandboxed child, once per file and settings.
        ``settings``: ``worker.detector_config.SerializationConfig`` (allowlist, allow_pickle, sandbox).
        ``any_settings``: an inspection of ``f`` this scan already made with other settings will do (the first one
        made); ``settings`` are used only when there is none yet."""
        self._need("inspection")
        first = ("inspection", f.role, f.sha256)
        key = (*first, settings.model_dump_json())
        if any_settings and first in self._memo:
            return self._memo[first]
        if key not in self._memo:
            from worker.inspect.archives import Limits
            from worker.inspect.artifact import InspectOptions
            from worker.inspect.pickle_report import UserAllowlist
            from worker.inspect.sandbox import SandboxLimits, inspect_in_child

            options = InspectOptions(UserAllowlist(tuple(settings.allow_globals)), settings.allow_pickle, Limits())
            sandbox = settings.sandbox
            limits = SandboxLimits(memory_mb=sandbox.memory_mb, cpu_s=sandbox.cpu_s, wall_s=sandbox.wall_s)
            self._memo[key] = inspect_in_child(f.path, f.filename, options, limits)
            self._memo.setdefault(first, self._memo[key])
        return self._memo[key]

    def dataset(self, label_column: str = "label", text_column: str | None = None) -> "Dataset":
        """The uploaded dataset (role ``dataset``), loaded and validated once per label and text column (a text
        dataset's raw strings are ``Dataset.texts`` and ``Dataset.responses``)."""
        self._need("dataset")
        key = ("dataset", label_column, text_column)
        if key not in self._memo:
            from worker.datasets import load_dataset

            f = self._input("dataset")
            self._memo[key] = load_dataset(f.path, f.kind, label_column=label_column, text_column=text_column)
        return self._memo[key]

    def model(self):
        """The uploaded Keras model, loaded in safe mode after its static checks, once. Raises ``ModelRejected`` when it
        will not be loaded (not Keras, blocked by the static checks, Keras could not load it): the same exception
        again on every later call, never a second attempt."""
        self._need("model")
        if "model" not in self._memo:
            from worker.keras_model import ModelRejected, load_keras_safely

            try:
                self._memo["model"] = (load_keras_safely(self._input("model").path), None)
            except ModelRejected as exc:
                self._memo["model"] = (None, exc)
        model, rejected = self._memo["model"]
        if rejected is not None:
            raise rejected
        return model

    def model_layer(self, settings: "ModelLayerConfig", progress: Callable[[str, float], None]) -> "ModelLayerRun":
        """The model layer's run (``worker.model_layer.run_model_layer``), once per scan: the first detector to ask
        computes it with its ``settings`` and ``progress(stage, fraction)``; later ones reuse it as it is."""
        self._need("model_layer")
        if "model_layer" not in self._memo:
            from worker.model_layer import run_model_layer

            self._memo["model_layer"] = run_model_layer(self._whole(), settings, progress)
        return self._memo["model_layer"]

    def has_model_layer(self) -> bool:
        """Whether the model layer already ran in this scan (its findings are then another detector's to report)."""
        self._need("model_layer")
        return "model_layer" in self._memo

    def record_findings(self, findings: list[dict]) -> None:
        """The pipeline hands each detector's finding records over as they are made (for ``quarantine``)."""
        best = self._memo.setdefault("poisoning_evidence", {})
        for f in findings:
            for item in f["evidence"].get("flagged", []):
                i = int(item["index"])
                best[i] = max(best.get(i, 0.0), evidence_confidence(item))

    def quarantine(self) -> "np.ndarray":
        """Rows the report's quarantine holds so far (earlier detectors' poisoning evidence at the scan's threshold,
        as ``worker.pipeline.sample_lists`` decides): what remediation removes before it looks for more."""
        import numpy as np

        self._need("quarantine")
        best = self._memo.get("poisoning_evidence", {})
        return np.array(sorted(i for i, c in best.items() if c >= self.quarantine_min_confidence), dtype=np.int64)

    def request_cleaned_dataset(self) -> None:
        """Ask the scan to write ``cleaned-dataset.npz`` (the dataset without the report's quarantine) even when the
        quarantine is empty: remediation retrained on it and the user expects it beside the retrained model."""
        self._need("outputs")
        self._memo["cleaned_dataset_requested"] = True

    def cleaned_dataset_requested(self) -> bool:
        return bool(self._memo.get("cleaned_dataset_requested"))

    def loaded_dataset(self) -> "Dataset | None":
        """The dataset if a detector loaded it in this scan (for the scan's own outputs), else None: never loads."""
        return next((v for k, v in self._memo.items() if isinstance(k, tuple) and k[0] == "dataset"), None)

    def model_layer_run(self) -> "ModelLayerRun | None":
        """The model layer's run if a detector asked for it in this scan (for the report's figures), else None: never
        runs it."""
        return self._memo.get("model_layer")

    @property
    def outputs(self) -> "OutputSink":
        self._need("outputs")
        return self._outputs

    def _input(self, role: str) -> InputFile:
        f = getattr(self.inputs, role)
        if f is None:
            raise ValueError(f"the scan has no {role} input")
        return f
