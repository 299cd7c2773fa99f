"""payment.charge@1 on Stripe, in Python: the twin of guests/stripe-charge-rust.

Built with componentize-py and ``--stub-wasi`` (``vadyl::tools::guests::python``), so that the
component imports only the Vadyl host interfaces: there is no file system, clock, randomness or
network inside. The connector describes each HTTP request with ``egress.build_plan``; the host
checks it against the descriptor's allow-list, attaches the API key at send time and calls
``charge`` again with the exchange appended.

What componentize-py makes of the WIT: records are dataclasses with snake_case fields, enums are
``Enum``s in UPPER_SNAKE, a variant is one class per case (``ChargeStep_Done(value)``), an import
returning ``result<T, E>`` returns ``T`` or raises ``componentize_py_types.Err`` with ``E`` in
``.value``. An exception escaping an export traps the call, so every export catches everything and
answers ``failed``. Every module is imported here, at the top: imports run while the component is
built (pre-initialised), and there are no files to import from at run time.
"""

import json
from urllib.parse import urlencode

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import payment_charge_v1_api as api
from wit_world.imports import egress, observability, secrets, types

try:  # Written by the build when it points the guest at another origin (a loopback fake).
    from vadyl_build_config import STRIPE_BASE_URL as BASE_URL
except ImportError:
    BASE_URL = "https://api.stripe.com"

API_KEY_SECRET = "stripe-secret-key"
MAX_ATTEMPTS = 4

_CHARGE_STATUS = {
    "succeeded": api.ChargeStatus.SUCCEEDED,
    "pending": api.ChargeStatus.PENDING,
    "failed": api.ChargeStatus.FAILED,
    "requires_action": api.ChargeStatus.REQUIRES_ACTION,
}
_REFUND_STATUS = {
    "succeeded": api.RefundStatus.SUCCEEDED,
    "pending": api.RefundStatus.PENDING,
    "failed": api.RefundStatus.FAILED,
    "canceled": api.RefundStatus.CANCELED,
}
_REFUND_REASON = {
    api.RefundReason.REQUESTED_BY_CUSTOMER: "requested_by_customer",
    api.RefundReason.DUPLICATE: "duplicate",
    api.RefundReason.FRAUDULENT: "fraudulent",
}


class Failure(Exception):
    """A contract error on its way out of an operation."""

    def __init__(self, code, message, retryable=False, provider_code=None, retry_after_ms=None):
        super().__init__(message)
        self.error = types.ContractError(
            code=code,
            message=message,
            retryable=retryable,
            retry_after_ms=retry_after_ms,
            provider_code=provider_code,
            details=[],
        )


def _text(body):
    if isinstance(body, types.Body_Text):
        return body.value
    if isinstance(body, types.Body_Bytes):
        return body.value.decode("utf-8", "replace")
    return ""


def _header(response, name):
    for h in response.headers:
        if h.name.lower() == name.lower():
            return h.value
    return None


def _transient(exchange):
    outcome = exchange.outcome
    if isinstance(outcome, types.EgressOutcome_NetworkError):
        return outcome.value.kind != types.NetworkErrorKind.POLICY_DENIED
    status = outcome.value.status
    should_retry = _header(outcome.value, "Stripe-Should-Retry")
    if should_retry is not None:
        return should_retry == "true"
    return status == 429 or status >= 500


def _send(path, form, key):
    """One attempt: a new plan with the same body and idempotency key, the API key attached by the host."""
    headers = [types.Header("Content-Type", "application/x-www-form-urlencoded")]
    if key:
        headers.append(types.Header("Idempotency-Key", key))
    request = egress.EgressRequest(
        method=egress.Method.POST,
        url=BASE_URL + path,
        headers=headers,
        body=types.Body_Text(urlencode(form)),
        timeout_ms=None,
    )
    try:
        plan = egress.build_plan(request)
    except Err as e:
        raise Failure(types.ErrorCode.HOST_DENIED, f"the host refused the request to {path}: {e.value!r}")
    try:
        secrets.attach_auth_to_egress_plan(
            plan, secrets.EgressAuth_Bearer(secrets.SecretRef(name=API_KEY_SECRET, version=None))
        )
    except Err as e:
        raise Failure(types.ErrorCode.HOST_DENIED, f"the host refused to attach the API key: {e.value!r}")
    return plan


