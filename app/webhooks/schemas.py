import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

EventType = Literal["scan.succeeded", "scan.failed", "scan.canceled"]
EVENT_TYPES: tuple[str, ...] = EventType.__args__


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=8, max_length=2048, pattern=r"^https?://",
                     description="Where events are POSTed. It must resolve to a public address (unless the operator "
                     "allows private ones).")
    events: list[EventType] = Field(default_factory=lambda: list(EVENT_TYPES), min_length=1, max_length=3,
                                    description="Events to send; default all.")
    description: str | None = Field(default=None, max_length=300)


class WebhookOut(BaseModel):
    id: uuid.UUID
    url: str
    events: list[str]
    description: str | None
    created_at: datetime
    links: dict[str, str]


class WebhookCreated(WebhookOut):
    secret: str = Field(description="The signing secret (`whsec_...`), shown only now. Verify each delivery's "
                        "`webhook-signature` with it (Standard Webhooks).")


class WebhookList(BaseModel):
    items: list[WebhookOut]


class AttemptOut(BaseModel):
    attempted_at: datetime
    duration_ms: float
    status_code: int | None = Field(description="The receiver's HTTP status; null when there was no answer.")
    error: str | None = Field(description="Why the attempt failed: timeout, refused connection, refused address, ...")


class DeliveryOut(BaseModel):
    id: uuid.UUID
    webhook_id: str = Field(description="The `webhook-id` header of every attempt: msg_ + the delivery id.")
    event_type: str
    scan_id: uuid.UUID
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None = Field(description="When the next attempt is due; null once delivered or failed.")
    finished_at: datetime | None
    attempt_log: list[AttemptOut]


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next (older) page; null on the last page.")
