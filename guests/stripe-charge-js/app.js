// payment.charge@1 on Stripe, in JavaScript: the twin of guests/stripe-charge-python, built with
// ComponentizeJS (`vadyl::tools::guests::js`, every optional WASI feature off, so the component
// imports only vadyl:connector/*). The connector describes each HTTP request with
// egress.buildPlan; the host checks it against the descriptor's allow-list, attaches the API key at
// send time, and calls `charge` again with the exchange appended.
//
// Conventions of the generated bindings: records are objects with lowerCamelCase fields, option<T>
// is `undefined` or the value, variants are {tag: 'kebab-case', val}, enums kebab-case strings,
// u64/s64 BigInt, an import returning result<T, E> returns T or throws with E in `.payload`. An
// exception escaping an export traps the call, so each export catches everything.
import { buildPlan } from 'vadyl:connector/egress@1.0.0';
import { attachAuthToEgressPlan } from 'vadyl:connector/secrets@1.0.0';
import { log } from 'vadyl:connector/observability@1.0.0';

const BASE_URL = 'https://api.stripe.com';
const API_KEY_SECRET = 'stripe-secret-key';
const MAX_ATTEMPTS = 4;
const CHARGE_STATUS = ['pending', 'succeeded', 'failed', 'requires-action'];
const REFUND_STATUS = ['pending', 'succeeded', 'failed', 'canceled'];

class Failure extends Error {
  constructor(code, message, { retryable = false, providerCode, retryAfterMs } = {}) {
    super(message);
    this.error = { code, message, retryable, retryAfterMs, providerCode, details: [] };
  }
}

const payloadOf = (e) => (e && typeof e === 'object' && 'payload' in e ? e.payload : { tag: 'unknown', val: String(e) });
const describe = (p) => (p.val === undefined ? p.tag : `${p.tag}: ${p.val}`);

function text(body) {
  if (body.tag === 'text') return body.val;
  if (body.tag === 'bytes') return new TextDecoder().decode(body.val);
  return '';
}

function header(response, name) {
  const h = response.headers.find((x) => x.name.toLowerCase() === name.toLowerCase());
  return h === undefined ? undefined : h.value;
}

function transient(exchange) {
  const { outcome } = exchange;
  if (outcome.tag === 'network-error') return outcome.val.kind !== 'policy-denied';
  const shouldRetry = header(outcome.val, 'Stripe-Should-Retry');
  if (shouldRetry !== undefined) return shouldRetry === 'true';
  return outcome.val.status === 429 || outcome.val.status >= 500;
}

