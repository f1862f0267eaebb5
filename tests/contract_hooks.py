"""schemathesis hooks for tests/test_contract.py, loaded by `st run` (the config's `hooks`).

Some refusals depend on what no JSON Schema can state: whether the uploaded bytes hash to ``expected_sha256``, whether
a referenced artifact exists for the tenant and is the right kind of file for its role, whether a cursor is one the API
handed out, how large a whole request is in bytes (each file's size is documented, but a JSON scan request's body is
at most 256 KiB and a multipart text field 64 KiB, and a JSON Schema's lengths count characters). A schema-valid
request may be refused for those reasons, so the run's config lets the check ``positive_data_acceptance`` accept these
statuses on these operations, and the check below holds every such refusal of a schema-valid request to exactly those
reasons (by the problem's title and detail). Any other refusal of valid data still fails the run.
"""

import re

import schemathesis

FIELD_TOO_LONG = r"Bad upload: multipart field '.*' is over \d+ bytes; only files may be large$"
# (method, path) -> status -> patterns, one of which the problem's "<title>: <detail>" must match (re.match)
SEMANTIC_REFUSALS = {
    ("POST", "/v1/artifacts"): {422: [r"SHA-256 mismatch:"], 413: [r"Upload too large:"], 400: [FIELD_TOO_LONG]},
    ("POST", "/v1/scans"): {422: [r"SHA-256 mismatch:", r"Unknown artifact:", r"Wrong kind of \w+:"],
                            413: [r"Upload too large:", r"Request too large:"], 400: [FIELD_TOO_LONG]},
    ("GET", "/v1/scans"): {400: [r"Invalid cursor:"]},
    # a URL the schema allows may not resolve, or resolve to a non-public address (SSRF refusal)
    ("POST", "/v1/webhooks"): {422: [r"Webhook URL refused:"], 409: [r"Too many webhooks:"]},
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): {400: [r"Invalid cursor:"]},
}
# schemathesis's defaults for positive_data_acceptance
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]


def expected_statuses(method: str, path: str) -> list[str]:
    """positive_data_acceptance's statuses for one operation: schemathesis's defaults and the semantic refusals."""
    return ACCEPTED + [str(status) for status in SEMANTIC_REFUSALS.get((method, path), {})]


# RFC 9110: a field name is a token, and these characters are not allowed in a field value. A request that breaks
# this is not HTTP: the HTTP server (uvicorn) refuses it with a bare 400 before the API sees it, so it would test
# uvicorn's parser, not this document. schemathesis sends such values now and then in negative cases; not here.
FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
INVALID_IN_FIELD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@schemathesis.hook
def filter_headers(ctx, headers):
    return not headers or all(FIELD_NAME.fullmatch(str(name)) and not INVALID_IN_FIELD_VALUE.search(str(value))
                              for name, value in headers.items())


@schemathesis.check
def refused_only_for_semantic_reasons(ctx, response, case):
    """A schema-valid request answered with a semantic refusal's status must give one of its reasons."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    allowed = SEMANTIC_REFUSALS.get((case.method.upper(), case.operation.path), {}).get(response.status_code)
    if allowed is None:
        return None
    try:
        problem = response.json()
        said = f"{problem.get('title')}: {problem.get('detail')}"
    except (ValueError, AttributeError):
        said = response.text[:200]
    if not any(re.match(pattern, said) for pattern in allowed):
        raise AssertionError(f"A schema-valid request was refused with {response.status_code} ({said}); the only "
                             f"refusals the schema cannot state here are {allowed}")
    return None
