// webhook.deliver@1 in JavaScript: the twin of guests/webhook-c/webhook.c (Standard Webhooks
// signatures by secrets.hmac, retries on 408/429/5xx as new plans), built with ComponentizeJS
// (`vadyl::tools::guests::js`, every optional WASI feature off, so the component imports only
// vadyl:connector/*). World: vadyl:connector/webhook-deliver-v1; the interface
// `webhook-deliver-v1-api` is the named export `webhookDeliverV1Api` (its lowerCamelCase).
//
// Conventions of the generated bindings:
//  - records are plain objects with lowerCamelCase fields;
//  - option<T> is `undefined` (none) or the value;
//  - variants are {tag: 'kebab-case-name', val}; enums are kebab-case strings;
//  - u64/s64 are BigInt, the other integers Number; list<u8> is Uint8Array;
//  - an imported func returning result<T, E> returns T, and throws on err; the thrown
//    value carries E in `.payload` (a ComponentError).
import { buildPlan } from 'vadyl:connector/egress@1.0.0';
import { hmac } from 'vadyl:connector/secrets@1.0.0';
import { now } from 'vadyl:connector/time@1.0.0';
import { log } from 'vadyl:connector/observability@1.0.0';

const DEFAULT_SIGNING_SECRET = 'webhook-signing-secret';
const USER_AGENT = 'vadyl-webhooks/1';
const MAX_ATTEMPTS = 5;
const TIMEOUT_MS = 10000n; // duration-ms is u64: a BigInt
const EXCERPT_CHARS = 64;

const utf8 = (s) => new TextEncoder().encode(s);

class Failed extends Error {
  constructor(code, message, retryable = false) {
    super(message);
    this.contractError = { code, message, retryable, retryAfterMs: undefined, providerCode: undefined, details: [] };
  }
}

/** The err payload of a result<_, E> an import threw. */
function errPayload(e) {
  return e && typeof e === 'object' && 'payload' in e ? e.payload : { tag: 'unknown', val: String(e) };
}

function validate(input) {
  if (!/^https?:\/\/[^/?#\s]/i.test(input.endpointUrl) || /[\x00-\x20\x7f]/.test(input.endpointUrl)) {
    throw new Failed('invalid-input', 'endpoint-url must be an absolute http:// or https:// URL');
  }
  if (input.eventId.trim() === '') {
    throw new Failed('invalid-input', 'event-id must not be empty: it is the webhook-id receivers deduplicate on');
  }
  if (/[\r\n]/.test(input.eventId) || /[\r\n]/.test(input.eventType)) {
    throw new Failed('invalid-input', 'event-id and event-type must not contain line breaks');
  }
  for (const [name, value] of input.headers) {
    if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name) || /[\r\n]/.test(value)) {
      throw new Failed('invalid-input', 'extra headers must be [name, value] pairs of a token and a one-line value');
    }
    if (name.toLowerCase().startsWith('webhook-')) {
      throw new Failed('invalid-input', 'extra headers must not set webhook-* headers: the connector sets them');
    }
  }
}

function maxAttempts(input) {
  const n = input.maxAttempts;
  return n === undefined || n < 1 ? 1 : Math.min(n, MAX_ATTEMPTS);
}

function currentTime() {
  try {
    return now(); // {seconds: BigInt, nanoseconds: Number}
  } catch (e) {
    throw new Failed('host-denied', `time.now was refused: ${errPayload(e).val}`);
  }
}

function sign(input, seconds) {
  const secret = { name: input.signingSecretRef ?? DEFAULT_SIGNING_SECRET, version: undefined };
  const message = utf8(`${input.eventId}.${seconds}.${input.payload}`);
  try {
    return 'v1,' + hmac(secret, 'sha256', message, 'base64').value;
  } catch (e) {
    const err = errPayload(e);
    const what = err.tag === 'not-found' ? 'no signing secret by this name is granted' : 'secrets.hmac refused to sign the event';
    throw new Failed('host-denied', err.val ? `${what}: ${err.val}` : what, err.tag === 'unavailable');
  }
}

function attempt(input) {
  const { seconds } = currentTime();
  const headers = [
    { name: 'webhook-id', value: input.eventId },
    { name: 'webhook-timestamp', value: String(seconds) },
    { name: 'webhook-signature', value: sign(input, seconds) },
  ];
  if (input.eventType) headers.push({ name: 'webhook-event-type', value: input.eventType });
  headers.push({ name: 'user-agent', value: USER_AGENT }, { name: 'content-type', value: 'application/json' });
  for (const [name, value] of input.headers) headers.push({ name, value });
  try {
    const plan = buildPlan({
      method: 'post',
      url: input.endpointUrl,
      headers,
      body: { tag: 'text', val: input.payload },
      timeoutMs: TIMEOUT_MS,
    });
    return { tag: 'egress', val: plan };
  } catch (e) {
    const err = errPayload(e);
    throw new Failed('host-denied', `egress.build-plan refused the delivery: ${err.tag}${err.val === undefined ? '' : ': ' + err.val}`);
  }
}

function rfc3339(seconds) {
  return new Date(Number(seconds) * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function finish(input, exchanges) {
  const { seconds } = currentTime();
  const signature = sign(input, seconds);
  const outcome = exchanges[exchanges.length - 1].outcome;
  const output = {
    delivered: false,
    statusCode: undefined,
    attemptCount: exchanges.length,
    signature,
    deliveredAt: rfc3339(seconds),
    responseExcerpt: undefined,
  };
  if (outcome.tag === 'response') {
    const { status, body } = outcome.val;
    output.delivered = status >= 200 && status < 300;
    output.statusCode = status;
    if (body.tag === 'text' && body.val.length) output.responseExcerpt = body.val.slice(0, EXCERPT_CHARS);
  }
  return { tag: 'done', val: output };
}

function judge(exchange) {
  const { outcome } = exchange;
  if (outcome.tag === 'network-error') return outcome.val.kind === 'policy-denied' ? 'refused' : 'retryable';
  const { status } = outcome.val;
  return status === 408 || status === 429 || status >= 500 ? 'retryable' : 'final';
}

function deliver(input, exchanges) {
  validate(input);
  if (exchanges.length === 0) {
    try {
      log('info', 'delivering webhook', [
        { key: 'event-type', value: { tag: 'text', val: input.eventType } },
        { key: 'event-id', value: { tag: 'text', val: input.eventId } },
      ]);
    } catch (_) {
      // best effort
    }
    return attempt(input);
  }
  const last = exchanges[exchanges.length - 1];
  switch (judge(last)) {
    case 'refused':
      throw new Failed('host-denied', `the host refused to send the delivery: ${last.outcome.val.message}`);
    case 'retryable':
      return exchanges.length < maxAttempts(input) ? attempt(input) : finish(input, exchanges);
    default:
      return finish(input, exchanges);
  }
}

export const webhookDeliverV1Api = {
  deliver(input, exchanges) {
    try {
      return deliver(input, exchanges);
    } catch (e) {
      if (e instanceof Failed) return { tag: 'failed', val: e.contractError };
      return { tag: 'failed', val: { code: 'internal', message: String(e), retryable: false, retryAfterMs: undefined, providerCode: undefined, details: [] } };
    }
  },
};
