"""POST/GET/DELETE /v1/webhooks and the deliveries of each (with every attempt)."""

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from fastapi.concurrency import run_in_threadpool

from app.auth import Tenant
from app.deps import AppSettings, DbSession
from app.problems import problem_responses
from app.webhooks import service
from app.webhooks.schemas import DeliveryPage, WebhookCreate, WebhookCreated, WebhookList, WebhookOut

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


@router.post("", status_code=201, response_model=WebhookCreated, summary="Register an endpoint for scan events",
             description="Events `scan.succeeded`, `scan.failed` and `scan.canceled` are POSTed to `url` once the scan's "
             "result is committed, signed as Standard Webhooks specifies (`webhook-id`, `webhook-timestamp`, "
             "`webhook-signature`); the answer holds the signing secret, shown only once. A delivery that gets no 2xx "
             "is retried with exponential backoff for a day. URLs that resolve to loopback, private, link-local or "
             "other non-public addresses are refused unless the operator allows them.",
             responses={201: {"headers": {"Location": {"description": "The webhook's URL", "required": True,
                                                       "schema": {"type": "string"}}}}}
             | problem_responses(400, 401, 409, 422))
async def create_webhook(body: WebhookCreate, tenant: Tenant, session: DbSession, settings: AppSettings,
                         response: Response) -> WebhookCreated:
    await run_in_threadpool(service.check_url, body.url, settings.webhook_allow_private)  # DNS: off the event loop
    hook = await run_in_threadpool(service.create, session, tenant, body, settings.max_webhooks_per_tenant)
    response.headers["Location"] = f"/v1/webhooks/{hook.id}"
    return WebhookCreated(**service.to_out(hook).model_dump(), secret=hook.secret)


@router.get("", response_model=WebhookList, summary="This tenant's webhooks (secrets are not shown again)",
            responses=problem_responses(401))
def list_webhooks(tenant: Tenant, session: DbSession) -> WebhookList:
    return WebhookList(items=[service.to_out(h) for h in service.list_all(session, tenant)])


@router.get("/{webhook_id}", response_model=WebhookOut, summary="One webhook", responses=problem_responses(401, 404, 422))
def get_webhook(webhook_id: uuid.UUID, tenant: Tenant, session: DbSession) -> WebhookOut:
    return service.to_out(service.get(session, tenant, webhook_id))


@router.delete("/{webhook_id}", status_code=204, response_class=Response,
               summary="Delete a webhook; its pending deliveries are dropped", responses=problem_responses(401, 404, 422))
def delete_webhook(webhook_id: uuid.UUID, tenant: Tenant, session: DbSession) -> Response:
    service.remove(session, tenant, webhook_id)
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", response_model=DeliveryPage,
            summary="Deliveries to this webhook, newest first, each with every attempt (time, duration, status, error)",
            responses=problem_responses(400, 401, 404, 422))
def list_deliveries(webhook_id: uuid.UUID, tenant: Tenant, session: DbSession,
                    status: Literal["pending", "delivered", "failed"] | None = None,
                    limit: Annotated[int, Query(ge=1, le=100)] = 20, cursor: str | None = None) -> DeliveryPage:
    items, next_cursor = service.deliveries(session, tenant, webhook_id, status, limit, cursor)
    return DeliveryPage(items=items, next_cursor=next_cursor)
