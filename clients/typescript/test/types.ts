// Compiled by `npm run typecheck` (never run): the declared calls fit the generated schema,
// and misuse is a type error.
import { Tollgate, TollgateError, type CheckResult, type Schemas } from "@tollgate/client";

export async function usage(client: Tollgate): Promise<void> {
  const check: CheckResult = await client.check("cus_1", "minutes_per_month", { quantity: 10 });
  const allowed: boolean = check.allowed;
  const tracked = await client.track("cus_1", "minutes_per_month", 2.5, { member: "ann" });
  const used: number = tracked.used;
  const batch = await client.trackBatch([{ customer: "cus_1", feature: "api_calls" }]);
  const status: Schemas["BatchStatus"] = batch.results[0].status;
  const ents = await client.entitlements("cus_1");
  ents.data.map((e) => e.feature);
  const sub = await client.subscriptions.create({ customer: "cus_1", plan: "pro" });
  const periodEnd: string | null | undefined = sub.current_period_end;
  const session = await client.sessions.create("cus_1", { ttlSeconds: 600 });
  const me = new Tollgate({ sessionToken: session.token, baseUrl: "https://billing.example.com" });
  const mine = await me.me.check("minutes_per_month");
  const pdf: Uint8Array = await client.invoices.pdf("in_1");
  void [allowed, used, status, periodEnd, mine, pdf];

  // @ts-expect-error a quantity is a number
  await client.check("cus_1", "f", { quantity: "10" });
  // @ts-expect-error an unknown field of a subscription body
  await client.subscriptions.create({ customer: "cus_1", plan: "pro", colour: "red" });

  try {
    await client.track("cus_1", "f");
  } catch (e) {
    if (e instanceof TollgateError && e.code === "limit_exceeded") {
      const s: number | null = e.status;
      void s;
    }
  }
}
