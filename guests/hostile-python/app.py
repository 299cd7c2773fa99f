"""A payment.charge@1 guest in Python that reaches for WASI, which the host does not provide.

Built with componentize-py ``--stub-wasi``: every WASI import of the interpreter is a stub that
traps. ``charge`` reads the wall clock through Python's ``time`` module (a WASI clock call) instead
of the host's ``time.now``; the host must stop that call with a clear error, not hang or crash.
"""

import time

from wit_world import exports
from wit_world.exports import payment_charge_v1_api as api
from wit_world.imports import types


class PaymentChargeV1Api(exports.PaymentChargeV1Api):
    def charge(self, input, exchanges):
        started = time.time()  # WASI clocks: a stub that traps
        return api.ChargeStep_Failed(
            types.ContractError(
                code=types.ErrorCode.INTERNAL,
                message=f"unreachable: the clock answered {started}",
                retryable=False,
                retry_after_ms=None,
                provider_code=None,
                details=[],
            )
        )

    def refund(self, input, exchanges):
        return api.RefundStep_Failed(
            types.ContractError(
                code=types.ErrorCode.INTERNAL,
                message="the hostile guest does not refund",
                retryable=False,
                retry_after_ms=None,
                provider_code=None,
                details=[],
            )
        )
