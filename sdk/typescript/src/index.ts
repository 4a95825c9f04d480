/**
 * The Automator67 controller's TypeScript SDK for Node.js.
 *
 *     const a67 = new Automator67Client({ address: "127.0.0.1:50051", token });
 *     const { node, agentToken } = await a67.nodes.registerNode({ node: {...} });
 *     for await (const n of a67.listNodes({ filter: "status = READY" })) console.log(n.id);
 *
 * The generated messages, enums and service descriptors are exported as well; build messages
 * with `create(NodeSchema, {...})` from @bufbuild/protobuf, or pass plain objects to calls.
 */
export * from "./generated.js";
export { AgentSession, FATAL_CODES } from "./agent.js";
export type { AgentOptions, Disconnect, NodeLoadInit, ReplicaReportInit } from "./agent.js";
export type { BackoffOptions } from "./backoff.js";
export { Automator67Client, DEFAULT_TIMEOUT_MS } from "./client.js";
export type { ClientOptions, TlsOptions } from "./client.js";
export { Automator67Error, Code, codeName, toAutomator67Error } from "./errors.js";
export type { FieldViolation } from "./errors.js";
export { listAll, pages } from "./paging.js";
export type { ListRequest } from "./paging.js";
export { RETRYABLE_CODES, Watch } from "./watch.js";
export type { WatchEvent, WatchKinds, WatchOptions } from "./watch.js";
