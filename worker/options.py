"""Scan options, shared by the API (validation, 422 on anything unknown), the CLI and the worker."""

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema, field_validator

from worker.catalog import default_registry
from worker.detector_config import DetectorConfig
from worker.policy import Policy

# Checked and documented (OpenAPI) as DetectorConfig, every detector's typed settings; kept as the plain dict of what
# the user set, {detector: {key: value}}: a scan row stays small, the tenant merge and the pipeline read it as a dict,
# and each detector fills in its own defaults when it runs. The serializer hands the dict on as it is.
DetectorSettings = Annotated[DetectorConfig, AfterValidator(DetectorConfig.as_set), PlainSerializer(lambda settings: settings)]
# A detector's name, documented as the registry's names (DetectorConfig has one field per detector); checked below.
DetectorName = Annotated[str, WithJsonSchema({"type": "string", "enum": list(DetectorConfig.model_fields)})]


class ScanOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    detectors: list[DetectorName] | None = Field(default=None, description="Detector names to run; default: every detector that applies to the inputs.")
    policy: Policy = Field(default_factory=Policy)
    detector_config: DetectorSettings = Field(default_factory=dict, description="Per-detector settings, keyed by detector name.")
    stop_at_critical: bool = Field(
        default=True, description="End the scan after the supply-chain layer when it found a critical problem in the model: "
        "the data and model layers take minutes and cannot change a fail. Set false to keep the full scan (forensics).")
    quarantine_min_confidence: float = Field(
        default=0.5, ge=0.0, le=1.0, description="A sample enters the quarantine when a method's confidence that it is "
        "poisoned reaches this; the rest of the flagged samples and the data-quality remarks go to the review list.")

    @field_validator("detectors")
    @classmethod
    def _known_detectors(cls, value):
        if value:
            known = default_registry().names()
            unknown = sorted(set(value) - set(known))
            if unknown:
                raise ValueError(f"unknown detector(s) {unknown}; known: {known}")
        return value