function form(pairs) {
  return pairs.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`.replace(/%20/g, '+')).join('&');
}

// One attempt: a new plan with the same body and idempotency key, the API key attached by the host.
function send(path, pairs, key) {
  const headers = [{ name: 'Content-Type', value: 'application/x-www-form-urlencoded' }];
  if (key) headers.push({ name: 'Idempotency-Key', value: key });
  let plan;
  try {
    plan = buildPlan({ method: 'post', url: BASE_URL + path, headers, body: { tag: 'text', val: form(pairs) }, timeoutMs: undefined });
  } catch (e) {
    throw new Failure('host-denied', `the host refused the request to ${path}: ${describe(payloadOf(e))}`);
  }
  try {
    attachAuthToEgressPlan(plan, { tag: 'bearer', val: { name: API_KEY_SECRET, version: undefined } });
  } catch (e) {
    throw new Failure('host-denied', `the host refused to attach the API key: ${describe(payloadOf(e))}`);
  }
  return plan;
}

const CODES = { 400: 'invalid-input', 401: 'unauthenticated', 402: 'declined', 403: 'permission-denied', 404: 'not-found', 409: 'conflict', 429: 'rate-limited' };

// The last exchange's JSON document, or the contract error Stripe's answer means.
function answer(exchanges) {
  const { outcome } = exchanges[exchanges.length - 1];
  if (outcome.tag === 'network-error') {
    const { kind, message } = outcome.val;
    if (kind === 'timeout') throw new Failure('timeout', 'Stripe did not answer in time', { retryable: true });
    if (kind === 'policy-denied') throw new Failure('host-denied', `the host refused to send: ${message}`);
    throw new Failure('upstream-unavailable', 'Stripe could not be reached', { retryable: true });
  }
  const response = outcome.val;
  let doc;
  try {
    doc = JSON.parse(text(response.body) || '{}');
  } catch (_) {
    throw new Failure('unexpected-response', `Stripe answered ${response.status} with no JSON`);
  }
  if (response.status >= 200 && response.status < 300) return doc;
  const error = doc.error || {};
  let code = CODES[response.status] || (response.status >= 500 ? 'upstream-unavailable' : 'unexpected-response');
  const retryAfter = header(response, 'Retry-After');
  throw new Failure(code, error.message || `Stripe answered ${response.status}`, {
    retryable: response.status === 429 || response.status >= 500,
    providerCode: error.decline_code || error.code || undefined,
    retryAfterMs: retryAfter && /^\d+$/.test(retryAfter) ? BigInt(retryAfter) * 1000n : undefined,
  });
}

// The step convention's retry loop: send, send again after a transient answer, finish.
function step(again, finish, exchanges) {
  if (exchanges.length === 0 || (transient(exchanges[exchanges.length - 1]) && exchanges.length < MAX_ATTEMPTS)) {
    return again();
  }
  return finish(answer(exchanges));
}

const failed = (e) => ({
  tag: 'failed',
  val: e instanceof Failure ? e.error : new Failure('internal', `the connector failed: ${e}`).error,
});

function charge(input, exchanges) {
  if (input.amount <= 0n) throw new Failure('invalid-input', 'the amount must be positive');
  if (!/^[A-Za-z]{3}$/.test(input.currency)) {
    throw new Failure('invalid-input', 'the currency must be a three-letter ISO 4217 code');
  }
  const pairs = [['amount', String(input.amount)], ['currency', input.currency.toLowerCase()], ['source', input.source]];
  if (input.description !== undefined) pairs.push(['description', input.description]);
  if (input.customer !== undefined) pairs.push(['customer', input.customer]);
  if (input.capture !== undefined) pairs.push(['capture', input.capture ? 'true' : 'false']);
  for (const [k, v] of input.metadata) pairs.push([`metadata[${k}]`, v]);
  return step(
    () => {
      if (exchanges.length === 0) {
        try {
          log('info', 'creating a charge', [{ key: 'currency', value: { tag: 'text', val: input.currency } }]);
        } catch (_) {
          // telemetry is best effort
        }
      }
      return { tag: 'egress', val: send('/v1/charges', pairs, input.idempotencyKey) };
    },
    (doc) => ({
      tag: 'done',
      val: {
        chargeId: String(doc.id),
        status: CHARGE_STATUS.includes(String(doc.status).replace('_', '-')) ? String(doc.status).replace('_', '-') : 'pending',
        amount: doc.amount === undefined ? input.amount : BigInt(doc.amount),
        currency: String(doc.currency ?? input.currency),
        captured: Boolean(doc.captured),
        receiptUrl: doc.receipt_url ?? undefined,
        failureCode: doc.failure_code ?? undefined,
        createdAt: undefined,
      },
    }),
    exchanges,
  );
}

function refund(input, exchanges) {
  const pairs = [['charge', input.chargeId]];
  if (input.amount !== undefined) pairs.push(['amount', String(input.amount)]);
  if (input.reason !== undefined) pairs.push(['reason', input.reason.replace(/-/g, '_')]);
  for (const [k, v] of input.metadata) pairs.push([`metadata[${k}]`, v]);
  return step(
    () => ({ tag: 'egress', val: send('/v1/refunds', pairs, input.idempotencyKey) }),
    (doc) => ({
      tag: 'done',
      val: {
        refundId: String(doc.id),
        chargeId: String(doc.charge ?? input.chargeId),
        status: REFUND_STATUS.includes(doc.status) ? doc.status : 'pending',
        amount: doc.amount === undefined ? (input.amount ?? 0n) : BigInt(doc.amount),
        currency: String(doc.currency ?? ''),
      },
    }),
    exchanges,
  );
}

export const paymentChargeV1Api = {
  charge(input, exchanges) {
    try {
      return charge(input, exchanges);
    } catch (e) {
      return failed(e);
    }
  },
  refund(input, exchanges) {
    try {
      return refund(input, exchanges);
    } catch (e) {
      return failed(e);
    }
  },
};
