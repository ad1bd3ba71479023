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