def _answer(exchanges):
    """The last exchange's JSON document, or the contract error that Stripe's answer means."""
    outcome = exchanges[-1].outcome
    if isinstance(outcome, types.EgressOutcome_NetworkError):
        kind = outcome.value.kind
        if kind == types.NetworkErrorKind.TIMEOUT:
            raise Failure(types.ErrorCode.TIMEOUT, "Stripe did not answer in time", retryable=True)
        if kind == types.NetworkErrorKind.POLICY_DENIED:
            raise Failure(types.ErrorCode.HOST_DENIED, f"the host refused to send: {outcome.value.message}")
        raise Failure(types.ErrorCode.UPSTREAM_UNAVAILABLE, "Stripe could not be reached", retryable=True)
    response = outcome.value
    try:
        doc = json.loads(_text(response.body) or "{}")
    except ValueError:
        raise Failure(types.ErrorCode.UNEXPECTED_RESPONSE, f"Stripe answered {response.status} with no JSON")
    if 200 <= response.status < 300:
        return doc
    error = doc.get("error") or {}
    provider = error.get("decline_code") or error.get("code")
    message = error.get("message") or f"Stripe answered {response.status}"
    codes = {
        400: types.ErrorCode.INVALID_INPUT,
        401: types.ErrorCode.UNAUTHENTICATED,
        402: types.ErrorCode.DECLINED,
        403: types.ErrorCode.PERMISSION_DENIED,
        404: types.ErrorCode.NOT_FOUND,
        409: types.ErrorCode.CONFLICT,
        429: types.ErrorCode.RATE_LIMITED,
    }
    code = codes.get(response.status, types.ErrorCode.UPSTREAM_UNAVAILABLE)
    if response.status < 500 and response.status not in codes:
        code = types.ErrorCode.UNEXPECTED_RESPONSE
    retry_after = _header(response, "Retry-After")
    retry_after_ms = int(retry_after) * 1000 if retry_after and retry_after.isdigit() else None
    retryable = response.status == 429 or response.status >= 500
    raise Failure(code, message, retryable=retryable, provider_code=provider, retry_after_ms=retry_after_ms)


def _step(send, finish, exchanges):
    """The retry loop of the step convention: send, send again after a transient answer, finish."""
    if not exchanges or (_transient(exchanges[-1]) and len(exchanges) < MAX_ATTEMPTS):
        return send()
    return finish(_answer(exchanges))


def _log(message, **fields):
    attributes = [observability.Attribute(k, observability.AttributeValue_Text(str(v))) for k, v in fields.items()]
    try:
        observability.log(observability.Level.INFO, message, attributes)
    except Err:
        pass  # telemetry is best effort: a rate-limited log never fails a charge


class PaymentChargeV1Api(exports.PaymentChargeV1Api):
    def charge(self, input, exchanges):
        try:
            if input.amount <= 0:
                raise Failure(types.ErrorCode.INVALID_INPUT, "the amount must be positive")
            if len(input.currency) != 3 or not (input.currency.isascii() and input.currency.isalpha()):
                raise Failure(types.ErrorCode.INVALID_INPUT, "the currency must be a three-letter ISO 4217 code")
            form = [("amount", str(input.amount)), ("currency", input.currency.lower()), ("source", input.source)]
            if input.description is not None:
                form.append(("description", input.description))
            if input.customer is not None:
                form.append(("customer", input.customer))
            if input.capture is not None:
                form.append(("capture", "true" if input.capture else "false"))
            for k, v in input.metadata:
                form.append((f"metadata[{k}]", v))

            def send():
                if not exchanges:
                    _log("creating a charge", amount=input.amount, currency=input.currency)
                return api.ChargeStep_Egress(_send("/v1/charges", form, input.idempotency_key))

            def finish(doc):
                status = _CHARGE_STATUS.get(doc.get("status"), api.ChargeStatus.PENDING)
                return api.ChargeStep_Done(
                    api.ChargeOutput(
                        charge_id=str(doc["id"]),
                        status=status,
                        amount=int(doc.get("amount", input.amount)),
                        currency=str(doc.get("currency", input.currency)),
                        captured=bool(doc.get("captured", False)),
                        receipt_url=doc.get("receipt_url"),
                        failure_code=doc.get("failure_code"),
                        created_at=None,
                    )
                )

            return _step(send, finish, exchanges)
        except Failure as f:
            return api.ChargeStep_Failed(f.error)
        except Exception as e:  # a defect here must not trap the call
            return api.ChargeStep_Failed(Failure(types.ErrorCode.INTERNAL, f"the connector failed: {e!r}").error)

    def refund(self, input, exchanges):
        try:
            form = [("charge", input.charge_id)]
            if input.amount is not None:
                form.append(("amount", str(input.amount)))
            if input.reason is not None:
                form.append(("reason", _REFUND_REASON[input.reason]))
            for k, v in input.metadata:
                form.append((f"metadata[{k}]", v))

            def send():
                return api.RefundStep_Egress(_send("/v1/refunds", form, input.idempotency_key))

            def finish(doc):
                return api.RefundStep_Done(
                    api.RefundOutput(
                        refund_id=str(doc["id"]),
                        charge_id=str(doc.get("charge", input.charge_id)),
                        status=_REFUND_STATUS.get(doc.get("status"), api.RefundStatus.PENDING),
                        amount=int(doc.get("amount", input.amount or 0)),
                        currency=str(doc.get("currency", "")),
                    )
                )

            return _step(send, finish, exchanges)
        except Failure as f:
            return api.RefundStep_Failed(f.error)
        except Exception as e:
            return api.RefundStep_Failed(Failure(types.ErrorCode.INTERNAL, f"the connector failed: {e!r}").error)
