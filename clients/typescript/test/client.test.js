// @tollgate/client against a real Tollgate (test/server.js): the calls of SPEC §16, typed
// errors, retries that count usage once, and timeouts.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { Tollgate, TollgateError } from "@tollgate/client";
import { startProxy } from "./proxy.js";
import { startTollgate, tenant } from "./server.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let server;
before(async () => {
  server = await startTollgate();
});
after(async () => {
  await server?.stop();
});

/** A client on a new tenant, and the tenant's raw API. */
async function setup(options = {}) {
  const t = await tenant(server);
  const client = new Tollgate({ apiKey: t.key, baseUrl: server.baseUrl, ...options });
  return { ...t, client };
}

/** Runs `body` with a proxy in front of the server that does what `plan` says (test/proxy.js). */
async function throughProxy(plan, body) {
  const proxy = await startProxy(server.baseUrl, plan);
  try {
    await body(proxy);
  } finally {
    await proxy.close();
  }
}

/** What the error thrown by `promise` is (failing if it resolves). */
async function failure(promise) {
  try {
    await promise;
  } catch (e) {
    return e;
  }
  assert.fail("expected the call to fail");
}

describe("check and track", () => {
  test("a check answers the limit and changes nothing; track records and answers what is left", async () => {
    const { client } = await setup();
    const check = await client.check("cus_1", "minutes", { quantity: 10 });
    assert.equal(check.allowed, true);
    assert.equal(check.limit, 300);
    assert.equal(check.used, 0);
    assert.equal(check.remaining, 300);
    assert.equal(check.requested, 10);

    const tracked = await client.track("cus_1", "minutes", 12.5);
    assert.match(tracked.id, UUID, "an id is generated for the event");
    assert.equal(tracked.duplicate, false);
    assert.equal(tracked.used, 12.5);
    assert.equal(tracked.remaining, 287.5);

    // The same id again is the same event: counted once.
    const again = await client.track("cus_1", "minutes", 12.5, { id: tracked.id });
    assert.equal(again.duplicate, true);
    assert.equal(again.used, 12.5);

    const { data } = await client.entitlements("cus_1");
    const minutes = data.find((e) => e.feature === "minutes");
    assert.equal(minutes.used, 12.5);
    assert.equal(minutes.limit, 300);
  });

  test("a track with a member and a past timestamp", async () => {
    const { client, call } = await setup();
    await call("PUT", "/v1/customers/cus_1/members/ann", { role: "member" });
    const at = new Date(Date.now() - 60_000);
    const tracked = await client.track("cus_1", "minutes", 3, { member: "ann", timestamp: at });
    assert.equal(Date.parse(tracked.timestamp), at.getTime());
    const members = await client.customers.memberUsage("cus_1");
    assert.deepEqual(members.data[0].top, [{ member: "ann", used: 3 }]);
    assert.equal(members.data[0].total, 3);
  });
});

