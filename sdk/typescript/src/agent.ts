/**
 * A heartbeat-stream helper, so that a node agent can be written in TypeScript.
 *
 * `AgentSession.run()` holds the node's AgentService/Heartbeat stream until `stop()`: it sends
 * `hello`, then a beat on every slot of a drift-free schedule at the interval the controller's
 * SessionStart gave (a stalled process skips missed slots, it never bursts), each carrying the
 * load and replica reports the caller's functions return. It hands acks, and every Assignments
 * message (the full set of replicas the controller wants on this node, level-triggered), to the
 * caller's callbacks, and `assignments()` iterates them too.
 *
 * It reconnects as the controller's own agent does (`controller/agent/session.py`): at once
 * (with up to `backoff.initialMs` of jitter) after a Reconnect message; after a full-jitter
 * backoff when the stream breaks, or when `maxUnackedBeats` beats in a row go unacked (a
 * connection that swallows data without failing). It gives up, and `run()` rejects with the
 * Automator67Error, only on what a retry cannot fix: NOT_FOUND (the node was deleted),
 * UNAUTHENTICATED, PERMISSION_DENIED (not this node's token), INVALID_ARGUMENT.
 *
 * Use the node's own token (RegisterNode's `agent_token`) on the client it runs on.
 */

import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Duration } from "@bufbuild/protobuf/wkt";
import { Backoff, sleep, type BackoffOptions } from "./backoff.js";
import { AsyncQueue } from "./queue.js";
import type { Automator67Client } from "./client.js";
import { Code, toAutomator67Error, type Automator67Error } from "./errors.js";
import {
  type Assignments,
  type BeatAck,
  type HeartbeatRequestSchema,
  type NodeLoadSchema,
  type ReplicaReportSchema,
  type SessionStart,
} from "./generated.js";

/** Codes that end `run()`: a new stream would fail the same way. */
export const FATAL_CODES: ReadonlySet<Code> = new Set([
  Code.NotFound,
  Code.Unauthenticated,
  Code.PermissionDenied,
  Code.InvalidArgument,
]);

const MIN_INTERVAL_MS = 50; // the controller's own floor
const CLOSE_TIMEOUT_MS = 5_000;

export type NodeLoadInit = MessageInitShape<typeof NodeLoadSchema>;
export type ReplicaReportInit = MessageInitShape<typeof ReplicaReportSchema>;

/** Why a stream ended, as `onDisconnect` is told. */
export interface Disconnect {
  /** "reconnect": the controller asked; "broken": the stream failed or went silent. */
  readonly kind: "reconnect" | "broken";
  readonly reason: string;
  /** The failure, when the stream failed with a status. */
  readonly error?: Automator67Error;
  /** How long the helper waits before the next stream. */
  readonly retryInMs: number;
}

export interface AgentOptions {
  /** The node this agent runs on (RegisterNode's `node.id`). */
  readonly nodeId: string;
  /** The agent's version, e.g. "0.1.0". */
  readonly agentVersion?: string;
  /** The workload drivers it can run, e.g. ["exec"]. */
  readonly drivers?: readonly string[];
  /** The node's load, sent with every beat. */
  readonly load?: () => NodeLoadInit | undefined;
  /** Every replica the agent runs and its state, sent with every beat. */
  readonly reports?: () => readonly ReplicaReportInit[];
  /** A stream was accepted. */
  readonly onSession?: (session: SessionStart) => void;
  /** A beat was acknowledged. */
  readonly onAck?: (ack: BeatAck) => void;
  /** The controller's desired replicas for this node; replaces the previous set. */
  readonly onAssignments?: (assignments: Assignments) => void;
  /** A stream ended; another follows after `retryInMs`. */
  readonly onDisconnect?: (disconnect: Disconnect) => void;
  /** Delays between streams after failures. */
  readonly backoff?: BackoffOptions;
  /** A stream with this many beats in a row unacked is given up. Default 3. */
  readonly maxUnackedBeats?: number;
  /** Stops the agent, as `stop()` does. */
  readonly signal?: AbortSignal;
}

type StreamEnd =
  | { kind: "stopped" }
  | { kind: "reconnect"; reason: string }
  | { kind: "broken"; reason: string; error?: Automator67Error }
  | { kind: "fatal"; error: Automator67Error };

/** One node's heartbeat stream, kept open until `stop()`. */
export class AgentSession {
  private readonly stopping = new AbortController();
  private readonly subscribers = new Set<Latest<Assignments>>();
  private running = false;
  private backoff = new Backoff();
  private sessionIdValue = "";
  private intervalMsValue = 0;

  constructor(
    private readonly client: Automator67Client,
    private readonly options: AgentOptions,
  ) {
    options.signal?.addEventListener("abort", () => this.stop(), { once: true });
    if (options.signal?.aborted) this.stop();
  }

  /** The id of the current stream ("" before the first SessionStart). */
  get sessionId(): string {
    return this.sessionIdValue;
  }

  /** The beat interval of the current stream, ms. */
  get intervalMs(): number {
    return this.intervalMsValue;
  }

  /** Ends `run()`: the open stream is half-closed, so the controller sees a clean end. */
  stop(): void {
    this.stopping.abort();
  }

  /**
   * The Assignments messages as they arrive, from the next one on. A slow reader gets the
   * latest set only (each replaces the one before). Ends when `run()` ends.
   */
  assignments(): AsyncIterable<Assignments> {
    const latest = new Latest<Assignments>();
    this.subscribers.add(latest);
    return latest;
  }

