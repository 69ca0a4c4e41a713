// @tollgate/client: the Tollgate API from Node 18+ and browsers, through `fetch`.
//
// The request and response types are generated from docs/openapi.json (src/schema.d.ts); this
// file is the small hand-written layer over them: one `request` that authenticates, times out,
// retries what is safe to retry and turns every error into a `TollgateError`, and the named
// calls of SPEC §16 on top of it. See index.d.ts for the types and README.md for usage.

import { randomId } from "#random";

const VERSION = "0.1.0";
const DEFAULT_BASE_URL = "http://127.0.0.1:8080";
const DEFAULT_TIMEOUT_MS = 30_000;
const DEFAULT_MAX_RETRIES = 2;
/** The first retry waits about this long; each one after it twice as long, up to the cap. */
const INITIAL_DELAY_MS = 500;
const MAX_DELAY_MS = 8_000;

/** Every failure: an error answer of the API (SPEC §2's shape) or no usable answer at all. */
export class TollgateError extends Error {
  constructor({ status, type, code, message, param, requestId, cause }) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "TollgateError";
    /** The HTTP status, or null when no answer came (a network error or a timeout). */
    this.status = status;
    /** SPEC §2's `type` (`not_found`, `limit_exceeded`, ...), or `connection` with no answer. */
    this.type = type;
    /** The machine-readable reason (`customer_not_found`, `timeout`, ...). */
    this.code = code;
    /** The parameter at fault, when the API names one. */
    this.param = param ?? null;
    /** The `x-request-id` the server answered with, for its logs. */
    this.requestId = requestId ?? null;
  }
}

export class Tollgate {
  constructor(options = {}) {
    const { apiKey, sessionToken } = options;
    if (!apiKey === !sessionToken) {
      throw new TypeError("Tollgate: give exactly one of apiKey and sessionToken");
    }
    this._token = apiKey ?? sessionToken;
    this._baseUrl = (options.baseUrl ?? DEFAULT_BASE_URL).replace(/\/+$/, "");
    this._timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this._maxRetries = options.maxRetries ?? DEFAULT_MAX_RETRIES;
    this._fetch = options.fetch ?? globalThis.fetch.bind(globalThis);

    const call = (method, path, init) => this.request(method, path, init);
    const id = encodeURIComponent;

    this.customers = {
      list: (query, opts) => call("GET", "/v1/customers", { query, ...opts }),
      get: (customer, opts) => call("GET", `/v1/customers/${id(customer)}`, opts),
      /** Creates the customer or replaces its attributes (`PUT`, idempotent by itself). */
      upsert: (customer, body = {}, opts) =>
        call("PUT", `/v1/customers/${id(customer)}`, { body, ...opts }),
      delete: (customer, opts) => call("DELETE", `/v1/customers/${id(customer)}`, opts),
      usage: (customer, opts) => call("GET", `/v1/customers/${id(customer)}/usage`, opts),
      usageHistory: (customer, query, opts) =>
        call("GET", `/v1/customers/${id(customer)}/usage/history`, { query, ...opts }),
      /** An organisation's usage by member this period: totals, average, the top 10. */
      memberUsage: (customer, opts) =>
        call("GET", `/v1/customers/${id(customer)}/usage/members`, opts),
      alerts: (customer, opts) => call("GET", `/v1/customers/${id(customer)}/alerts`, opts),
      subscription: (customer, opts) =>
        call("GET", `/v1/customers/${id(customer)}/subscription`, opts),
      invoices: (customer, query, opts) =>
        call("GET", `/v1/customers/${id(customer)}/invoices`, { query, ...opts }),
      upcomingInvoice: (customer, opts) =>
        call("GET", `/v1/customers/${id(customer)}/upcoming_invoice`, opts),
    };

    this.subscriptions = {
      create: (body, opts) => call("POST", "/v1/subscriptions", { body, ...opts }),
      get: (subscription, opts) => call("GET", `/v1/subscriptions/${id(subscription)}`, opts),
      change: (subscription, body, opts) =>
        call("POST", `/v1/subscriptions/${id(subscription)}/change`, { body, ...opts }),
      cancel: (subscription, body = {}, opts) =>
        call("POST", `/v1/subscriptions/${id(subscription)}/cancel`, { body, ...opts }),
      reactivate: (subscription, opts) =>
        call("POST", `/v1/subscriptions/${id(subscription)}/reactivate`, { body: {}, ...opts }),
    };

    this.invoices = {
      get: (invoice, opts) => call("GET", `/v1/invoices/${id(invoice)}`, opts),
      pay: (invoice, body = {}, opts) =>
        call("POST", `/v1/invoices/${id(invoice)}/pay`, { body, ...opts }),
      void: (invoice, opts) =>
        call("POST", `/v1/invoices/${id(invoice)}/void`, { body: {}, ...opts }),
      /** The invoice as a PDF document. */
      pdf: (invoice, opts) =>
        call("GET", `/v1/invoices/${id(invoice)}/pdf`, { ...opts, responseType: "bytes" }),
    };

    this.sessions = {
      /** A customer session (`cs_…` token, shown once) for that customer's browser. */
      create: (customer, { ttlSeconds, ...opts } = {}) =>
        call("POST", "/v1/customer_sessions", {
          body: ttlSeconds === undefined ? { customer } : { customer, ttl_seconds: ttlSeconds },
          ...opts,
        }),
      revoke: (session, opts) => call("DELETE", `/v1/customer_sessions/${id(session)}`, opts),
    };

    // With a session token: the customer's own view (SPEC §9).
    this.me = {
      get: (opts) => call("GET", "/v1/me", opts),
      check: (feature, { quantity, ...opts } = {}) =>
        call("POST", "/v1/me/check", { body: withQuantity({ feature }, quantity), ...opts }),
      entitlements: (opts) => call("GET", "/v1/me/entitlements", opts),
      usage: (opts) => call("GET", "/v1/me/usage", opts),
      subscription: (opts) => call("GET", "/v1/me/subscription", opts),
      upcomingInvoice: (opts) => call("GET", "/v1/me/upcoming_invoice", opts),
      invoices: (query, opts) => call("GET", "/v1/me/invoices", { query, ...opts }),
      members: (opts) => call("GET", "/v1/me/members", opts),
      changeSubscription: (body, opts) =>
        call("POST", "/v1/me/subscription/change", { body, ...opts }),
      cancelSubscription: (body = {}, opts) =>
        call("POST", "/v1/me/subscription/cancel", { body, ...opts }),
      reactivateSubscription: (opts) =>
        call("POST", "/v1/me/subscription/reactivate", { body: {}, ...opts }),
    };
  }

