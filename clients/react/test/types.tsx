// Compiled by `npm run typecheck` (never run): the components' declared props and hooks.
import { Gate, TollgateProvider, useCheck, useEntitlements, useTollgate } from "@tollgate/react";

export function Dashboard() {
  const { entitlements, loading, refresh } = useEntitlements();
  const { allowed, check } = useCheck("minutes_per_month", { quantity: 10 });
  const { client } = useTollgate();
  const used: number | null | undefined = entitlements?.[0]?.used;
  void client.me.usage();
  return (
    <div>
      {loading ? "…" : used}
      {allowed ? check?.remaining : null}
      <button onClick={refresh}>Refresh</button>
    </div>
  );
}

export function App({ token }: { token: string }) {
  return (
    <TollgateProvider sessionToken={token} baseUrl="https://billing.example.com">
      <Gate feature="advanced_analytics" fallback={<a href="/pricing">Upgrade</a>}>
        <Dashboard />
      </Gate>
      {/* @ts-expect-error a Gate names its feature */}
      <Gate fallback={null} />
    </TollgateProvider>
  );
}
