"""Artifacts: one row per (tenant, sha256); the bytes live once in the content-addressed store."""

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.artifacts.names import checked_filename
from app.artifacts.schemas import ArtifactOut
from app.models import Artifact
from worker.inspect.formats import sniff


def register(session: Session, tenant: str, sha256: str, size: int, path: Path, filename: str | None) -> tuple[Artifact, bool]:
    """Record an upload for a tenant; return (artifact, created). The same bytes twice give the same artifact."""
    existing = get(session, tenant, sha256)
    if existing is not None:
        return existing, False
    row = Artifact(tenant=tenant, sha256=sha256, size=size, filename=checked_filename(filename), kind=sniff(path, filename))
    session.add(row)
    try:
        session.commit()
    except IntegrityError:  # a concurrent upload of the same bytes won the insert
        session.rollback()
        return get(session, tenant, sha256), False
    return row, True


def get(session: Session, tenant: str, sha256: str) -> Artifact | None:
    return session.scalar(select(Artifact).where(Artifact.tenant == tenant, Artifact.sha256 == sha256.lower()))


def to_out(row: Artifact) -> ArtifactOut:
    return ArtifactOut(
        sha256=row.sha256, size=row.size, filename=row.filename, kind=row.kind, created_at=row.created_at,
        links={"self": f"/v1/artifacts/{row.sha256}", "content": f"/v1/artifacts/{row.sha256}/content"},
    )
