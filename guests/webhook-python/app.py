"""webhook.deliver@1 in Python: the twin of guests/webhook-c and guests/webhook-js.

Standard Webhooks delivery: `webhook-id`, `webhook-timestamp` and `webhook-signature`
(`v1,<base64 HMAC-SHA256 of "id.timestamp.payload">`, made by the host with `secrets.hmac`, so the
signing secret never enters the guest), retries on 408, 429, 5xx and network errors as new plans,
up to `max-attempts` (at most 5). Built with componentize-py `--stub-wasi`: the time comes from the
host's `time.now`, never from Python's clock (a stubbed WASI call).
"""

import re
from datetime import datetime, timezone

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import webhook_deliver_v1_api as api
from wit_world.imports import egress, observability, secrets, time, types

DEFAULT_SIGNING_SECRET = "webhook-signing-secret"
USER_AGENT = "vadyl-webhooks/1"
MAX_ATTEMPTS = 5
TIMEOUT_MS = 10000
EXCERPT_CHARS = 64
_URL = re.compile(r"^https?://[^/?#\s]", re.IGNORECASE)
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


class Failure(Exception):
    def __init__(self, code, message, retryable=False):
        super().__init__(message)
        self.error = types.ContractError(
            code=code, message=message, retryable=retryable, retry_after_ms=None, provider_code=None, details=[]
        )


def _validate(input):
    if not _URL.match(input.endpoint_url) or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in input.endpoint_url):
        raise Failure(types.ErrorCode.INVALID_INPUT, "endpoint-url must be an absolute http:// or https:// URL")
    if not input.event_id.strip():
        raise Failure(
            types.ErrorCode.INVALID_INPUT, "event-id must not be empty: it is the webhook-id receivers deduplicate on"
        )
    if any(c in input.event_id + input.event_type for c in "\r\n"):
        raise Failure(types.ErrorCode.INVALID_INPUT, "event-id and event-type must not contain line breaks")
    for name, value in input.headers:
        if not _TOKEN.match(name) or "\r" in value or "\n" in value:
            raise Failure(
                types.ErrorCode.INVALID_INPUT,
                "extra headers must be [name, value] pairs of a token and a one-line value",
            )
        if name.lower().startswith("webhook-"):
            raise Failure(
                types.ErrorCode.INVALID_INPUT, "extra headers must not set webhook-* headers: the connector sets them"
            )


def _now():
    try:
        return time.now()
    except Err as e:
        raise Failure(types.ErrorCode.HOST_DENIED, f"time.now was refused: {e.value!r}")


def _sign(input, seconds):
    name = input.signing_secret_ref if input.signing_secret_ref is not None else DEFAULT_SIGNING_SECRET
    message = f"{input.event_id}.{seconds}.{input.payload}".encode("utf-8")
    try:
        mac = secrets.hmac(secrets.SecretRef(name=name, version=None), secrets.HmacAlgorithm.SHA256, message,
                           secrets.Encoding.BASE64)
    except Err as e:
        what = "no signing secret by this name is granted" if isinstance(e.value, secrets.SecretsError_NotFound) \
            else "secrets.hmac refused to sign the event"
        raise Failure(types.ErrorCode.HOST_DENIED, f"{what}: {e.value!r}",
                      retryable=isinstance(e.value, secrets.SecretsError_Unavailable))
    return "v1," + mac.value


def _attempt(input):
    seconds = _now().seconds
    headers = [
        types.Header("webhook-id", input.event_id),
        types.Header("webhook-timestamp", str(seconds)),
        types.Header("webhook-signature", _sign(input, seconds)),
    ]
    if input.event_type:
        headers.append(types.Header("webhook-event-type", input.event_type))
    headers.append(types.Header("user-agent", USER_AGENT))
    headers.append(types.Header("content-type", "application/json"))
    headers.extend(types.Header(name, value) for name, value in input.headers)
    try:
        plan = egress.build_plan(
            egress.EgressRequest(
                method=egress.Method.POST,
                url=input.endpoint_url,
                headers=headers,
                body=types.Body_Text(input.payload),
                timeout_ms=TIMEOUT_MS,
            )
        )
    except Err as e:
        raise Failure(types.ErrorCode.HOST_DENIED, f"egress.build-plan refused the delivery: {e.value!r}")
    return api.DeliverStep_Egress(plan)


def _finish(input, exchanges):
    seconds = _now().seconds
    outcome = exchanges[-1].outcome
    delivered, status, excerpt = False, None, None
    if isinstance(outcome, types.EgressOutcome_Response):
        status = outcome.value.status
        delivered = 200 <= status < 300
        if isinstance(outcome.value.body, types.Body_Text) and outcome.value.body.value:
            excerpt = outcome.value.body.value[:EXCERPT_CHARS]
    at = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return api.DeliverStep_Done(
        api.DeliverOutput(
            delivered=delivered,
            status_code=status,
            attempt_count=len(exchanges),
            signature=_sign(input, seconds),
            delivered_at=at,
            response_excerpt=excerpt,
        )
    )


def _judge(exchange):
    outcome = exchange.outcome
    if isinstance(outcome, types.EgressOutcome_NetworkError):
        return "refused" if outcome.value.kind == types.NetworkErrorKind.POLICY_DENIED else "retryable"
    status = outcome.value.status
    return "retryable" if status in (408, 429) or status >= 500 else "final"


def _deliver(input, exchanges):
    _validate(input)
    if not exchanges:
        try:
            observability.log(
                observability.Level.INFO,
                "delivering webhook",
                [
                    observability.Attribute("event-type", observability.AttributeValue_Text(input.event_type)),
                    observability.Attribute("event-id", observability.AttributeValue_Text(input.event_id)),
                ],
            )
        except Err:
            pass  # telemetry is best effort
        return _attempt(input)
    last = exchanges[-1]
    verdict = _judge(last)
    if verdict == "refused":
        raise Failure(types.ErrorCode.HOST_DENIED, f"the host refused to send the delivery: {last.outcome.value.message}")
    attempts = 1 if input.max_attempts is None or input.max_attempts < 1 else min(input.max_attempts, MAX_ATTEMPTS)
    if verdict == "retryable" and len(exchanges) < attempts:
        return _attempt(input)
    return _finish(input, exchanges)


class WebhookDeliverV1Api(exports.WebhookDeliverV1Api):
    def deliver(self, input, exchanges):
        try:
            return _deliver(input, exchanges)
        except Failure as f:
            return api.DeliverStep_Failed(f.error)
        except Exception as e:  # a defect here must not trap the call
            return api.DeliverStep_Failed(Failure(types.ErrorCode.INTERNAL, f"the connector failed: {e!r}").error)
