"""Every detector's settings: one pydantic model per detector, with its defaults, bounds and descriptions.

A scan's ``detector_config`` is checked against ``DetectorConfig`` when the scan is created (``worker.options``), so a
typo, a wrong type or an unbounded value is a 422 naming the key, never a detector crash minutes into the scan; the
API's OpenAPI document shows these models. Each detector reads its model once at the top
(``AssessmentConfig.model_validate(config)``) and takes the defaults from here only.

Only pydantic and light modules here: the API imports this and must not import ``worker.detectors`` (test_packaging).
"""

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from worker.findings import ATTACHMENT_ROLES, SCANNED_ROLES
from worker.inspect.sandbox import SandboxLimits

GLOBAL_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(\.\*)?$"
SEED_MAX = 2**31 - 1
DAY_S = 86_400  # the longest budget any step may be given

Name = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$")]
Manifest = Annotated[dict[Annotated[str, StringConstraints(min_length=1, max_length=4096)], Sha256],
                     Field(max_length=100_000)]  # member path -> SHA-256; as many members as a manifest lists


class SettingsModel(BaseModel):
    """A detector's settings: unknown keys are typos, refused."""

    model_config = ConfigDict(extra="forbid")


class NoSettings(SettingsModel):
    """A detector without settings: any key is refused."""


# ------------------------------------------------------------------------------------------------ supply chain

class SandboxConfig(SettingsModel):
    memory_mb: int = Field(default=SandboxLimits.memory_mb, ge=256, le=65536, description="address-space limit of the inspecting child")
    cpu_s: int = Field(default=SandboxLimits.cpu_s, ge=1, le=7200, description="CPU-time limit of the inspecting child")
    wall_s: int = Field(default=SandboxLimits.wall_s, ge=1, le=7200, description="wall-clock limit of the inspecting child")


class SerializationConfig(SettingsModel):
    """``unsafe_serialization``; also the static inspection's settings that ``model_structure`` reuses."""

    allow_pickle: bool = Field(default=False, description="a clean pickle-based file is info instead of medium")
    allow_globals: list[str] = Field(
        default_factory=list, max_length=1000,
        json_schema_extra={"items": {"type": "string", "maxLength": 300, "pattern": GLOBAL_PATTERN}},  # as checked below
        description="pickle globals you accept beyond the built-in allowlist: 'module.name', or 'module.*' for a whole "
        "module (a wildcard never admits a global on the danger list); the report says which entry allowed what")
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig, description="limits of the child that inspects the files")

    @field_validator("allow_globals")
    @classmethod
    def _globals_look_like_globals(cls, value: list[str]) -> list[str]:
        bad = [g for g in value if len(g) > 300 or not re.fullmatch(GLOBAL_PATTERN, g)]
        if bad:
            raise ValueError(f"allow_globals entries must look like 'module.name' or 'module.*'; not: {bad[:5]}")
        return value


class IntegrityConfig(SettingsModel):
    """``artifact_integrity``."""

    expected_manifest: dict[Literal[SCANNED_ROLES + ATTACHMENT_ROLES], Manifest] = Field(
        default_factory=dict, max_length=len(SCANNED_ROLES + ATTACHMENT_ROLES),
        description="per input role, the archive member -> SHA-256 manifest the publisher gave: a changed, added or "
        "missing member is critical")
    manifest_max_bytes: int = Field(
        default=256 * 1024**2, ge=0, le=2**40,
        description="archives larger than this get a manifest only when one is expected")


class SignatureConfig(SettingsModel):
    """``signature_verification``."""

    require_signature: bool = Field(default=False, description="an unsigned model is high instead of low")


# ------------------------------------------------------------------------------------------------ data and model

class DatasetConfig(SettingsModel):
    """What every detector that reads the dataset takes."""

    label_column: Name = Field(default="label", description="the label column of a CSV or Parquet dataset")
    text_column: Name | None = Field(default=None, description="the text column of a text dataset (CSV/TSV, JSON "
                                     "Lines, Parquet); default: the first of text, sentence, content, message, review")
    seed: int = Field(default=0, ge=0, le=SEED_MAX, description="seed of every random choice (samples, folds, training)")


class DataPoisoningConfig(DatasetConfig):
    """``data_poisoning``."""

    folds: int = Field(default=5, ge=2, le=20, description="cross-validation folds of the out-of-sample probabilities")
    model: Literal["auto", "logistic", "mlp"] = Field(
        default="auto", description="the cross-validated classifier; auto: logistic under 2,000 rows and for texts, "
        "else an MLP")
    features: Literal["auto", "proxy"] = Field(
        default="auto", description="auto: the uploaded Keras model's embeddings when there is one; proxy: always the "
        "input-space features")
    layer: Name | None = Field(default=None, description="the model's representation layer; default the penultimate")
    # Datalab's kNN search grows faster than linearly: above this, it searches a random sample
    datalab_max_rows: int = Field(default=50_000, ge=100, le=500_000,
                                  description="rows Datalab searches for outliers and near-duplicates at most")


class TextPoisoningConfig(DatasetConfig):
    """``text_poisoning``: triggers, payload backdoors and prompt injections in text and instruction data."""

    max_ngram: int = Field(default=3, ge=1, le=5, description="longest n-gram (in words) tested as a trigger")
    alpha: float = Field(default=0.01, ge=1e-6, le=0.2, description="false discovery rate over all n-grams tested "
                         "(Benjamini-Hochberg)")
    examples: int = Field(default=3, ge=0, le=20, description="example texts quoted per trigger in the report")
    flood_min_copies: int = Field(default=5, ge=2, le=10_000, description="near-duplicate texts a group must hold to be "
                                  "judged as a possible flood (held out of the judge's training together)")


