"""FastAPI dependencies, as Annotated aliases."""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.artifacts.store import ArtifactStore
from app.settings import Settings


# async: FastAPI runs a plain function dependency in the thread pool, a hop per request on the polling hot path
async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessionmaker() as session:
        yield session


async def get_store(request: Request) -> ArtifactStore:
    return request.app.state.store


DbSession = Annotated[Session, Depends(get_session)]
Store = Annotated[ArtifactStore, Depends(get_store)]
AppSettings = Annotated[Settings, Depends(get_app_settings)]
