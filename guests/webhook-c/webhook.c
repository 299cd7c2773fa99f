/*
 * webhook.deliver@1 written in C: delivers an event to a subscriber endpoint following Standard
 * Webhooks, as a Vadyl component. It does what examples/webhook.connector.json declares, and is
 * meant to be read as an example of a hand-written connector.
 *
 * How a Vadyl operation runs
 * --------------------------
 * The connector never does I/O. `deliver` is a step function: the host calls it with the input and
 * the HTTP exchanges completed so far (none at first), and it answers one of
 *
 *   done(output)     the delivery is finished;
 *   egress(plan)     "send this request", where `plan` comes from egress.build-plan: the host checks
 *                    it against the publication's allow-list, sends it, and calls `deliver` again,
 *                    in a fresh instance, with the same input and the exchange appended;
 *   failed(error)    the delivery cannot be attempted.
 *
 * Every answer is a pure function of the input, the exchanges and what the host imports answered,
 * so the host can record and replay the whole conversation. Nothing survives between two calls:
 * globals start over in every instance.
 *
 * What this connector sends
 * -------------------------
 *   POST <endpoint-url>
 *   webhook-id: <event-id>
 *   webhook-timestamp: <unix seconds, from time.now>
 *   webhook-signature: v1,<base64 HMAC-SHA256(secret, "<event-id>.<timestamp>.<payload>")>
 *   webhook-event-type: <event-type>
 *   user-agent: vadyl-webhooks/1
 *   content-type: application/json
 *   <the input's extra headers>
 *
 *   <payload, verbatim>
 *
 * The HMAC is computed by the host (secrets.hmac) with the secret named by `signing-secret-ref`,
 * or `webhook-signing-secret`: the connector never sees the secret. The payload is sensitive, so it
 * is never logged nor put in an error message.
 *
 * Retries: a 408, 429 or 5xx answer, or a network error, is tried again (each attempt is one more
 * exchange, signed afresh) until `max-attempts` (default 1, at most 5) attempts were made. The
 * result is then `done` with `delivered` = the last answer was 2xx; an endpoint that keeps failing
 * is reported in the output, not as an error, as the declarative connector does.
 *
 * Memory: the bindings (webhook_deliver_v1.h) say who owns what. The input and the exchanges
 * belong to `deliver`, which frees them; strings passed to imports are only borrowed; strings that
 * imports return, and those put in the step returned, are owned, and the bindings free the latter
 * after the host has read them. Allocation failure traps (abort), which the host reports.
 */
#include <stdlib.h>
#include <string.h>

#include "webhook_deliver_v1.h"

#define DEFAULT_SIGNING_SECRET "webhook-signing-secret"
#define USER_AGENT "vadyl-webhooks/1"
#define SIGNATURE_PREFIX "v1,"
#define DEFAULT_ATTEMPTS 1u
#define MAX_ATTEMPTS 5u
#define TIMEOUT_MS 10000u
#define EXCERPT_BYTES 64u

/* Shorter names for the generated types. */
typedef webhook_deliver_v1_string_t string_t;
typedef exports_vadyl_connector_webhook_deliver_v1_api_deliver_input_t deliver_input_t;
typedef exports_vadyl_connector_webhook_deliver_v1_api_deliver_output_t deliver_output_t;
typedef exports_vadyl_connector_webhook_deliver_v1_api_deliver_step_t deliver_step_t;
typedef exports_vadyl_connector_webhook_deliver_v1_api_list_egress_exchange_t exchange_list_t;
typedef vadyl_connector_types_egress_exchange_t exchange_t;
typedef vadyl_connector_types_error_code_t error_code_t;
typedef vadyl_connector_types_header_t header_t;

/* ---------------------------------------------------------------------------------------------
 * Strings and a growable byte buffer
 * ------------------------------------------------------------------------------------------- */

static void *xmalloc(size_t size) {
    void *ptr = malloc(size);
    if (!ptr) {
        abort();
    }
    return ptr;
}

/* A borrowed view of a C literal, for arguments of imports (which only borrow). */
static string_t view(const char *s) { return (string_t){(uint8_t *)s, strlen(s)}; }

typedef struct {
    uint8_t *ptr;
    size_t len;
    size_t cap;
} buf_t;

