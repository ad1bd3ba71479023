import { performance } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/** Heap growth since the last full collection worth one more: the garbage of a burst, or what it keeps. */
const GROWTH_BYTES = 32 * 1024 * 1024;
/** Busier than this since the last look (event loop utilisation), and nothing is done. */
const BUSY = 0.25;

export interface SettlerOptions {
  /** How often the heap is looked at. @default 10 s */
  readonly everyMs?: number;
  /** A full collection; null when it cannot be had. @default V8's */
  readonly gc?: (() => void) | null;
  /** The heap in use, in bytes. @default process.memoryUsage().heapUsed */
  readonly heapUsed?: () => number;
  /** How busy the event loop was since the last call, 0 to 1. @default performance.eventLoopUtilization */
  readonly busy?: () => number;
  /** Told of each collection: how long it held the event loop, the heap before and after. */
  readonly onCollected?: (c: { ms: number; beforeMB: number; afterMB: number }) => void;
}

/**
 * Gives memory back to the system after a burst. A storm or an import of
 * 100,000 blocks leaves the heap more than twice the size of what it keeps
 * (the batches' text, log lines, firewall scripts), and V8 holds on to that
 * memory for as long as nothing forces a full collection — on a quiet
 * server, indefinitely. Every 10 s, when the heap has grown by 32 MB since
 * the last full collection and the event loop was mostly idle, one full
 * collection runs (tens of ms at 100,000 blocks); never during an attack's
 * busy seconds. At 1,000,000 blocks one collection takes a few hundred ms,
 * once after a burst; the memory it gives back is several hundred MB.
 */
export class MemorySettler {
  private readonly timer: NodeJS.Timeout;
  private readonly gc: (() => void) | null;
  private readonly heapUsed: () => number;
  private readonly busy: () => number;
  private readonly onCollected: SettlerOptions['onCollected'];
  /** The heap in use after the last full collection. */
  private settled = 0;
  /** Full collections run. */
  collections = 0;

  constructor(o: SettlerOptions = {}) {
    this.gc = o.gc === undefined ? exposeGc() : o.gc;
    this.heapUsed = o.heapUsed ?? (() => process.memoryUsage().heapUsed);
    this.busy = o.busy ?? loopBusy();
    this.onCollected = o.onCollected;
    this.timer = setInterval(() => this.look(), o.everyMs ?? 10_000);
    this.timer.unref();
  }

  /** One look: a full collection when the heap has grown and the loop is quiet. */
  look(): void {
    const busy = this.busy();
    const heap = this.heapUsed();
    if (this.gc === null || busy > BUSY || heap - this.settled < GROWTH_BYTES) return;
    const t0 = performance.now();
    this.gc();
    this.settled = this.heapUsed();
    this.collections++;
    this.onCollected?.({ ms: Math.round(performance.now() - t0), beforeMB: Math.round(heap / 1048576), afterMB: Math.round(this.settled / 1048576) });
  }

  close(): void {
    clearInterval(this.timer);
  }
}

/** The event loop's utilisation since the previous call. */
function loopBusy(): () => number {
  let last = performance.eventLoopUtilization();
  return () => {
    const elu = performance.eventLoopUtilization(last);
    last = performance.eventLoopUtilization();
    return elu.utilization;
  };
}

/** V8's full collection, which Node hides unless asked (the flag, then a fresh context that has it). */
function exposeGc(): (() => void) | null {
  try {
    setFlagsFromString('--expose-gc');
    const gc: unknown = runInNewContext('gc');
    return typeof gc === 'function' ? gc as () => void : null;
  } catch {
    return null;
  }
}
