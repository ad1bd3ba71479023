import { contains } from '../../src/address.js';
import type { Backend } from '../../src/enforce/backend.js';
import { Blocker } from '../../src/enforce/blocker.js';
import type { Runner } from '../../src/run-command.js';
import { createLogger } from '../../src/log.js';
import { Metrics } from '../../src/metrics.js';
import { net } from './net.js';

/** A Blocker over `backend` as the daemon makes one, quiet and quick to batch; loopback is allow-listed. */
export function makeBlocker(
  backend: Backend,
  options: { allow?: readonly string[]; reconciledBlockMs?: number } = {},
): { blocker: Blocker; metrics: Metrics } {
  const allowed = (options.allow ?? ['127.0.0.0/8', '::1']).map(net);
  const metrics = new Metrics({ activeBlocks: () => 0, trackedClients: () => 0 });
  const blocker = new Blocker({
    backend,
    isAllowed: (n) => allowed.some((a) => contains(a, n) || contains(n, a)),
    log: createLogger('silent'),
    metrics,
    batchDelayMs: 5,
    ...(options.reconciledBlockMs === undefined ? {} : { reconciledBlockMs: options.reconciledBlockMs }),
  });
  return { blocker, metrics };
}

/**
 * One block of each kind a backend keeps apart, settled in the kernel: an
 * IPv4 address (rule), an IPv4 network (manual, for `netMs`), an IPv6 /64 (rule).
 */
export async function blockOfEachKind(blocker: Blocker, netMs = 600_000): Promise<void> {
  blocker.block({ net: net('198.51.100.7'), durationMs: 600_000, source: 'rule' });
  blocker.block({ net: net('203.0.113.0/24'), durationMs: netMs, source: 'manual' });
  blocker.block({ net: net('2001:db8:1:2::/64'), durationMs: 600_000, source: 'rule' });
  await blocker.settle();
}

/** Wraps a runner to count the processes started, per tool and in all; long-lived ones (`start`) are counted apart, as `starts`. */
export function counting(inner: Runner): { runner: Runner; calls: (tool?: string) => number; starts: () => number; reset: () => void } {
  const n = new Map<string, number>();
  let started = 0;
  const run = (file: string, args: readonly string[], input?: string): ReturnType<Runner> => {
    n.set(file, (n.get(file) ?? 0) + 1);
    return inner(file, args, input);
  };
  const start = inner.start;
  return {
    runner: start ? Object.assign(run, { start: (...a: Parameters<typeof start>) => (started++, start(...a)) }) : run,
    calls: (tool) => (tool === undefined ? [...n.values()].reduce((a, b) => a + b, 0) : n.get(tool) ?? 0),
    starts: () => started,
    reset: () => {
      n.clear();
      started = 0;
    },
  };
}