static void buf_put(buf_t *b, const void *data, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n) {
            cap *= 2;
        }
        uint8_t *grown = realloc(b->ptr, cap);
        if (!grown) {
            abort();
        }
        b->ptr = grown;
        b->cap = cap;
    }
    memcpy(b->ptr + b->len, data, n);
    b->len += n;
}

static void buf_put_cstr(buf_t *b, const char *s) { buf_put(b, s, strlen(s)); }

static void buf_put_str(buf_t *b, const string_t *s) { buf_put(b, s->ptr, s->len); }

/* `value` in decimal, left-padded with zeros to `width` digits. */
static void buf_put_uint(buf_t *b, uint64_t value, unsigned width) {
    char digits[20];
    unsigned n = 0;
    do {
        digits[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    while (n < width && n < sizeof digits) {
        digits[n++] = '0';
    }
    while (n) {
        buf_put(b, &digits[--n], 1);
    }
}

/* Hands the buffer's bytes over as an owned string. */
static string_t buf_take(buf_t *b) {
    string_t s = {b->ptr, b->len};
    *b = (buf_t){0};
    return s;
}

/* An owned copy of `len` bytes, for strings placed in the step returned to the host. */
static string_t owned(const uint8_t *ptr, size_t len) {
    buf_t b = {0};
    buf_put(&b, ptr, len);
    return buf_take(&b);
}

static int ascii_lower(int c) { return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c; }

static bool starts_with_ci(const string_t *s, const char *prefix) {
    size_t n = strlen(prefix);
    if (s->len < n) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (ascii_lower(s->ptr[i]) != ascii_lower((unsigned char)prefix[i])) {
            return false;
        }
    }
    return true;
}

static bool has_line_break(const string_t *s) {
    for (size_t i = 0; i < s->len; i++) {
        if (s->ptr[i] == '\r' || s->ptr[i] == '\n') {
            return true;
        }
    }
    return false;
}

static bool is_blank(const string_t *s) {
    for (size_t i = 0; i < s->len; i++) {
        if (s->ptr[i] != ' ' && s->ptr[i] != '\t') {
            return false;
        }
    }
    return true;
}

/* ---------------------------------------------------------------------------------------------
 * Step answers
 * ------------------------------------------------------------------------------------------- */

/* failed(error): `message` must not contain secrets or the payload. `detail` (may be NULL) is
 * appended after a colon, e.g. the host's reason for refusing. */
static void fail(deliver_step_t *ret, error_code_t code, bool retryable, const char *message, const string_t *detail) {
    buf_t text = {0};
    buf_put_cstr(&text, message);
    if (detail && detail->len) {
        buf_put_cstr(&text, ": ");
        buf_put_str(&text, detail);
    }
    ret->tag = EXPORTS_VADYL_CONNECTOR_WEBHOOK_DELIVER_V1_API_DELIVER_STEP_FAILED;
    ret->val.failed = (vadyl_connector_types_contract_error_t){
        .code = code,
        .message = buf_take(&text),
        .retryable = retryable,
        .retry_after_ms = {.is_some = false},
        .provider_code = {.is_some = false},
        .details = {NULL, 0},
    };
}

static void fail_invalid_input(deliver_step_t *ret, const char *message) {
    fail(ret, VADYL_CONNECTOR_TYPES_ERROR_CODE_INVALID_INPUT, false, message, NULL);
}

/* ---------------------------------------------------------------------------------------------
 * Input
 * ------------------------------------------------------------------------------------------- */

/* An absolute http(s) URL with a host. The host checks the rest (allow-list, syntax). */
static bool is_http_url(const string_t *url) {
    size_t scheme;
    if (starts_with_ci(url, "https://")) {
        scheme = 8;
    } else if (starts_with_ci(url, "http://")) {
        scheme = 7;
    } else {
        return false;
    }
    if (url->len == scheme || url->ptr[scheme] == '/' || url->ptr[scheme] == '?' || url->ptr[scheme] == '#') {
        return false;
    }
    for (size_t i = 0; i < url->len; i++) {
        if (url->ptr[i] <= ' ' || url->ptr[i] == 0x7f) {
            return false;
        }
    }
    return true;
}

/* A header name: an HTTP token (RFC 9110), e.g. `x-tenant`. */
static bool is_header_name(const string_t *name) {
    static const char separators[] = "\"(),/:;<=>?@[\\]{}";
    if (name->len == 0) {
        return false;
    }
    for (size_t i = 0; i < name->len; i++) {
        uint8_t c = name->ptr[i];
        if (c <= ' ' || c >= 0x7f) {
            return false;
        }
        for (const char *s = separators; *s; s++) {
            if (c == (uint8_t)*s) {
                return false;
            }
        }
    }
    return true;
}

/* Checks what the host cannot: answers failed(invalid-input) and returns false when the input is
 * not deliverable. */
static bool validate(const deliver_input_t *in, deliver_step_t *ret) {
    if (!is_http_url(&in->endpoint_url)) {
        fail_invalid_input(ret, "endpoint-url must be an absolute http:// or https:// URL");
        return false;
    }
    if (is_blank(&in->event_id)) {
        fail_invalid_input(ret, "event-id must not be empty: it is the webhook-id receivers deduplicate on");
        return false;
    }
    if (has_line_break(&in->event_id) || has_line_break(&in->event_type)) {
        fail_invalid_input(ret, "event-id and event-type must not contain line breaks");
        return false;
    }
    for (size_t i = 0; i < in->headers.len; i++) {
        const string_t *name = &in->headers.ptr[i].f0;
        if (!is_header_name(name) || has_line_break(&in->headers.ptr[i].f1)) {
            fail_invalid_input(ret, "extra headers must be [name, value] pairs of a token and a one-line value");
            return false;
        }
        if (starts_with_ci(name, "webhook-")) {
            fail_invalid_input(ret, "extra headers must not set webhook-* headers: the connector sets them");
            return false;
        }
    }
    return true;
}

static uint32_t max_attempts(const deliver_input_t *in) {
    if (!in->max_attempts.is_some || in->max_attempts.val < 1) {
        return DEFAULT_ATTEMPTS;
    }
    return in->max_attempts.val > MAX_ATTEMPTS ? MAX_ATTEMPTS : in->max_attempts.val;
}

/* ---------------------------------------------------------------------------------------------
 * Host imports
 * ------------------------------------------------------------------------------------------- */

/* time.now; on refusal answers failed(host-denied) and returns false. */
static bool now(vadyl_connector_types_timestamp_t *out, deliver_step_t *ret) {
    vadyl_connector_time_time_error_t err;
    if (vadyl_connector_time_now(out, &err)) {
        return true;
    }
    fail(ret, VADYL_CONNECTOR_TYPES_ERROR_CODE_HOST_DENIED, false, "time.now was refused", &err.val.denied);
    vadyl_connector_time_time_error_free(&err);
    return false;
}

/* The Standard Webhooks signature header value for a delivery at `timestamp`:
 * "v1," + base64(HMAC-SHA256(secret, "<event-id>.<timestamp>.<payload>")), MACed by the host.
 * On refusal answers failed(host-denied) and returns false. */
static bool sign(const deliver_input_t *in, uint64_t timestamp, string_t *signature, deliver_step_t *ret) {
    vadyl_connector_secrets_secret_ref_t secret = {
        .name = in->signing_secret_ref.is_some ? in->signing_secret_ref.val : view(DEFAULT_SIGNING_SECRET),
        .version = {.is_some = false},
    };
    buf_t message = {0};
    buf_put_str(&message, &in->event_id);
    buf_put_cstr(&message, ".");
    buf_put_uint(&message, timestamp, 1);
    buf_put_cstr(&message, ".");
    buf_put_str(&message, &in->payload);
    webhook_deliver_v1_list_u8_t bytes = {message.ptr, message.len};

    vadyl_connector_secrets_signature_t mac;
    vadyl_connector_secrets_secrets_error_t err;
    bool ok = vadyl_connector_secrets_hmac(&secret, VADYL_CONNECTOR_SECRETS_HMAC_ALGORITHM_SHA256, &bytes,
                                           VADYL_CONNECTOR_SECRETS_ENCODING_BASE64, &mac, &err);
    free(message.ptr);
    if (ok) {
        buf_t header = {0};
        buf_put_cstr(&header, SIGNATURE_PREFIX);
        buf_put_str(&header, &mac.value);
        *signature = buf_take(&header);
        vadyl_connector_secrets_signature_free(&mac);
        return true;
    }
    const char *what = "secrets.hmac refused to sign the event";
    string_t reason = {NULL, 0};
    switch (err.tag) {
    case VADYL_CONNECTOR_SECRETS_SECRETS_ERROR_NOT_FOUND:
        what = "no signing secret by this name is granted";
        reason = err.val.not_found;
        break;
    case VADYL_CONNECTOR_SECRETS_SECRETS_ERROR_DECRYPTION_FAILED:
        break;
    default: /* the other variants carry their explanation at the same place of the union */
        reason = err.val.denied;
        break;
    }
    bool retryable = err.tag == VADYL_CONNECTOR_SECRETS_SECRETS_ERROR_UNAVAILABLE;
    fail(ret, VADYL_CONNECTOR_TYPES_ERROR_CODE_HOST_DENIED, retryable, what, &reason);
    vadyl_connector_secrets_secrets_error_free(&err);
    return false;
}

/* Logs that a delivery starts. Attributes are non-sensitive: never the payload. Logging is best
 * effort: a refused log does not stop the delivery. */
static void log_delivery(const deliver_input_t *in) {
    vadyl_connector_observability_attribute_t attributes[] = {
        {view("event-type"), {.tag = VADYL_CONNECTOR_OBSERVABILITY_ATTRIBUTE_VALUE_TEXT, .val.text = in->event_type}},
        {view("event-id"), {.tag = VADYL_CONNECTOR_OBSERVABILITY_ATTRIBUTE_VALUE_TEXT, .val.text = in->event_id}},
    };
    vadyl_connector_observability_list_attribute_t list = {attributes, sizeof attributes / sizeof attributes[0]};
    string_t message = view("delivering webhook");
    vadyl_connector_observability_observability_error_t err;
    if (!vadyl_connector_observability_log(VADYL_CONNECTOR_OBSERVABILITY_LEVEL_INFO, &message, &list, &err)) {
        vadyl_connector_observability_observability_error_free(&err);
    }
}

/* ---------------------------------------------------------------------------------------------
 * The steps
 * ------------------------------------------------------------------------------------------- */

/* Signs the event and asks the host to send it: answers egress(plan). */
static void attempt(const deliver_input_t *in, deliver_step_t *ret) {
    vadyl_connector_types_timestamp_t time;
    if (!now(&time, ret)) {
        return;
    }
    string_t signature;
    if (!sign(in, time.seconds, &signature, ret)) {
        return;
    }
    buf_t timestamp = {0};
    buf_put_uint(&timestamp, time.seconds, 1);

    size_t count = 0;
    header_t *headers = xmalloc(sizeof(header_t) * (6 + in->headers.len));
    headers[count++] = (header_t){view("webhook-id"), in->event_id};
    headers[count++] = (header_t){view("webhook-timestamp"), {timestamp.ptr, timestamp.len}};
    headers[count++] = (header_t){view("webhook-signature"), signature};
    if (in->event_type.len) {
        headers[count++] = (header_t){view("webhook-event-type"), in->event_type};
    }
    headers[count++] = (header_t){view("user-agent"), view(USER_AGENT)};
    headers[count++] = (header_t){view("content-type"), view("application/json")};
    for (size_t i = 0; i < in->headers.len; i++) {
        headers[count++] = (header_t){in->headers.ptr[i].f0, in->headers.ptr[i].f1};
    }

    vadyl_connector_egress_egress_request_t request = {
        .method = VADYL_CONNECTOR_EGRESS_METHOD_POST,
        .url = in->endpoint_url,
        .headers = {headers, count},
        .body = {.tag = VADYL_CONNECTOR_TYPES_BODY_TEXT, .val.text = in->payload},
        .timeout_ms = {.is_some = true, .val = TIMEOUT_MS},
    };
    vadyl_connector_egress_plan_id_t plan;
    vadyl_connector_egress_egress_error_t err;
    if (vadyl_connector_egress_build_plan(&request, &plan, &err)) {
        /* The plan id is owned: it moves into the answer. */
        ret->tag = EXPORTS_VADYL_CONNECTOR_WEBHOOK_DELIVER_V1_API_DELIVER_STEP_EGRESS;
        ret->val.egress = plan;
    } else {
        buf_t reason = {0};
        switch (err.tag) {
        case VADYL_CONNECTOR_EGRESS_EGRESS_ERROR_HOST_NOT_ALLOWED:
            buf_put_cstr(&reason, "the host is not on the allow-list: ");
            buf_put_str(&reason, &err.val.host_not_allowed);
            break;
        case VADYL_CONNECTOR_EGRESS_EGRESS_ERROR_INVALID_URL:
            buf_put_cstr(&reason, "invalid URL: ");
            buf_put_str(&reason, &err.val.invalid_url);
            break;
        case VADYL_CONNECTOR_EGRESS_EGRESS_ERROR_INVALID_HEADER:
            buf_put_cstr(&reason, "invalid or reserved header: ");
            buf_put_str(&reason, &err.val.invalid_header);
            break;
        case VADYL_CONNECTOR_EGRESS_EGRESS_ERROR_BODY_TOO_LARGE:
            buf_put_cstr(&reason, "the payload exceeds the host's limit of ");
            buf_put_uint(&reason, err.val.body_too_large, 1);
            buf_put_cstr(&reason, " bytes");
            break;
        case VADYL_CONNECTOR_EGRESS_EGRESS_ERROR_TOO_MANY_PLANS:
            buf_put_cstr(&reason, "too many plans in this invocation");
            break;
        default:
            buf_put_cstr(&reason, "denied: ");
            buf_put_str(&reason, &err.val.denied);
            break;
        }
        string_t text = {reason.ptr, reason.len};
        fail(ret, VADYL_CONNECTOR_TYPES_ERROR_CODE_HOST_DENIED, false, "egress.build-plan refused the delivery",
             &text);
        free(reason.ptr);
        vadyl_connector_egress_egress_error_free(&err);
    }
    free(headers);
    free(timestamp.ptr);
    webhook_deliver_v1_string_free(&signature);
}

/* RFC 3339 in UTC for `seconds` since the epoch, e.g. "2026-11-25T12:00:00Z". Civil date from the
 * day count with Howard Hinnant's `civil_from_days`. False past year 9999, which RFC 3339 cannot
 * write. */
static bool rfc3339(uint64_t seconds, string_t *out) {
    uint64_t days = seconds / 86400, rem = seconds % 86400;
    uint64_t z = days + 719468;
    uint64_t era = z / 146097;
    uint64_t doe = z - era * 146097;                                      /* [0, 146096] */
    uint64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* [0, 399] */
    uint64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);               /* [0, 365] */
    uint64_t mp = (5 * doy + 2) / 153;                                    /* [0, 11], March = 0 */
    uint64_t day = doy - (153 * mp + 2) / 5 + 1;
    uint64_t month = mp < 10 ? mp + 3 : mp - 9;
    uint64_t year = yoe + era * 400 + (month <= 2);
    if (year > 9999) {
        return false;
    }
    buf_t b = {0};
    buf_put_uint(&b, year, 4);
    buf_put_cstr(&b, "-");
    buf_put_uint(&b, month, 2);
    buf_put_cstr(&b, "-");
    buf_put_uint(&b, day, 2);
    buf_put_cstr(&b, "T");
    buf_put_uint(&b, rem / 3600, 2);
    buf_put_cstr(&b, ":");
    buf_put_uint(&b, rem / 60 % 60, 2);
    buf_put_cstr(&b, ":");
    buf_put_uint(&b, rem % 60, 2);
    buf_put_cstr(&b, "Z");
    *out = buf_take(&b);
    return true;
}

