"""The detector registry: each detector says its name, layer, ATLAS technique, inputs and queue."""

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel

from worker.context import NEEDS
from worker.detector_config import NoSettings
from worker.findings import Finding, ScanInputs

LAYERS = ("supply_chain", "data", "model")
DetectFn = Callable[[ScanInputs, dict], list[Finding]]


@dataclass(frozen=True)
class DetectorSpec:
    name: str
    layer: str
    technique: str
    needs: frozenset[str]  # roles that must all be present; empty means "any input"
    queue: str  # "cpu" or "gpu" (runs a neural network)
    detect: DetectFn
    summary: str
    reports_progress: bool = False  # detect(inputs, config, progress=fn(stage, fraction)) for long work
    gpu_with: frozenset[str] = frozenset()  # roles that move a "cpu" detector to the gpu queue (it then runs the model)
    config_model: type[BaseModel] = NoSettings  # its settings (worker.detector_config): extra="forbid", bounded fields
    uses: frozenset[str] = frozenset()  # what it takes from the scan context (worker.context.NEEDS); detect(..., context=)
    takes_context: bool = False  # detect has a ``context`` parameter: the pipeline passes the scan context's view for it
    after: frozenset[str] = frozenset()  # detectors of its layer it runs after, when they run (it reads their results)

    def applies_to(self, roles: set[str]) -> bool:
        """``roles``: the inputs a scan has, e.g. {"model", "dataset"}."""
        return self.needs <= roles if self.needs else bool(roles)

    def queue_for(self, roles: set[str]) -> str:
        return "gpu" if self.queue == "gpu" or (self.gpu_with & roles) else "cpu"


class Registry:
    def __init__(self) -> None:
        self._specs: dict[str, DetectorSpec] = {}

    def register(self, *, name: str, layer: str, technique: str, needs: tuple[str, ...] = (), queue: str = "cpu",
                 gpu_with: tuple[str, ...] = (), config: type[BaseModel] = NoSettings, uses: tuple[str, ...] = (),
                 after: tuple[str, ...] = ()):
        """``uses``: what the detector takes from the scan context (``worker.context.NEEDS``: "inspection", "dataset",
        "model", "model_layer", "outputs"); it then has a ``context`` parameter, and the context refuses anything else.
        ``config``: the detector's settings model (``worker.detector_config``; also a field of ``DetectorConfig``).
        ``after``: detectors of the same layer that must run first when the scan runs them (otherwise detectors run
        in registration order, which import order decides)."""
        if layer not in LAYERS:
            raise ValueError(f"unknown layer {layer!r}; expected one of {LAYERS}")
        if unknown := set(uses) - set(NEEDS):
            raise ValueError(f"detector {name!r}: unknown uses {sorted(unknown)}; expected some of {NEEDS}")

        def decorator(fn: DetectFn) -> DetectFn:
            if name in self._specs:
                raise ValueError(f"detector {name!r} registered twice")
            summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else name
            parameters = inspect.signature(fn).parameters
            if stale := {"shared", "outputs"} & set(parameters):
                raise ValueError(f"detector {name!r} takes {sorted(stale)}: take ``context`` and declare uses= instead "
                                 "(the scan context replaced the shared dict and the outputs argument)")
            if uses and "context" not in parameters:
                raise ValueError(f"detector {name!r} declares uses={tuple(uses)} but has no ``context`` parameter")
            self._specs[name] = DetectorSpec(name, layer, technique, frozenset(needs), queue, fn, summary,
                                             "progress" in parameters, frozenset(gpu_with), config, frozenset(uses),
                                             "context" in parameters, frozenset(after))
            return fn

        return decorator

    def names(self) -> list[str]:
        return list(self._specs)

    def get(self, name: str) -> DetectorSpec:
        return self._specs[name]

    def select(self, roles: set[str], names: list[str] | None = None) -> list[DetectorSpec]:
        """The detectors to run, in pipeline order (supply chain, then data, then model)."""
        chosen = [self._specs[n] for n in names] if names else list(self._specs.values())
        applicable = [s for s in chosen if s.applies_to(roles)]
        return [s for layer in LAYERS for s in _in_order([s for s in applicable if s.layer == layer])]

    def queue_for(self, roles: set[str], names: list[str] | None = None) -> str:
        """A scan goes to the gpu queue when any of its detectors runs a neural network on these inputs."""
        return "gpu" if any(s.queue_for(roles) == "gpu" for s in self.select(roles, names)) else "cpu"


def _in_order(specs: list[DetectorSpec]) -> list[DetectorSpec]:
    """``specs`` in registration order, each moved behind the ones it names in ``after``."""
    names = {s.name for s in specs}
    placed: list[DetectorSpec] = []
    pending = list(specs)
    while pending:
        done = {p.name for p in placed}
        ready = next((s for s in pending if (s.after & names) <= done), None)
        if ready is None:
            raise ValueError(f"detectors wait on each other: {', '.join(s.name for s in pending)} (their after=)")
        placed.append(ready)
        pending.remove(ready)
    return placed


registry = Registry()
