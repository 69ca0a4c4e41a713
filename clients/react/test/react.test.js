// @tollgate/react in a real headless Chromium: test/page.jsx, bundled by esbuild and served
// from an origin of its own, holds a customer session against a real Tollgate (started as
// @tollgate/client's tests start it) and calls it across origins (SPEC §9, Browsers).

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { Tollgate } from "@tollgate/client";
import { build } from "esbuild";
import puppeteer from "puppeteer-core";

import { startTollgate, tenant } from "../../typescript/test/server.js";

const here = dirname(fileURLToPath(import.meta.url));

let server;
let page;
let browser;
let profile;
let site;

/** The page's bundle, built once: React, the components and the client, for a browser. */
async function bundle() {
  const out = await build({
    entryPoints: [join(here, "page.jsx")],
    bundle: true,
    write: false,
    format: "esm",
    platform: "browser",
    jsx: "automatic",
    define: { "process.env.NODE_ENV": '"production"' },
    logLevel: "warning",
  });
  return out.outputFiles[0].text;
}

/** Serves the page and its bundle on a port of its own (another origin than Tollgate's). */
async function servePage(js) {
  const html =
    '<!doctype html><html><head><meta charset="utf-8"><title>Interviews</title></head>' +
    '<body><div id="root"></div><script type="module" src="/page.js"></script></body></html>';
  const http = createServer((req, res) => {
    if (req.url.startsWith("/page.js")) {
      res.writeHead(200, { "content-type": "text/javascript" });
      res.end(js);
    } else {
      res.writeHead(200, { "content-type": "text/html" });
      res.end(html);
    }
  });
  await new Promise((resolve) => http.listen(0, "127.0.0.1", resolve));
  return { origin: `http://127.0.0.1:${http.address().port}`, close: () => http.close() };
}

before(async () => {
  const [started, js] = await Promise.all([startTollgate(), bundle()]);
  server = started;
  site = await servePage(js);
  profile = mkdtempSync(join(tmpdir(), "tollgate-react-chromium-"));
  browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    userDataDir: profile,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-dev-shm-usage",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  page = await browser.newPage();
});

after(async () => {
  await browser?.close();
  site?.close();
  await server?.stop();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

/** A tenant whose `cors_origins` admit the page, a session for `cus_1`, and the page open. */
async function openPage() {
  const t = await tenant(server);
  await t.call("PATCH", "/v1/tenant", { cors_origins: [site.origin] });
  const client = new Tollgate({ apiKey: t.key, baseUrl: server.baseUrl });
  const session = await client.sessions.create("cus_1");
  const query = new URLSearchParams({ session: session.token, tollgate: server.baseUrl });
  await page.goto(`${site.origin}/?${query}`);
  return { ...t, client };
}

/** The text of `selector` once the page shows `expected` there (bounded by the timeout). */
async function shows(selector, expected) {
  try {
    await page.waitForFunction(
      (s, e) => document.querySelector(s)?.textContent === e,
      { timeout: 15_000 },
      selector,
      expected,
    );
  } catch {
    const body = await page.evaluate(() => document.body.innerHTML);
    assert.fail(`${selector} never showed ${JSON.stringify(expected)}; the page:\n${body}`);
  }
}

const present = (selector) => page.evaluate((s) => document.querySelector(s) !== null, selector);

test("<Gate> shows the gated content for an allowed feature and the fallback for one not in the plan", async () => {
  const { client } = await openPage();
  await shows("#minutes-gated", "Start an interview");
  await shows("#analytics-fallback", "Upgrade to Premium for advanced analytics");
  assert.equal(await present("#analytics-gated"), false);
  assert.equal(await present("#minutes-fallback"), false);
  assert.equal(await present("#analytics-loading"), false);

  // On Premium, the same page (refreshed by the hooks) shows the analytics.
  const sub = await client.customers.subscription("cus_1");
  await client.subscriptions.change(sub.id, { plan: "premium" });
  await page.click("#refresh");
  await shows("#analytics-gated", "Advanced analytics");
  assert.equal(await present("#analytics-fallback"), false);
});

test("after usage is recorded and the hooks refresh, the usage shown changes", async () => {
  const { client } = await openPage();
  await shows("#minutes-used", "0 of 300 minutes used");
  await shows("#can-interview", "true 300");

  await client.track("cus_1", "minutes", 42.5);
  // Nothing changes until the page asks again.
  assert.equal(await page.$eval("#minutes-used", (e) => e.textContent), "0 of 300 minutes used");
  await page.click("#refresh");
  await shows("#minutes-used", "42.5 of 300 minutes used");
  await shows("#can-interview", "true 257.5");
});