/* The first EXCERPT_BYTES bytes of a text body, cut at a character boundary; none otherwise. */
static webhook_deliver_v1_option_string_t excerpt(const vadyl_connector_types_body_t *body) {
    webhook_deliver_v1_option_string_t out = {.is_some = false};
    if (body->tag != VADYL_CONNECTOR_TYPES_BODY_TEXT || body->val.text.len == 0) {
        return out;
    }
    const string_t *text = &body->val.text;
    size_t n = text->len < EXCERPT_BYTES ? text->len : EXCERPT_BYTES;
    while (n < text->len && n > 0 && (text->ptr[n] & 0xC0) == 0x80) {
        n--; /* do not split a UTF-8 sequence */
    }
    out.is_some = true;
    out.val = owned(text->ptr, n);
    return out;
}

/* Answers done(output) from the last exchange. */
static void finish(const deliver_input_t *in, const exchange_list_t *exchanges, deliver_step_t *ret) {
    /* The exchange does not echo the request, and this instance cannot remember the previous one,
     * so the signature header is derived again from the same inputs. It is the value sent when
     * time.now answers the same second as when the request was signed (a host that records one
     * time per invocation). */
    vadyl_connector_types_timestamp_t time;
    if (!now(&time, ret)) {
        return;
    }
    string_t signature;
    if (!sign(in, time.seconds, &signature, ret)) {
        return;
    }
    const vadyl_connector_types_egress_outcome_t *outcome = &exchanges->ptr[exchanges->len - 1].outcome;
    deliver_output_t output = {
        .delivered = false,
        .status_code = {.is_some = false},
        .attempt_count = (uint32_t)exchanges->len,
        .signature = signature,
        .delivered_at = {.is_some = false},
        .response_excerpt = {.is_some = false},
    };
    if (outcome->tag == VADYL_CONNECTOR_TYPES_EGRESS_OUTCOME_RESPONSE) {
        uint16_t status = outcome->val.response.status;
        output.delivered = status >= 200 && status < 300;
        output.status_code = (webhook_deliver_v1_option_u16_t){.is_some = true, .val = status};
        output.response_excerpt = excerpt(&outcome->val.response.body);
    }
    output.delivered_at.is_some = rfc3339(time.seconds, &output.delivered_at.val);
    ret->tag = EXPORTS_VADYL_CONNECTOR_WEBHOOK_DELIVER_V1_API_DELIVER_STEP_DONE;
    ret->val.done = output;
}

