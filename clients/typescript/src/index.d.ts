// The types of @tollgate/client. Every request and response shape comes from `schema.d.ts`,
// generated from docs/openapi.json by openapi-typescript (`npm run generate`); only the calls'
// signatures are written here.

import type { components, operations, paths } from "./schema.js";

export type { components, operations, paths };

/** The API's named shapes (`Schemas["CheckResult"]`, `Schemas["Invoice"]`, ...). */
export type Schemas = components["schemas"];

type JsonOf<T> = T extends { content: { "application/json": infer B } } ? B : never;
/** What an operation answers on success. */
export type Response<O extends keyof operations> = JsonOf<
  operations[O]["responses"][keyof operations[O]["responses"] & (200 | 201)]
>;
/** An operation's JSON body. */
export type Body<O extends keyof operations> = JsonOf<NonNullable<operations[O]["requestBody"]>>;
/** An operation's query parameters. */
export type Query<O extends keyof operations> = NonNullable<operations[O]["parameters"]["query"]>;

export type CheckResult = Schemas["CheckResult"];
export type UsageResult = Schemas["UsageResult"];
export type UsageInput = Schemas["UsageInput"];
export type BatchResult = Schemas["BatchResult"];
export type EntitlementList = Schemas["EntitlementList"];
export type Customer = Schemas["Customer"];
export type Subscription = Schemas["Subscription"];
export type Invoice = Schemas["Invoice"];
export type UpcomingInvoice = Schemas["UpcomingInvoice"];
export type CreatedSession = Schemas["CreatedSession"];
export type ErrorType = Schemas["ErrorType"];

export interface TollgateOptions {
  /** A tenant's secret key (`tg_test_…`, `tg_live_…`): for servers only, never a browser. */
  apiKey?: string;
  /** A customer session token (`cs_…`): the `me` calls, from the customer's browser. */
  sessionToken?: string;
  /** Where Tollgate answers. Default `http://127.0.0.1:8080`. */
  baseUrl?: string;
  /** How long one attempt may take before it is abandoned (and retried). Default 30 000. */
  timeoutMs?: number;
  /** Retries after the first attempt, for 429, 502, 503, 504, timeouts and network errors. Default 2. */
  maxRetries?: number;
  /** The `fetch` to use. Default the global one. */
  fetch?: typeof globalThis.fetch;
}

/** Per call: override the client's timeout and retries, or give the `Idempotency-Key`. */
export interface RequestOptions {
  timeoutMs?: number;
  maxRetries?: number;
  /** For a POST; by default one is generated per call and kept across its retries. */
  idempotencyKey?: string;
}

export interface RequestInit extends RequestOptions {
  body?: unknown;
  query?: Record<string, string | number | boolean | null | undefined>;
  /** `bytes` for a binary answer (a PDF): a `Uint8Array`. */
  responseType?: "json" | "bytes";
}

export interface TrackOptions extends RequestOptions {
  /** The event's id; generated when absent. A repeat of an id is counted once. */
  id?: string;
  /** When it happened (default now; at most 5 minutes ahead). */
  timestamp?: string | Date;
  /** The organisation member who used it. */
  member?: string;
  /** `false`: kept for the audit trail, counted nowhere. */
  billable?: boolean;
  /** `false`: usage that already happened; always counted (overage still capped). */
  enforce?: boolean;
  properties?: Record<string, unknown>;
}

/** One event of `trackBatch`: `track`'s fields in the API's own names. */
export type BatchEvent = Omit<UsageInput, "timestamp"> & { timestamp?: string | Date | null };

/** Every failure of a call. */
export class TollgateError extends Error {
  /** The HTTP status, or null when no answer came (a network error or a timeout). */
  readonly status: number | null;
  /** SPEC §2's error type; `connection` when no answer came (`internal` for a non-JSON one). */
  readonly type: ErrorType | "connection";
  /**
   * The machine-readable reason: the API's `code` (`customer_not_found`, `limit_exceeded`, ...),
   * or `timeout`, `connection_failed` or `invalid_response` when no usable answer came.
   */
  readonly code: string;
  /** The parameter at fault, when the API names one. */
  readonly param: string | null;
  /** The server's `x-request-id`, when it could be read. */
  readonly requestId: string | null;
}

export declare const VERSION: string;

export declare class Tollgate {
  constructor(options: TollgateOptions);

  /** May `customer` use `quantity` (default 1) of `feature` now? Records nothing. */
  check(
    customer: string,
    feature: string,
    options?: RequestOptions & { quantity?: number },
  ): Promise<CheckResult>;

