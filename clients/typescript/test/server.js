// A real Tollgate for the tests, as the Rust tests start one: the binary built by `cargo build`
// (or TOLLGATE_BIN) with its embedded throwaway PostgreSQL in a temporary directory, listening
// on a free port. Nothing here is a mock of Tollgate.

import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { chmodSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
const ADMIN_TOKEN = `admin_${randomUUID()}`;

/** Starts Tollgate; `stop()` ends it (and its database) and removes its files. */
export async function startTollgate() {
  const bin = process.env.TOLLGATE_BIN ?? join(repo, "target/debug/tollgate");
  if (!existsSync(bin)) {
    throw new Error(`no Tollgate binary at ${bin}: run \`cargo build\` first (or set TOLLGATE_BIN)`);
  }
  const dir = mkdtempSync(join(tmpdir(), "tollgate-js-"));
  // As root the embedded database runs as `postgres`, which must reach its directory.
  chmodSync(dir, 0o755);
  const child = spawn(bin, ["serve"], {
    cwd: dir,
    env: {
      ...process.env,
      DATABASE_URL: "",
      TOLLGATE_DATA_DIR: join(dir, "data"),
      TOLLGATE_LISTEN: "127.0.0.1:0",
      TOLLGATE_ADMIN_TOKEN: ADMIN_TOKEN,
      TOLLGATE_LOG: process.env.TOLLGATE_LOG ?? "warn",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (chunk) => {
    stderr += chunk;
  });
  const exited = new Promise((resolveExit) => child.once("exit", resolveExit));
  const baseUrl = await new Promise((resolveUrl, reject) => {
    const lines = createInterface({ input: child.stdout });
    lines.on("line", (line) => {
      const m = /Tollgate listening on (http:\/\/\S+)/.exec(line);
      if (m) resolveUrl(m[1]);
    });
    exited.then((code) => reject(new Error(`tollgate exited (${code}) before listening:\n${stderr}`)));
  });
  return {
    baseUrl,
    adminToken: ADMIN_TOKEN,
    async stop() {
      child.kill("SIGTERM");
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A raw JSON call, for setting a tenant up with what the client does not wrap. */
export async function api(baseUrl, token, method, path, body) {
  const res = await fetch(baseUrl + path, {
    method,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return text === "" ? null : JSON.parse(text);
}

/**
 * A new tenant with a `minutes` feature (300 a month on the default `starter` plan), an
 * `analytics` boolean feature only `premium` has, and one customer `cus_1` on `starter`.
 */
export async function tenant(server) {
  const { api_key: key } = await api(server.baseUrl, server.adminToken, "POST", "/admin/v1/tenants", {
    name: "Interview coach",
    mode: "test",
  });
  const call = (method, path, body) => api(server.baseUrl, key, method, path, body);
  await call("POST", "/v1/features", { key: "minutes", name: "Minutes", type: "metered" });
  await call("POST", "/v1/features", { key: "analytics", name: "Advanced analytics", type: "boolean" });
  await call("POST", "/v1/plans", {
    key: "starter",
    name: "Starter",
    default: true,
    prices: [{ interval: "month", amount: "30.00", currency: "usd" }],
    entitlements: [{ feature: "minutes", limit: 300, reset: "month" }],
  });
  await call("POST", "/v1/plans", {
    key: "premium",
    name: "Premium",
    prices: [{ interval: "month", amount: "99.00", currency: "usd" }],
    entitlements: [
      { feature: "minutes", limit: 2500, reset: "month" },
      { feature: "analytics", enabled: true },
    ],
  });
  await call("PUT", "/v1/customers/cus_1", { email: "ada@example.com" });
  return { key, call };
}