class TextBackdoorConfig(DatasetConfig):
    """``text_backdoor``: an uploaded Keras text model probed with the data's trigger n-grams and published trigger
    styles, and retrained without the quarantine when one fires."""

    per_candidate: int = Field(default=200, ge=20, le=5000, description="held-out texts each candidate trigger is "
                               "inserted into, per class under test")
    remediate: Literal["auto", "never"] = Field(default="auto", description="auto: retrain a clone without the trigger's "
                                                "carriers and re-test when a trigger fires")
    epochs: int = Field(default=5, ge=1, le=200, description="epochs of the retrained clone")
    sweep: bool = Field(default=True, description="also insert every token of the model's vocabulary (the most "
                        "frequent 20,000) and name a class one makes the only reason for its training carriers")


class ModelLayerConfig(DatasetConfig):
    """``backdoor_activations``: the model layer's run (``worker.model_layer``)."""

    layers: list[Name] | None = Field(
        default=None, max_length=16,
        description="representation layers analysed; default the penultimate and the layer before it")
    proxy_epochs: int = Field(default=8, ge=1, le=1000, description="epochs of the proxy network trained when no "
                              "Keras model is uploaded (and of its retraining in remediation)")
    proxy_budget_s: float = Field(default=300.0, ge=1, le=DAY_S, description="time budget of the proxy's training")
    batch: int = Field(default=1024, ge=1, le=65536, description="batch size of the activation pass")


RETIRED = ("quarantine", "escalate")  # settings of the earlier intersection/union remediation


class AssessmentConfig(ModelLayerConfig):
    """``backdoor_assessment``; with the model layer's settings, used when it runs without ``backdoor_activations``."""

    holdout_max: int = Field(default=10_000, ge=100, le=1_000_000,
                             description="rows of an uploaded holdout set used: enough for rates to 1%, bounded memory")
    probe_samples: int = Field(default=1000, ge=10, le=100_000, description="held-out inputs candidate triggers are stamped on")
    nc_steps: int = Field(default=1000, ge=1, le=20_000, description="Neural Cleanse optimisation steps at most")
    nc_budget_s: float = Field(default=90.0, ge=1, le=DAY_S, description="Neural Cleanse time budget")
    nc_samples: int = Field(default=1000, ge=10, le=100_000, description="held-out inputs Neural Cleanse optimises on")
    strip_copies: int = Field(default=16, ge=1, le=256, description="STRIP superimpositions per input")
    remediate: Literal["auto", "always", "never"] = Field(
        default="auto", description="retrain without the quarantine and re-test: auto when a backdoor is found")
    remediation_rounds: int = Field(default=3, ge=1, le=20,
                                    description="retraining rounds, each asking the retrained model for remaining poison")
    remediation_budget_s: float = Field(default=1800.0, ge=1, le=DAY_S, description="no new round after this")
    unlearn: bool = Field(default=True, description="fine-tune away a trigger that removing samples left")
    unlearn_epochs: int = Field(default=2, ge=1, le=1000, description="epochs of the unlearning fine-tuning")
    unlearn_samples: int = Field(default=10_000, ge=10, le=1_000_000, description="kept samples the unlearning trains on")
    retrain_epochs: int = Field(default=5, ge=1, le=1000, description="epochs of each retraining of the uploaded model")
    retrain_batch: int = Field(default=128, ge=1, le=8192, description="batch size of retraining and unlearning")
    retrain_budget_s: float = Field(default=600.0, ge=1, le=DAY_S, description="time budget of each retraining")
    baseline_retrain: bool = Field(
        default=True, description="without an uploaded holdout set, the clean accuracy to keep is a model's retrained "
        "the same way with nothing removed (the analysed model trained on the held-out rows)")

    @model_validator(mode="before")
    @classmethod
    def _retired(cls, data):
        for key in RETIRED:
            if isinstance(data, dict) and key in data:
                raise ValueError(f"backdoor_assessment: {key!r} is no longer a setting: remediation removes the report's "
                                 "quarantine, then what retrained models still point at (remediation_rounds), then "
                                 "unlearns (unlearn)")
        return data


# ------------------------------------------------------------------------------------------------ all of them

def _of(detector: str):
    # None: the detector was not named, it runs with its defaults (a null in a request is refused: the type is the model)
    return Field(default=None, description=f"settings of {detector}")


# one field per registered detector, its type the registry's ``config=`` (tests/test_detector_config.py checks both)
class DetectorConfig(BaseModel):
    """Per-detector settings, keyed by detector name; a detector not named here runs with its defaults."""

    model_config = ConfigDict(extra="forbid")

    format_identification: NoSettings = _of("format_identification")
    artifact_integrity: IntegrityConfig = _of("artifact_integrity")
    unsafe_serialization: SerializationConfig = _of("unsafe_serialization")
    model_structure: NoSettings = _of("model_structure")
    signature_verification: SignatureConfig = _of("signature_verification")
    data_poisoning: DataPoisoningConfig = _of("data_poisoning")
    text_poisoning: TextPoisoningConfig = _of("text_poisoning")
    text_backdoor: TextBackdoorConfig = _of("text_backdoor")
    backdoor_activations: ModelLayerConfig = _of("backdoor_activations")
    backdoor_assessment: AssessmentConfig = _of("backdoor_assessment")

    def as_set(self) -> dict[str, dict]:
        """Only what the user set, as plain JSON values: {detector: {key: value}} (each detector fills in its defaults)."""
        return {name: getattr(self, name).model_dump(mode="json", exclude_unset=True)
                for name in type(self).model_fields if name in self.model_fields_set}
