import { performance } from 'node:perf_hooks';

/**
 * A wall clock that never steps: the wall-clock time at creation plus the
 * monotonic time since. Kernel timeouts run on monotonic time, so blocks
 * timed on this clock end when their kernel elements do, whatever an NTP
 * step or an operator does to the system clock meanwhile; times shown are
 * off by such a step until the next start.
 */
export function steadyClock(wall: () => number = Date.now, monotonic: () => number = () => performance.now()): () => number {
  const base = wall() - monotonic();
  return () => Math.round(base + monotonic());
}

/**
 * Periodic tasks that never keep the process alive, never throw out of
 * their timer, and stop together.
 */
export class Intervals {
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly stops: Array<() => void> = [];

  constructor(private readonly onError: (err: unknown) => void) {}

  every(ms: number, task: () => unknown): void {
    const t = setInterval(() => {
      try {
        const r = task();
        if (r instanceof Promise) r.catch(this.onError);
      } catch (err) {
        this.onError(err);
      }
    }, ms);
    t.unref();
    this.timers.push(t);
  }

  /** Also stops this (a watcher's stop function) on `clear`. */
  also(stop: () => void): void {
    this.stops.push(stop);
  }

  clear(): void {
    for (const t of this.timers) clearInterval(t);
    this.timers.length = 0;
    for (const stop of this.stops.splice(0)) stop();
  }
}
