"""The processes the test suite starts: each leads a session (so a process group) of its own, is stopped with
everything it started, and carries the run's mark so that the session-end safety net can find it."""

import os
import signal
import time
from pathlib import Path

# conftest.py sets it to a fresh value per run: every process the suite starts inherits it.
RUN_MARK = "POISONSCAN_TEST_RUN"


def proc_stat(pid: int | str) -> tuple[str, int, int] | None:
    """(state, ppid, pgid) from /proc, or None once the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid, pgid = raw[raw.rindex(")") + 2:].split()[:3]  # the name in parentheses may hold spaces
    return state, int(ppid), int(pgid)


def live_processes() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, pgid) of every running process; a zombie has exited and only waits to be reaped."""
    table = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (stat := proc_stat(entry.name)) and stat[0] != "Z":
            table[int(entry.name)] = stat[1:]
    return table


def descendants(pid: int) -> dict[int, int]:
    """pid -> pgid of every live descendant of ``pid``."""
    table, found, frontier = live_processes(), {}, {pid}
    while frontier:
        frontier = {p for p, (ppid, _) in table.items() if ppid in frontier and p not in found}
        found |= {p: table[p][1] for p in frontier}
    return found


def populated(pgids: set[int]) -> set[int]:
    """Those of ``pgids`` that still have a live member."""
    return {pgid for _, pgid in live_processes().values()} & pgids


def signal_groups(pgids: set[int], sig: int) -> None:
    own = os.getpgrp()
    for pgid in pgids - {own}:  # never the test runner's own group
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass


def wait_empty(pgids: set[int], timeout_s: float) -> set[int]:
    """Wait for the groups to empty; returns those still populated at the deadline."""
    deadline = time.monotonic() + timeout_s
    while (alive := populated(pgids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def stop_groups(leaders: set[int], groups: set[int], timeout_s: float = 20.0) -> None:
    """SIGTERM the leaders' groups (a graceful stop, which may end the other groups too), give every group
    ``timeout_s`` to empty, then SIGKILL the groups that did not: a process that ignores SIGTERM is no excuse."""
    signal_groups(leaders, signal.SIGTERM)
    left = wait_empty(groups | leaders, timeout_s)
    signal_groups(left, signal.SIGKILL)
    assert not wait_empty(left, 10), f"process groups {sorted(left)} survived SIGKILL"


def _marked(pid: int, mark: bytes) -> bool:
    try:
        return mark in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def leftovers() -> dict[int, list[str]]:
    """pgid -> command lines of this run's processes that left the test runner's session (each started one of
    its own, as every server the suite starts does) and are still alive. Processes in the runner's session
    (a library's process pool) die with it."""
    mark = f"{RUN_MARK}={os.environ[RUN_MARK]}".encode()
    own_session, found = os.getsid(0), {}
    for pid, (_, pgid) in live_processes().items():
        try:
            elsewhere = os.getsid(pid) != own_session
        except ProcessLookupError:
            continue
        if elsewhere and _marked(pid, mark):
            found.setdefault(pgid, []).append(_cmdline(pid))
    return found
