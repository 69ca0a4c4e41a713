// The test page: what a frontend holding a customer session renders with @tollgate/react.
// Bundled by esbuild for the test and served from an origin of its own; the session token and
// Tollgate's address come in the page's query string.
import { createRoot } from "react-dom/client";
import { Gate, TollgateProvider, useCheck, useEntitlements } from "@tollgate/react";

function Usage() {
  const { entitlements, error, refresh } = useEntitlements();
  if (error) return <p id="usage-error">{error.code}</p>;
  if (!entitlements) return <p id="usage-loading">Loading…</p>;
  const minutes = entitlements.find((e) => e.feature === "minutes");
  return (
    <div>
      <p id="minutes-used">
        {minutes.used} of {minutes.limit} minutes used
      </p>
      <button id="refresh" onClick={refresh}>
        Refresh
      </button>
    </div>
  );
}

function Remaining() {
  const { check } = useCheck("minutes", { quantity: 10 });
  return <p id="can-interview">{check ? `${check.allowed} ${check.remaining}` : "…"}</p>;
}

const params = new URLSearchParams(location.search);
createRoot(document.getElementById("root")).render(
  <TollgateProvider sessionToken={params.get("session")} baseUrl={params.get("tollgate")}>
    <Gate feature="minutes" fallback={<p id="minutes-fallback">No minutes</p>}>
      <p id="minutes-gated">Start an interview</p>
    </Gate>
    <Gate
      feature="analytics"
      loading={<p id="analytics-loading">…</p>}
      fallback={<p id="analytics-fallback">Upgrade to Premium for advanced analytics</p>}
    >
      <p id="analytics-gated">Advanced analytics</p>
    </Gate>
    <Usage />
    <Remaining />
  </TollgateProvider>,
);
