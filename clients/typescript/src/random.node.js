// A random (version 4) UUID on Node (every version the package supports has it here).
export { randomUUID as randomId } from "node:crypto";
