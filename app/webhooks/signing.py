"""Standard Webhooks signatures (https://www.standardwebhooks.com, "Verifying webhook authenticity").

A secret is ``whsec_`` + base64 of 32 random bytes. Each attempt sends ``webhook-id`` (the same on every retry of a
delivery, so receivers can drop duplicates), ``webhook-timestamp`` (seconds, this attempt's) and ``webhook-signature``:
``v1,`` + base64 of HMAC-SHA256 under the decoded secret over ``{id}.{timestamp}.{body}``.
"""

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signature(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_headers(secret: str, msg_id: str, timestamp: int, body: str) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(secret, msg_id, timestamp, body), "content-type": "application/json"}
