"""Scan options, shared by the API (validation, 422 on anything unknown), the CLI and the worker."""

from pydantic import BaseModel, ConfigDict, Field, field_validator

from worker.policy import Policy
from worker.catalog import default_registry


class ScanOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    detectors: list[str] | None = Field(default=None, description="Detector names to run; default: every detector that applies to the inputs.")
    policy: Policy = Field(default_factory=Policy)
    detector_config: dict[str, dict] = Field(default_factory=dict, description="Per-detector settings, keyed by detector name.")
    stop_at_critical: bool = Field(
        default=True, description="End the scan after the supply-chain layer when it found a critical problem in the model: "
        "the data and model layers take minutes and cannot change a fail. Set false to keep the full scan (forensics).")
    quarantine_min_confidence: float = Field(
        default=0.5, ge=0.0, le=1.0, description="A sample enters the quarantine when a method's confidence that it is "
        "poisoned reaches this; the rest of the flagged samples and the data-quality remarks go to the review list.")

    @field_validator("detectors", "detector_config")
    @classmethod
    def _known_detectors(cls, value):
        if value:
            known = default_registry().names()
            unknown = sorted(set(value) - set(known))
            if unknown:
                raise ValueError(f"unknown detector(s) {unknown}; known: {known}")
        if isinstance(value, dict):  # detector_config: typed where the detector declares its settings
            for name, settings in value.items():
                if (model := default_registry().get(name).config_model) is not None:
                    model.model_validate(settings)
        return value