typedef enum { FINAL, RETRYABLE, REFUSED } verdict_t;

/* What the last exchange means: 408, 429, 5xx and network errors may succeed on another attempt;
 * a plan the host refused at execution time will not. */
static verdict_t judge(const exchange_t *exchange) {
    const vadyl_connector_types_egress_outcome_t *outcome = &exchange->outcome;
    if (outcome->tag == VADYL_CONNECTOR_TYPES_EGRESS_OUTCOME_NETWORK_ERROR) {
        return outcome->val.network_error.kind == VADYL_CONNECTOR_TYPES_NETWORK_ERROR_KIND_POLICY_DENIED ? REFUSED
                                                                                                          : RETRYABLE;
    }
    uint16_t status = outcome->val.response.status;
    return status == 408 || status == 429 || status >= 500 ? RETRYABLE : FINAL;
}

static void deliver(const deliver_input_t *in, const exchange_list_t *exchanges, deliver_step_t *ret) {
    if (!validate(in, ret)) {
        return;
    }
    if (exchanges->len == 0) {
        log_delivery(in);
        attempt(in, ret);
        return;
    }
    const exchange_t *last = &exchanges->ptr[exchanges->len - 1];
    switch (judge(last)) {
    case REFUSED:
        fail(ret, VADYL_CONNECTOR_TYPES_ERROR_CODE_HOST_DENIED, false, "the host refused to send the delivery",
             &last->outcome.val.network_error.message);
        return;
    case RETRYABLE:
        if (exchanges->len < max_attempts(in)) {
            attempt(in, ret);
            return;
        }
        finish(in, exchanges, ret);
        return;
    case FINAL:
        finish(in, exchanges, ret);
        return;
    }
}

/* The export the bindings call for `deliver`. */
void exports_vadyl_connector_webhook_deliver_v1_api_deliver(deliver_input_t *input, exchange_list_t *exchanges,
                                                            deliver_step_t *ret) {
    deliver(input, exchanges, ret);
    exports_vadyl_connector_webhook_deliver_v1_api_deliver_input_free(input);
    exports_vadyl_connector_webhook_deliver_v1_api_list_egress_exchange_free(exchanges);
}
