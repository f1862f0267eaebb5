"""Turn findings into a verdict under a policy (given with the scan, or the default)."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from worker.findings import Severity


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fail_at: Severity = Field(default=Severity.high, description="A finding at or above this severity fails the scan.")
    warn_at: Severity = Field(default=Severity.medium, description="A finding at or above this severity warns.")
    on_detector_error: Literal["pass", "warn", "fail"] = Field(
        default="warn", description="Verdict floor when a detector crashed: an incomplete scan is never a clean pass by default."
    )


def decide(policy: Policy, severities: list[Severity], detector_errors: int) -> tuple[str, str]:
    """Return (verdict, reason)."""
    worst = max(severities, key=lambda s: s.rank, default=None)
    if worst is not None and worst.rank >= policy.fail_at.rank:
        return "fail", f"a {worst} finding is at or above fail_at={policy.fail_at}"
    order = ["pass", "warn", "fail"]
    verdict, reason = "pass", "no finding at or above warn_at"
    if worst is not None and worst.rank >= policy.warn_at.rank:
        verdict, reason = "warn", f"a {worst} finding is at or above warn_at={policy.warn_at}"
    if detector_errors and order.index(policy.on_detector_error) > order.index(verdict):
        verdict = policy.on_detector_error
        reason = f"{detector_errors} detector(s) failed to run (on_detector_error={policy.on_detector_error})"
    return verdict, reason
