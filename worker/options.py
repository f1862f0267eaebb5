"""Scan options, shared by the API (validation, 422 on anything unknown), the CLI and the worker."""

from pydantic import BaseModel, ConfigDict, Field, field_validator

from worker.policy import Policy
from worker.registry import default_registry


class ScanOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    detectors: list[str] | None = Field(default=None, description="Detector names to run; default: every detector that applies to the inputs.")
    policy: Policy = Field(default_factory=Policy)
    detector_config: dict[str, dict] = Field(default_factory=dict, description="Per-detector settings, keyed by detector name.")

    @field_validator("detectors", "detector_config")
    @classmethod
    def _known_detectors(cls, value):
        if value:
            known = default_registry().names()
            unknown = sorted(set(value) - set(known))
            if unknown:
                raise ValueError(f"unknown detector(s) {unknown}; known: {known}")
        return value
