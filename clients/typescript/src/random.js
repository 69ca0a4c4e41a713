// A random (version 4) UUID in browsers and other runtimes with Web Crypto; Node takes
// random.node.js instead (package.json's "imports"). `randomUUID` needs a secure context, so a
// page served over plain HTTP builds the UUID from `getRandomValues`.
export function randomId() {
  const c = globalThis.crypto;
  if (typeof c.randomUUID === "function") return c.randomUUID();
  const b = c.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
