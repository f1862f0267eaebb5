"""The settings of the static inspection both supply-chain detectors read (``unsafe_serialization``: pickles and what
could not be read; ``model_structure``: each format's own checks). The scan context (``worker.context``) runs it in a
sandboxed child, once per input file and settings per scan."""

import dataclasses
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from worker.findings import Finding, InputFile
from worker.inspect.sandbox import SandboxLimits

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


def tagged(f: InputFile, file: str, findings: list[Finding]) -> list[Finding]:
    """Say which input (and which file inside a folder or bundle) each finding is about; copies, so the shared
    inspection stays as the child reported it."""
    prefix = f"{f.role} {'file ' + file + ': ' if file else ''}"
    where = {"role": f.role, "file": file or f.filename or f.path.name}
    return [dataclasses.replace(x, title=prefix + x.title, evidence=where | x.evidence) for x in findings]
