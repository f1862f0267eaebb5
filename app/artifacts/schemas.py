from datetime import datetime

from pydantic import BaseModel


class ArtifactOut(BaseModel):
    sha256: str
    size: int
    filename: str | None
    kind: str
    created_at: datetime
    links: dict[str, str]
