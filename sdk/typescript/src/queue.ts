/**
 * An unbounded async queue that is also an async iterable: the request side of a bidi stream (the
 * heartbeat helper pushes beats as their time comes), and the assignments iterator. `close()`
 * ends iteration once the queued items are taken; `fail(error)` ends it with that error.
 */
export class AsyncQueue<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private readonly waiting: Array<(result: IteratorResult<T>) => void> = [];
  private readonly failing: Array<(error: unknown) => void> = [];
  private closed = false;
  private error: unknown = undefined;

  get isClosed(): boolean {
    return this.closed;
  }

  /** Adds an item; ignored once the queue is closed. */
  push(item: T): void {
    if (this.closed) return;
    const resolve = this.waiting.shift();
    if (resolve !== undefined) {
      this.failing.shift();
      resolve({ value: item, done: false });
    } else {
      this.items.push(item);
    }
  }

  /** Ends iteration after the queued items. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.failing.length = 0;
    for (const resolve of this.waiting.splice(0)) resolve({ value: undefined, done: true });
  }

  /** Ends iteration with `error` after the queued items. */
  fail(error: unknown): void {
    if (this.closed) return;
    this.error = error;
    this.closed = true;
    this.waiting.length = 0;
    for (const reject of this.failing.splice(0)) reject(error);
  }

  next(): Promise<IteratorResult<T>> {
    if (this.items.length > 0) {
      return Promise.resolve({ value: this.items.shift() as T, done: false });
    }
    if (this.closed) {
      return this.error === undefined
        ? Promise.resolve({ value: undefined, done: true })
        : Promise.reject(this.error);
    }
    return new Promise((resolve, reject) => {
      this.waiting.push(resolve);
      this.failing.push(reject);
    });
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: () => this.next(),
      return: () => {
        this.close();
        return Promise.resolve({ value: undefined, done: true });
      },
      // Connect aborts a request stream by throwing into it: the queue then just ends.
      throw: () => {
        this.close();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}
