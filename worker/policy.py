"""Turn findings into a verdict under a policy (given with the scan, or the default)."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from worker.findings import Severity


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fail_at: Severity = Field(default=Severity.high, description="A finding at or above this severity fails the scan.")
    warn_at: Severity = Field(default=Severity.medium, description="A finding at or above this severity warns.")
    on_detector_error: Literal["pass", "warn", "fail"] = Field(
        default="warn", description="Verdict floor when a data or model detector crashed: an incomplete scan is never a clean pass by default."
    )
    on_supply_chain_error: Literal["pass", "warn", "fail"] = Field(
        default="fail", description="Verdict floor when a supply-chain detector crashed: the gate fails closed, since the "
        "bytes it did not finish reading may carry code.",
    )


def decide(policy: Policy, severities: list[Severity], detector_errors: int, supply_chain_errors: int = 0) -> tuple[str, str]:
    """Return (verdict, reason). ``detector_errors`` counts every crashed detector, ``supply_chain_errors`` those of
    the supply-chain layer among them."""
    worst = max(severities, key=lambda s: s.rank, default=None)
    if worst is not None and worst.rank >= policy.fail_at.rank:
        return "fail", f"a {worst} finding is at or above fail_at={policy.fail_at}"
    order = ["pass", "warn", "fail"]
    verdict, reason = "pass", "no finding at or above warn_at"
    if worst is not None and worst.rank >= policy.warn_at.rank:
        verdict, reason = "warn", f"a {worst} finding is at or above warn_at={policy.warn_at}"
    other_errors = detector_errors - supply_chain_errors
    for count, floor, name in ((supply_chain_errors, policy.on_supply_chain_error, "on_supply_chain_error"),
                               (other_errors, policy.on_detector_error, "on_detector_error")):
        if count and order.index(floor) > order.index(verdict):
            verdict, reason = floor, f"{count} detector(s) failed to run ({name}={floor})"
    return verdict, reason