describe("retries", () => {
  test("a track whose answer is lost is retried with the same id and counted once", async () => {
    const { client: direct, key } = await setup();
    await throughProxy((n) => (n === 1 ? "drop" : "forward"), async (proxy) => {
      const client = new Tollgate({ apiKey: key, baseUrl: proxy.url, maxRetries: 2 });
      const tracked = await client.track("cus_1", "minutes", 5);
      assert.equal(proxy.seen.length, 2, "the lost answer was retried once");
      const [first, second] = proxy.seen;
      assert.equal(first.body, second.body, "the retry sends the same event");
      assert.equal(JSON.parse(first.body).id, tracked.id);
      assert.equal(first.headers["idempotency-key"], tracked.id);
      assert.equal(second.headers["idempotency-key"], tracked.id);
      assert.equal(tracked.used, 5);
      // Tollgate did the work of both attempts once.
      const check = await direct.check("cus_1", "minutes");
      assert.equal(check.used, 5);
    });
  });

  test("a 503 is retried with the same Idempotency-Key; a one-off charge is created once", async () => {
    const { key, call } = await setup();
    // The first attempt is answered 503 by the proxy; the second reaches Tollgate, whose answer
    // is lost; the third is answered from the Idempotency-Key without charging again.
    const plan = (n) => (n === 1 ? "unavailable" : n === 2 ? "drop" : "forward");
    await throughProxy(plan, async (proxy) => {
      const client = new Tollgate({ apiKey: key, baseUrl: proxy.url, maxRetries: 2 });
      const item = await client.request("POST", "/v1/customers/cus_1/invoice_items", {
        body: { description: "Custom development (hours)", unit_amount: "150.00", quantity: 7.5 },
      });
      assert.equal(item.amount, "1125.00");
      assert.equal(proxy.seen.length, 3);
      const keys = new Set(proxy.seen.map((r) => r.headers["idempotency-key"]));
      assert.equal(keys.size, 1, "one Idempotency-Key across the retries");
      assert.match([...keys][0], UUID);
      const items = await call("GET", "/v1/customers/cus_1/invoice_items");
      assert.deepEqual(
        items.data.map((i) => [i.id, i.amount]),
        [[item.id, "1125.00"]],
      );
    });
  });

  test("retries stop at maxRetries with the last error", async () => {
    const { key } = await setup();
    await throughProxy(() => "unavailable", async (proxy) => {
      const client = new Tollgate({ apiKey: key, baseUrl: proxy.url, maxRetries: 1 });
      const e = await failure(client.check("cus_1", "minutes"));
      assert.ok(e instanceof TollgateError);
      assert.equal(e.status, 503);
      assert.equal(e.type, "unavailable");
      assert.equal(e.code, "database_unavailable");
      assert.equal(proxy.seen.length, 2);
    });
  });

  test("a timeout is a TollgateError after the retries, each attempt abandoned in time", async () => {
    const { key } = await setup();
    await throughProxy(() => "hang", async (proxy) => {
      const client = new Tollgate({ apiKey: key, baseUrl: proxy.url, timeoutMs: 150, maxRetries: 1 });
      const started = Date.now();
      const e = await failure(client.track("cus_1", "minutes", 1));
      assert.ok(e instanceof TollgateError);
      assert.equal(e.status, null);
      assert.equal(e.type, "connection");
      assert.equal(e.code, "timeout");
      assert.equal(proxy.seen.length, 2, "the timed-out attempt was retried once");
      assert.equal(proxy.seen[0].body, proxy.seen[1].body);
      // Two attempts of 150 ms and one backoff (at most 500 ms); nowhere near the 30 s default.
      assert.ok(Date.now() - started < 5_000);
    });
  });

  test("a load balancer's error page is a TollgateError with its status, once retried", async () => {
    const { key } = await setup();
    await throughProxy(() => "gateway", async (proxy) => {
      const client = new Tollgate({ apiKey: key, baseUrl: proxy.url, maxRetries: 1 });
      const e = await failure(client.check("cus_1", "minutes"));
      assert.ok(e instanceof TollgateError);
      assert.equal(e.status, 502);
      assert.equal(e.code, "unexpected_response");
      assert.match(e.message, /502 Bad Gateway/);
      assert.equal(proxy.seen.length, 2);
    });
  });

  test("an unreachable server is a connection error", async () => {
    const client = new Tollgate({ apiKey: "tg_test_x", baseUrl: "http://127.0.0.1:9", maxRetries: 0 });
    const e = await failure(client.check("cus_1", "minutes"));
    assert.ok(e instanceof TollgateError);
    assert.equal(e.type, "connection");
    assert.equal(e.code, "connection_failed");
    assert.equal(e.status, null);
  });
});

