/**
 * Reconnect delays for watches and heartbeat streams: exponential backoff with full jitter, as the
 * controller's own agent does (`controller/agent/backoff.py`). The n-th retry waits
 * `uniform(0, min(maxMs, initialMs * 2**n))`, so clients that lost their controller at the same
 * instant spread over the whole window instead of returning in lockstep.
 */

/** Reconnect delays; both have defaults. */
export interface BackoffOptions {
  /** The ceiling of the first retry's delay, ms. Default 250. */
  readonly initialMs?: number;
  /** The largest ceiling, ms. Default 10000. */
  readonly maxMs?: number;
}

export class Backoff {
  readonly initialMs: number;
  readonly maxMs: number;
  private attempt = 0;

  constructor(
    options: BackoffOptions = {},
    private readonly random: () => number = Math.random,
  ) {
    this.initialMs = options.initialMs ?? 250;
    this.maxMs = options.maxMs ?? 10_000;
    if (!(this.initialMs > 0 && this.initialMs <= this.maxMs)) {
      throw new RangeError(`need 0 < initialMs <= maxMs, got ${this.initialMs} and ${this.maxMs}`);
    }
  }

  /** Failures since the last reset. */
  get failures(): number {
    return this.attempt;
  }

  /** The delay before the next try; counts a failure. */
  nextDelayMs(): number {
    const ceiling = Math.min(this.maxMs, this.initialMs * 2 ** Math.min(this.attempt, 64));
    this.attempt += 1;
    return this.random() * ceiling;
  }

  /** After a success: the next failure waits the shortest delay again. */
  reset(): void {
    this.attempt = 0;
  }
}

/** Resolves after `ms`, or at once (false) when `signal` aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve(false);
    const onAbort = (): void => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve(true);
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
