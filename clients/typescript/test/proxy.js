// An HTTP proxy in front of the real Tollgate that can misbehave on chosen requests, as a
// network or a load balancer does: drop the answer after Tollgate did the work, answer 503
// itself, or never answer. It records what reached it.

import { createServer } from "node:http";

/**
 * `plan(n, request)` says what to do with the n-th request (from 1): `forward`, `drop` (forward,
 * then close the connection instead of answering), `unavailable` (a 503 in Tollgate's error
 * shape, nothing forwarded), `gateway` (a load balancer's 502 page) or `hang` (no answer).
 */
export async function startProxy(target, plan) {
  const seen = [];
  const server = createServer(async (req, res) => {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const body = Buffer.concat(chunks).toString();
    seen.push({ method: req.method, url: req.url, headers: req.headers, body });
    const action = plan(seen.length, req);
    if (action === "hang") return;
    if (action === "gateway") {
      res.writeHead(502, { "content-type": "text/html" });
      res.end("<html><body><h1>502 Bad Gateway</h1></body></html>");
      return;
    }
    if (action === "unavailable") {
      res.writeHead(503, { "content-type": "application/json", "retry-after": "0" });
      res.end(
        JSON.stringify({
          error: { type: "unavailable", code: "database_unavailable", message: "try again" },
        }),
      );
      return;
    }
    const headers = { ...req.headers };
    delete headers.host;
    delete headers.connection;
    delete headers["content-length"];
    const upstream = await fetch(target + req.url, {
      method: req.method,
      headers,
      body: body === "" ? undefined : body,
    });
    const text = await upstream.text();
    if (action === "drop") {
      req.socket.destroy();
      return;
    }
    res.writeHead(upstream.status, { "content-type": upstream.headers.get("content-type") ?? "" });
    res.end(text);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