describe("errors", () => {
  /** A client whose every request is counted, to see that a 4xx is never retried. */
  async function counted() {
    const t = await setup();
    let requests = 0;
    const client = new Tollgate({
      apiKey: t.key,
      baseUrl: server.baseUrl,
      fetch: (...args) => {
        requests += 1;
        return fetch(...args);
      },
    });
    return { ...t, client, requests: () => requests };
  }

  test("402 over the limit, with the SPEC's code, not retried", async () => {
    const { client, requests } = await counted();
    const e = await failure(client.track("cus_1", "minutes", 301));
    assert.ok(e instanceof TollgateError);
    assert.equal(e.status, 402);
    assert.equal(e.type, "limit_exceeded");
    assert.equal(e.code, "limit_exceeded");
    assert.match(e.message, /./);
    assert.equal(requests(), 1);
    const check = await client.check("cus_1", "minutes");
    assert.equal(check.used, 0, "nothing was recorded");
  });

  test("404 for an unknown customer, not retried", async () => {
    const { client, requests } = await counted();
    const e = await failure(client.check("nobody", "minutes"));
    assert.ok(e instanceof TollgateError);
    assert.equal(e.status, 404);
    assert.equal(e.type, "not_found");
    assert.equal(e.code, "customer_not_found");
    assert.equal(requests(), 1);
    const sub = await failure(client.subscriptions.get("sub_missing"));
    assert.equal(sub.status, 404);
    assert.equal(sub.type, "not_found");
  });

  test("400 names the parameter at fault", async () => {
    const { client } = await setup();
    const e = await failure(client.track("cus_1", "minutes", -1));
    assert.equal(e.status, 400);
    assert.equal(e.type, "invalid_request");
    assert.equal(e.param, "quantity");
  });

  test("401 for a key Tollgate does not know", async () => {
    const client = new Tollgate({ apiKey: "tg_test_unknown", baseUrl: server.baseUrl });
    const e = await failure(client.check("cus_1", "minutes"));
    assert.equal(e.status, 401);
    assert.equal(e.type, "authentication");
  });
});

test("a batch answers one result per event, in order", async () => {
  const { client } = await setup();
  const { results } = await client.trackBatch([
    { customer: "cus_1", feature: "minutes", quantity: 100, id: "b-1" },
    { customer: "cus_1", feature: "minutes", quantity: 100, id: "b-1" },
    { customer: "cus_1", feature: "minutes", quantity: 250 },
    { customer: "cus_1", feature: "minutes", quantity: 50, timestamp: new Date() },
    { customer: "cus_1", feature: "no_such_feature" },
  ]);
  assert.deepEqual(
    results.map((r) => [r.index, r.status]),
    [
      [0, "recorded"],
      [1, "duplicate"],
      [2, "refused"],
      [3, "recorded"],
      [4, "invalid"],
    ],
  );
  assert.equal(results[0].result.used, 100);
  assert.equal(results[1].result.duplicate, true);
  assert.equal(results[1].result.id, "b-1");
  assert.equal(results[2].error.code, "limit_exceeded");
  assert.match(results[3].result.id, UUID, "an event without an id gets one");
  assert.equal(results[3].result.used, 150);
  assert.equal(results[4].error.code, "feature_not_found");
  const check = await client.check("cus_1", "minutes");
  assert.equal(check.used, 150);
});

test("a customer session's me calls", async () => {
  const { client } = await setup();
  await client.track("cus_1", "minutes", 40);
  const session = await client.sessions.create("cus_1", { ttlSeconds: 600 });
  assert.match(session.token, /^cs_/);
  assert.equal(session.customer, "cus_1");

  const me = new Tollgate({ sessionToken: session.token, baseUrl: server.baseUrl });
  const who = await me.me.get();
  assert.equal(who.id, "cus_1");
  assert.equal(who.email, "ada@example.com");
  const minutes = await me.me.check("minutes", { quantity: 10 });
  assert.equal(minutes.allowed, true);
  assert.equal(minutes.used, 40);
  assert.equal(minutes.remaining, 260);
  const analytics = await me.me.check("analytics");
  assert.equal(analytics.allowed, false);
  assert.equal(analytics.reason, "not_in_plan");
  const ents = await me.me.entitlements();
  assert.equal(ents.data.find((e) => e.feature === "minutes").used, 40);
  const sub = await me.me.subscription();
  assert.equal(sub.plan, "starter");
  const invoices = await me.me.invoices();
  assert.equal(invoices.data.length, 1);
  assert.equal(invoices.data[0].total, "30.00");

  // A session is not a tenant key.
  const e = await failure(me.check("cus_1", "minutes"));
  assert.equal(e.status, 403);
  assert.equal(e.type, "permission");
  // Revoked, it opens nothing.
  await client.sessions.revoke(session.id);
  const revoked = await failure(me.me.entitlements());
  assert.equal(revoked.status, 401);
});

test("a client is given exactly one credential", () => {
  assert.throws(() => new Tollgate({ baseUrl: server.baseUrl }), TypeError);
  assert.throws(() => new Tollgate({ apiKey: "a", sessionToken: "b" }), TypeError);
});