  /** May `customer` use `quantity` (default 1) of `feature` now? Records nothing. */
  check(customer, feature, { quantity, ...opts } = {}) {
    return this.request("POST", "/v1/check", {
      body: withQuantity({ customer, feature }, quantity),
      ...opts,
    });
  }

  /**
   * Records usage. The event gets an id when the caller gives none, and the id is the request's
   * `Idempotency-Key`, so a retry after a lost answer is counted once.
   */
  track(customer, feature, quantity, { id, timestamp, member, ...rest } = {}) {
    const { idempotencyKey, timeoutMs, maxRetries, ...fields } = rest;
    const eventId = id ?? randomId();
    const body = withQuantity({ customer, feature, id: eventId }, quantity);
    if (timestamp !== undefined) body.timestamp = toTimestamp(timestamp);
    if (member !== undefined) body.member = member;
    Object.assign(body, fields); // billable, enforce, properties
    return this.request("POST", "/v1/usage", {
      body,
      idempotencyKey: idempotencyKey ?? eventId,
      timeoutMs,
      maxRetries,
    });
  }

  /**
   * Records up to 1000 events in one request; every event without an id gets one. The answer
   * has one result per event, in order (`recorded`, `duplicate`, `refused` or `invalid`).
   */
  trackBatch(events, opts) {
    const withIds = events.map((event) => {
      const e = { ...event, id: event.id ?? randomId() };
      if (e.timestamp !== undefined) e.timestamp = toTimestamp(e.timestamp);
      return e;
    });
    return this.request("POST", "/v1/usage/batch", { body: { events: withIds }, ...opts });
  }

  /** What `customer` may use: each feature's limit, usage and reset. */
  entitlements(customer, opts) {
    return this.request("GET", `/v1/customers/${encodeURIComponent(customer)}/entitlements`, opts);
  }

