"""The static inspection both supply-chain detectors read (``unsafe_serialization``: pickles and what could not be
read; ``model_structure``: each format's own checks), done once per input file and scan, in a sandboxed child."""

import dataclasses
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from worker.findings import Finding, InputFile
from worker.inspect.archives import Limits
from worker.inspect.artifact import ArtifactInspection, InspectOptions
from worker.inspect.pickle_report import UserAllowlist
from worker.inspect.sandbox import SandboxLimits, inspect_in_child

GLOBAL_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(\.\*)?$"


class SandboxConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    memory_mb: int = Field(default=SandboxLimits.memory_mb, ge=256, le=65536, description="address-space limit of the inspecting child")
    cpu_s: int = Field(default=SandboxLimits.cpu_s, ge=1, le=7200, description="CPU-time limit of the inspecting child")
    wall_s: int = Field(default=SandboxLimits.wall_s, ge=1, le=7200, description="wall-clock limit of the inspecting child")


class SerializationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allow_pickle: bool = Field(default=False, description="a clean pickle-based file is info instead of medium")
    allow_globals: list[str] = Field(
        default_factory=list, max_length=1000,
        description="pickle globals you accept beyond the built-in allowlist: 'module.name', or 'module.*' for a whole "
        "module (a wildcard never admits a global on the danger list); the report says which entry allowed what")
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)

    @field_validator("allow_globals")
    @classmethod
    def _globals_look_like_globals(cls, value: list[str]) -> list[str]:
        bad = [g for g in value if len(g) > 300 or not re.match(GLOBAL_PATTERN, g)]
        if bad:
            raise ValueError(f"allow_globals entries must look like 'module.name' or 'module.*'; not: {bad[:5]}")
        return value


def inspection_for(f: InputFile, config: SerializationConfig, shared: dict | None) -> ArtifactInspection:
    key = ("static_inspection", f.role, f.sha256)
    if shared is not None and key in shared:
        return shared[key]
    options = InspectOptions(UserAllowlist(tuple(config.allow_globals)), config.allow_pickle, Limits())
    limits = SandboxLimits(memory_mb=config.sandbox.memory_mb, cpu_s=config.sandbox.cpu_s, wall_s=config.sandbox.wall_s)
    result = inspect_in_child(f.path, f.filename, options, limits)
    if shared is not None:
        shared[key] = result
    return result


def tagged(f: InputFile, file: str, findings: list[Finding]) -> list[Finding]:
    """Say which input (and which file inside a folder or bundle) each finding is about; copies, so the shared
    inspection stays as the child reported it."""
    prefix = f"{f.role} {'file ' + file + ': ' if file else ''}"
    where = {"role": f.role, "file": file or f.filename or f.path.name}
    return [dataclasses.replace(x, title=prefix + x.title, evidence=where | x.evidence) for x in findings]