  /** Records usage, counted once however often it is retried. */
  track(
    customer: string,
    feature: string,
    quantity?: number,
    options?: TrackOptions,
  ): Promise<UsageResult>;

  /** Up to 1000 events in one request; one result per event, in order. */
  trackBatch(events: BatchEvent[], options?: RequestOptions): Promise<BatchResult>;

  /** Each feature's limit, usage and reset for `customer`. */
  entitlements(customer: string, options?: RequestOptions): Promise<EntitlementList>;

  readonly customers: {
    list(query?: Query<"list_customers">, options?: RequestOptions): Promise<Response<"list_customers">>;
    get(customer: string, options?: RequestOptions): Promise<Customer>;
    upsert(customer: string, body?: Body<"put_customer">, options?: RequestOptions): Promise<Customer>;
    delete(customer: string, options?: RequestOptions): Promise<Response<"delete_customer">>;
    usage(customer: string, options?: RequestOptions): Promise<Response<"current_usage">>;
    usageHistory(
      customer: string,
      query?: Query<"usage_history">,
      options?: RequestOptions,
    ): Promise<Response<"usage_history">>;
    /** An organisation's usage by member this period: totals, average, the top 10. */
    memberUsage(customer: string, options?: RequestOptions): Promise<Response<"member_usage">>;
    alerts(customer: string, options?: RequestOptions): Promise<Response<"customer_alerts">>;
    subscription(customer: string, options?: RequestOptions): Promise<Subscription>;
    invoices(
      customer: string,
      query?: Query<"customer_invoices">,
      options?: RequestOptions,
    ): Promise<Response<"customer_invoices">>;
    upcomingInvoice(customer: string, options?: RequestOptions): Promise<UpcomingInvoice>;
  };

  readonly subscriptions: {
    create(body: Body<"create_subscription">, options?: RequestOptions): Promise<Subscription>;
    get(subscription: string, options?: RequestOptions): Promise<Subscription>;
    change(
      subscription: string,
      body: Body<"change_subscription">,
      options?: RequestOptions,
    ): Promise<Response<"change_subscription">>;
    cancel(
      subscription: string,
      body?: Body<"cancel_subscription">,
      options?: RequestOptions,
    ): Promise<Response<"cancel_subscription">>;
    reactivate(subscription: string, options?: RequestOptions): Promise<Response<"reactivate_subscription">>;
  };

  readonly invoices: {
    get(invoice: string, options?: RequestOptions): Promise<Invoice>;
    pay(invoice: string, body?: Body<"pay_invoice">, options?: RequestOptions): Promise<Invoice>;
    void(invoice: string, options?: RequestOptions): Promise<Invoice>;
    /** The invoice's PDF. */
    pdf(invoice: string, options?: RequestOptions): Promise<Uint8Array>;
  };

  readonly sessions: {
    /** A customer session for that customer's browser; its `token` is shown only here. */
    create(customer: string, options?: RequestOptions & { ttlSeconds?: number }): Promise<CreatedSession>;
    revoke(session: string, options?: RequestOptions): Promise<Response<"revoke_session">>;
  };

  /** With a session token: the customer's own view (SPEC §9). */
  readonly me: {
    get(options?: RequestOptions): Promise<Response<"me">>;
    check(feature: string, options?: RequestOptions & { quantity?: number }): Promise<CheckResult>;
    entitlements(options?: RequestOptions): Promise<EntitlementList>;
    usage(options?: RequestOptions): Promise<Response<"me_usage">>;
    subscription(options?: RequestOptions): Promise<Response<"me_subscription">>;
    upcomingInvoice(options?: RequestOptions): Promise<Response<"me_upcoming_invoice">>;
    invoices(query?: Query<"me_invoices">, options?: RequestOptions): Promise<Response<"me_invoices">>;
    members(options?: RequestOptions): Promise<Response<"me_members">>;
    changeSubscription(
      body: Body<"me_change_subscription">,
      options?: RequestOptions,
    ): Promise<Response<"me_change_subscription">>;
    cancelSubscription(
      body?: Body<"me_cancel_subscription">,
      options?: RequestOptions,
    ): Promise<Response<"me_cancel_subscription">>;
    reactivateSubscription(options?: RequestOptions): Promise<Response<"me_reactivate_subscription">>;
  };

  /** Any route: `path` under the base URL (`/v1/plans`), `query` appended, `body` as JSON. */
  request<T = unknown>(method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE", path: string, init?: RequestInit): Promise<T>;
}