  /**
   * Any route of the API: `path` under the base URL, `query` appended, `body` sent as JSON.
   * POSTs carry an `Idempotency-Key` (one per call unless given), so their retries are safe.
   */
  async request(method, path, init = {}) {
    const { body, query, responseType } = init;
    const timeoutMs = init.timeoutMs ?? this._timeoutMs;
    const maxRetries = init.maxRetries ?? this._maxRetries;
    const headers = { Authorization: `Bearer ${this._token}`, Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method === "POST") headers["Idempotency-Key"] = init.idempotencyKey ?? randomId();
    const url = this._baseUrl + path + queryString(query);
    const payload = body === undefined ? undefined : JSON.stringify(body);

    for (let attempt = 0; ; attempt++) {
      let outcome;
      try {
        outcome = await this._once(method, url, headers, payload, timeoutMs, responseType);
      } catch (error) {
        outcome = { error: toError(error) };
      }
      if (outcome.error === undefined) return outcome.value;
      if (attempt >= maxRetries || !retryable(outcome.error)) throw outcome.error;
      await sleep(delayMs(attempt, outcome.retryAfter));
    }
  }

  /** One attempt: the parsed answer, or the error it came to (with any `Retry-After`). */
  async _once(method, url, headers, payload, timeoutMs, responseType) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(new TimeoutSignal()), timeoutMs);
    try {
      const res = await this._fetch(url, { method, headers, body: payload, signal: abort.signal });
      if (res.ok && responseType === "bytes") {
        return { value: new Uint8Array(await res.arrayBuffer()) };
      }
      const text = await res.text();
      const requestId = res.headers.get("x-request-id");
      if (res.ok) return parsed(res.status, text, requestId);
      return { error: apiError(res.status, text, requestId), retryAfter: res.headers.get("retry-after") };
    } finally {
      clearTimeout(timer);
    }
  }
}

export { VERSION };

// ---- helpers

class TimeoutSignal extends Error {}

function withQuantity(body, quantity) {
  if (quantity !== undefined && quantity !== null) body.quantity = quantity;
  return body;
}

function toTimestamp(t) {
  return t instanceof Date ? t.toISOString() : t;
}

function queryString(query) {
  if (!query) return "";
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v !== undefined && v !== null) params.append(k, String(v));
  }
  const s = params.toString();
  return s === "" ? "" : `?${s}`;
}

/** A success's body: JSON, or an error saying what came instead (a proxy's page, say). */
function parsed(status, text, requestId) {
  if (text === "") return { value: null };
  try {
    return { value: JSON.parse(text) };
  } catch (cause) {
    const error = new TollgateError({
      status,
      type: "internal",
      code: "invalid_response",
      message: `HTTP ${status} with a body that is not JSON: ${text.slice(0, 200)}`,
      requestId,
      cause,
    });
    return { error };
  }
}

function apiError(status, text, requestId) {
  let detail;
  try {
    detail = JSON.parse(text)?.error;
  } catch {
    detail = undefined;
  }
  if (detail && typeof detail.type === "string" && typeof detail.code === "string") {
    return new TollgateError({ status, ...detail, requestId });
  }
  // Not the API's error shape: a proxy or load balancer answered.
  return new TollgateError({
    status,
    type: status === 429 ? "rate_limited" : status >= 500 ? "unavailable" : "invalid_request",
    code: "unexpected_response",
    message: `HTTP ${status} without Tollgate's error body: ${text.slice(0, 200)}`,
    requestId,
  });
}

/** Whatever `fetch` threw: a timeout or a dropped connection. */
function toError(error) {
  if (error instanceof TollgateError) return error;
  if (error instanceof TimeoutSignal || error?.cause instanceof TimeoutSignal) {
    return new TollgateError({
      status: null,
      type: "connection",
      code: "timeout",
      message: "Tollgate did not answer in time; the request may or may not have taken effect",
    });
  }
  return new TollgateError({
    status: null,
    type: "connection",
    code: "connection_failed",
    message: `Could not reach Tollgate: ${error?.message ?? error}`,
    cause: error,
  });
}

/**
 * Retried: no answer at all, 429, 503, and a gateway's 502 or 504 (Tollgate did not answer it).
 * Any other status is the answer: a 500 would only be replayed by the Idempotency-Key.
 */
const RETRIED = new Set([429, 502, 503, 504]);
function retryable(error) {
  return error.status === null || RETRIED.has(error.status);
}

/** Exponential backoff with jitter (half to all of the step), at least what `Retry-After` asks. */
function delayMs(attempt, retryAfter) {
  const ceiling = Math.min(MAX_DELAY_MS, INITIAL_DELAY_MS * 2 ** attempt);
  const jittered = ceiling / 2 + Math.random() * (ceiling / 2);
  const asked = Number(retryAfter) * 1000;
  return Number.isFinite(asked) && asked > 0 ? Math.min(MAX_DELAY_MS, Math.max(asked, jittered)) : jittered;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
