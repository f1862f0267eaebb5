"""API keys: generated once, shown once, stored only as a SHA-256 hash; each key belongs to a tenant."""

import asyncio
import hashlib
import secrets
import threading
import time
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.deps import get_app_settings
from app.models import ApiKey, utcnow
from app.problems import Problem
from app.settings import Settings

KEY_HEADER = "X-API-Key"
ANONYMOUS_TENANT = "anonymous"


def hash_key(key: str) -> str:
    # Keys are 256-bit random tokens, so a plain SHA-256 is enough (no password-style stretching needed).
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, name: str, tenant: str | None = None) -> tuple[ApiKey, str]:
    """Create and store a key; return the row and the plaintext, which is never stored."""
    plaintext = "psk_" + secrets.token_urlsafe(32)
    row = ApiKey(name=name, tenant=tenant or name, prefix=plaintext[:12], key_hash=hash_key(plaintext))
    session.add(row)
    session.commit()
    return row, plaintext


def revoke_key(session: Session, prefix: str) -> bool:
    """Revoke at once in this process; other API processes stop accepting the key within auth_cache_ttl_s."""
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None)))
    if row is None:
        return False
    row.revoked_at = utcnow()
    session.commit()
    _tenant_cache.clear()
    return True


class _TenantCache:
    """key hash -> (tenant, expiry). Saves a database round trip on every request of a polling client."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, digest: str) -> str | None:
        entry = self._entries.get(digest)
        if entry and entry[1] > time.monotonic():
            return entry[0]
        return None

    def put(self, digest: str, tenant: str, ttl_s: float) -> None:
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[digest] = (tenant, time.monotonic() + ttl_s)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_tenant_cache = _TenantCache()


def tenant_for_key(session: Session, key: str, cache_ttl_s: float = 0.0) -> str | None:
    digest = hash_key(key)
    if cache_ttl_s and (tenant := _tenant_cache.get(digest)):
        return tenant
    tenant = session.scalar(select(ApiKey.tenant).where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None)))
    if tenant and cache_ttl_s:
        _tenant_cache.put(digest, tenant, cache_ttl_s)  # only valid keys are cached: a bad key always reaches the database
    return tenant


def _presented_key(request: Request) -> str | None:
    key = request.headers.get(KEY_HEADER)
    auth = request.headers.get("authorization", "")
    if not key and auth.lower().startswith("bearer "):
        key = auth[7:].strip()
    return key or None


class FailureWindow:
    """Failed authentications per client address over the last minute, in this process: past the limit a client
    is answered 429 without a database lookup (guessing keys costs the guesser, not the database)."""

    WINDOW_S = 60.0

    def __init__(self) -> None:
        self._times: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> list[float]:
        times = [t for t in self._times.get(client, ()) if t > now - self.WINDOW_S]
        if times:
            self._times[client] = times
        else:
            self._times.pop(client, None)
        return times

    def over(self, client: str, limit: int) -> float | None:
        """Seconds until the client may try again, or None when it is under the limit."""
        now = time.monotonic()
        with self._lock:
            times = self._recent(client, now)
        return times[0] + self.WINDOW_S - now if len(times) >= limit else None

    def add(self, client: str) -> None:
        with self._lock:
            if len(self._times) > 100_000:  # bounded memory under a distributed flood
                self._times.clear()
            self._times.setdefault(client, []).append(time.monotonic())



async def current_tenant(request: Request, settings: Annotated[Settings, Depends(get_app_settings)]) -> str:
    """async, and the database only on a cache miss (one thread hop): a poller's requests cost no thread for auth."""
    key = _presented_key(request)
    if key is None:
        if settings.allow_anonymous:
            return ANONYMOUS_TENANT
        raise Problem(401, "API key required", f"Send your API key in the {KEY_HEADER} header (create one with `poisonscan keys create NAME`).")
    client = request.client.host if request.client else "unknown"
    cached = _tenant_cache.get(hash_key(key)) if settings.auth_cache_ttl_s else None
    if cached is None and (wait := request.app.state.auth_failures.over(client, settings.auth_failures_per_minute)) is not None:
        raise Problem(429, "Too many failed authentications", f"Over {settings.auth_failures_per_minute} requests "
                      f"with a bad API key from this address in a minute; retry in {wait:.0f} s with a valid key.",
                      headers={"Retry-After": str(max(1, int(wait + 0.999)))})
    tenant = cached or await _shared_lookup(request.app.state, key, settings.auth_cache_ttl_s)
    if tenant is None:
        request.app.state.auth_failures.add(client)
        raise Problem(401, "Invalid API key", "The API key is unknown or revoked. Check it, or create a new one with `poisonscan keys create NAME`.")
    return tenant


async def _shared_lookup(state, key: str, cache_ttl_s: float) -> str | None:
    """One database lookup per key at a time: when a key's cache entry expires under 50 polling connections, they
    wait for one query instead of sending 50 (the event loop is the only user of ``state.key_lookups``)."""
    digest = hash_key(key)
    lookups = state.key_lookups
    if digest not in lookups:
        lookups[digest] = asyncio.ensure_future(run_in_threadpool(_lookup, state.sessionmaker, key, cache_ttl_s))
        lookups[digest].add_done_callback(lambda _: lookups.pop(digest, None))
    return await asyncio.shield(lookups[digest])


def _lookup(sessions, key: str, cache_ttl_s: float) -> str | None:
    with sessions() as session:
        return tenant_for_key(session, key, cache_ttl_s)


Tenant = Annotated[str, Depends(current_tenant)]