  /** Holds the stream until `stop()` (resolves) or a fatal error (rejects with it). */
  async run(): Promise<void> {
    if (this.running) throw new Error("AgentSession.run() is already running");
    this.running = true;
    const backoff = (this.backoff = new Backoff(this.options.backoff));
    try {
      while (!this.stopping.signal.aborted) {
        const end = await this.stream();
        if (end.kind === "stopped") return;
        if (end.kind === "fatal") throw end.error;
        const retryInMs =
          end.kind === "reconnect" ? Math.random() * backoff.initialMs : backoff.nextDelayMs();
        this.options.onDisconnect?.({ ...end, retryInMs });
        await sleep(retryInMs, this.stopping.signal);
      }
    } finally {
      this.running = false;
      for (const latest of this.subscribers) latest.close();
      this.subscribers.clear();
    }
  }

  /** One stream, from hello to its end. */
  private async stream(): Promise<StreamEnd> {
    const requests = new AsyncQueue<MessageInitShape<typeof HeartbeatRequestSchema>>();
    const call = new AbortController();
    const maxUnacked = BigInt(this.options.maxUnackedBeats ?? 3);
    let beatTimer: NodeJS.Timeout | undefined;
    let closeTimer: NodeJS.Timeout | undefined;
    let sequence = 0n;
    let lastAcked = 0n;
    let silent = false;
    let reconnect: string | undefined;

    // Half-close (the controller ends the stream with OK); cancel if it does not in time.
    const halfClose = (): void => {
      clearTimeout(beatTimer);
      requests.close();
      closeTimer ??= setTimeout(() => call.abort(), CLOSE_TIMEOUT_MS);
    };
    const beat = (): void => {
      if (sequence - lastAcked >= maxUnacked) {
        silent = true;
        call.abort();
        return;
      }
      sequence += 1n;
      const load = this.options.load?.();
      requests.push({
        kind: {
          case: "beat",
          value: {
            sequence,
            replicas: [...(this.options.reports?.() ?? [])],
            ...(load && { load }),
          },
        },
      });
    };
    const startBeats = (intervalMs: number): void => {
      const start = performance.now();
      let slot = 0;
      const next = (): void => {
        if (requests.isClosed) return;
        beat();
        // The latest slot already due, or the next one: no burst after a stall.
        slot = Math.max(slot + 1, Math.floor((performance.now() - start) / intervalMs) + 1);
        beatTimer = setTimeout(next, Math.max(0, start + slot * intervalMs - performance.now()));
      };
      beatTimer = setTimeout(next, intervalMs);
    };

    this.stopping.signal.addEventListener("abort", halfClose);
    if (this.stopping.signal.aborted) return { kind: "stopped" };
    requests.push({
      kind: {
        case: "hello",
        value: {
          nodeId: this.options.nodeId,
          agentVersion: this.options.agentVersion ?? "",
          drivers: [...(this.options.drivers ?? [])],
        },
      },
    });
    try {
      for await (const response of this.client.agent.heartbeat(requests, { signal: call.signal })) {
        const kind = response.kind;
        switch (kind.case) {
          case "session":
            this.sessionIdValue = kind.value.sessionId;
            this.intervalMsValue = Math.max(
              MIN_INTERVAL_MS,
              durationMs(kind.value.heartbeatInterval),
            );
            this.options.onSession?.(kind.value);
            startBeats(this.intervalMsValue);
            break;
          case "ack":
            if (kind.value.sequence > lastAcked) lastAcked = kind.value.sequence;
            this.backoff.reset(); // a stream that works: its failure starts the backoff over
            this.options.onAck?.(kind.value);
            break;
          case "reconnect":
            reconnect = kind.value.reason;
            halfClose();
            break;
          case "assignments":
            this.options.onAssignments?.(kind.value);
            for (const latest of this.subscribers) latest.set(kind.value);
            break;
          default: // a kind added after this SDK: ignore it, as the contract allows
            break;
        }
      }
      if (this.stopping.signal.aborted) return { kind: "stopped" };
      if (reconnect !== undefined) return { kind: "reconnect", reason: reconnect };
      return { kind: "broken", reason: "the controller ended the stream" };
    } catch (caught) {
      if (this.stopping.signal.aborted) return { kind: "stopped" };
      if (silent) return { kind: "broken", reason: `no ack for ${maxUnacked} beats` };
      if (reconnect !== undefined) return { kind: "reconnect", reason: reconnect };
      const error = toAutomator67Error(caught);
      if (FATAL_CODES.has(error.code)) return { kind: "fatal", error };
      return { kind: "broken", reason: error.message, error };
    } finally {
      this.stopping.signal.removeEventListener("abort", halfClose);
      clearTimeout(beatTimer);
      clearTimeout(closeTimer);
      requests.close();
      call.abort();
    }
  }
}

function durationMs(duration: Duration | undefined): number {
  return duration === undefined ? 0 : Number(duration.seconds) * 1000 + duration.nanos / 1e6;
}

/** An async iterable of the latest value: values set while nobody waits replace each other. */
class Latest<T> implements AsyncIterable<T> {
  private value: { item: T } | undefined;
  private waiter: ((result: IteratorResult<T>) => void) | undefined;
  private closed = false;

  set(item: T): void {
    if (this.closed) return;
    const waiter = this.waiter;
    this.waiter = undefined;
    if (waiter !== undefined) waiter({ value: item, done: false });
    else this.value = { item };
  }

  close(): void {
    this.closed = true;
    this.waiter?.({ value: undefined, done: true });
    this.waiter = undefined;
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: () => {
        if (this.value !== undefined) {
          const { item } = this.value;
          this.value = undefined;
          return Promise.resolve({ value: item, done: false });
        }
        if (this.closed) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => {
          this.waiter = resolve;
        });
      },
      return: () => {
        this.close();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}
