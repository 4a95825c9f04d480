/**
 * WatchNodes and WatchDeployments as async iterators that survive broken streams.
 *
 * A watch starts with the current state (ADDED events, then SYNCED) or, from a start revision,
 * with every change after it (then SYNCED); live changes follow. From SYNCED on, events come in
 * revision order, so the last revision seen is a resume point: when the stream breaks (the
 * controller restarts, the connection drops) the iterator opens a new one from there, after a
 * jittered backoff, and the caller sees every change exactly once, as if nothing had happened.
 *
 * Before SYNCED the events of a full state (at the start, or after a RESET) carry each
 * resource's own revision, in no order, so they are no resume point. A stream that breaks in
 * the middle of one is reopened from revision 0, and the iterator first yields a RESET of its
 * own (revision 0): the caller forgets what it has, and the full state follows again.
 *
 * Errors that a retry cannot fix (INVALID_ARGUMENT, e.g. a start revision ahead of the store;
 * PERMISSION_DENIED; UNAUTHENTICATED; ...) end the iteration with an Automator67Error.
 */

import type { CallOptions, Client } from "@connectrpc/connect";
import { create, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { Backoff, sleep, type BackoffOptions } from "./backoff.js";
import { Code, toAutomator67Error, type Automator67Error } from "./errors.js";
import {
  DeploymentEventType,
  NodeEventType,
  WatchDeploymentsResponseSchema,
  WatchNodesResponseSchema,
  type DeploymentService,
  type NodeService,
  type WatchDeploymentsResponse,
  type WatchNodesResponse,
} from "./generated.js";

/** Codes after which a watch is reopened; any other ends it. */
export const RETRYABLE_CODES: ReadonlySet<Code> = new Set([
  Code.Unavailable,
  Code.DeadlineExceeded,
  Code.ResourceExhausted,
  Code.Aborted,
  Code.Internal,
]);

export interface WatchOptions {
  /** The revision of the last event already seen (e.g. `watch.revision` saved earlier); the
   * watch starts with every change after it. 0 (default): start with the current state. */
  readonly startRevision?: bigint | number;
  /** Ends the watch: the iteration then simply stops. */
  readonly signal?: AbortSignal;
  /** Delays between reopening attempts. */
  readonly backoff?: BackoffOptions;
  /** Called before each reopening, with the error that broke the stream (undefined if the
   * server ended it cleanly) and the revision the new stream starts from. */
  readonly onReconnect?: (error: Automator67Error | undefined, fromRevision: bigint) => void;
  /** Headers etc. for every stream opened. */
  readonly callOptions?: CallOptions;
}

export interface WatchEvent {
  type: number;
  revision: bigint;
}

/** What a Watch needs of one watch RPC: its SYNCED and RESET values and how to open it. */
export interface WatchKinds<E extends WatchEvent> {
  readonly synced: number;
  readonly reset: number;
  readonly schema: DescMessage;
  readonly open: (startRevision: bigint, options: CallOptions) => AsyncIterable<E>;
}

/** A resumable watch. Iterate it once; `revision` is where it would resume from. */
export class Watch<E extends WatchEvent> implements AsyncIterable<E> {
  private resume: bigint;
  private started = false;

  constructor(
    private readonly kinds: WatchKinds<E>,
    private readonly options: WatchOptions,
  ) {
    this.resume = BigInt(options.startRevision ?? 0);
  }

  /** The revision to resume from: that of SYNCED, then of every event after it. Save it to
   * continue a watch later with `startRevision`. */
  get revision(): bigint {
    return this.resume;
  }

  [Symbol.asyncIterator](): AsyncIterator<E> {
    if (this.started) throw new Error("a Watch can be iterated only once");
    this.started = true;
    return this.run();
  }

  private async *run(): AsyncGenerator<E, void, undefined> {
    const { signal } = this.options;
    const backoff = new Backoff(this.options.backoff);
    while (!signal?.aborted) {
      const stream = new AbortController();
      const stop = (): void => stream.abort();
      signal?.addEventListener("abort", stop, { once: true });
      // Events of a full state (unordered) this stream has yielded since its last SYNCED.
      let inState = this.resume === 0n;
      let yieldedState = false;
      let failure: Automator67Error | undefined;
      try {
        const options = { ...this.options.callOptions, signal: stream.signal };
        for await (const event of this.kinds.open(this.resume, options)) {
          backoff.reset();
          if (event.type === this.kinds.reset) {
            inState = true;
          } else if (event.type === this.kinds.synced) {
            inState = false;
            yieldedState = false;
            this.resume = event.revision;
          } else if (!inState && event.revision > this.resume) {
            this.resume = event.revision;
          }
          if (inState) yieldedState = true;
          yield event;
        }
      } catch (error) {
        if (signal?.aborted) return;
        failure = toAutomator67Error(error);
        if (!RETRYABLE_CODES.has(failure.code)) throw failure;
      } finally {
        signal?.removeEventListener("abort", stop);
        stream.abort();
      }
      if (yieldedState) {
        this.resume = 0n;
        yield create(this.kinds.schema, { type: this.kinds.reset, revision: 0n }) as unknown as E;
      }
      this.options.onReconnect?.(failure, this.resume);
      await sleep(backoff.nextDelayMs(), signal);
    }
  }
}

export function nodeWatch(
  client: Client<typeof NodeService>,
  options: WatchOptions,
): Watch<WatchNodesResponse> {
  return new Watch<MessageShape<typeof WatchNodesResponseSchema>>(
    {
      synced: NodeEventType.SYNCED,
      reset: NodeEventType.RESET,
      schema: WatchNodesResponseSchema,
      open: (startRevision, callOptions) => client.watchNodes({ startRevision }, callOptions),
    },
    options,
  );
}

export function deploymentWatch(
  client: Client<typeof DeploymentService>,
  options: WatchOptions,
): Watch<WatchDeploymentsResponse> {
  return new Watch<MessageShape<typeof WatchDeploymentsResponseSchema>>(
    {
      synced: DeploymentEventType.SYNCED,
      reset: DeploymentEventType.RESET,
      schema: WatchDeploymentsResponseSchema,
      open: (startRevision, callOptions) => client.watchDeployments({ startRevision }, callOptions),
    },
    options,
  );
}
