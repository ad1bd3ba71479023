import { performance } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/** Heap growth since the last full collection worth one more (the garbage of a burst, or what it keeps): this, or an eighth of what that one kept. */
const GROWTH_BYTES = 16 * 1024 * 1024;
/** Busier than this since the last look (event loop utilisation), and nothing is done. */
const BUSY = 0.25;
/** Idle: no more than this since the last look, when a compacting collection may hold the loop for a while. */
const IDLE = 0.05;
/** Room the heap keeps beyond what is live after a collection that is worth compacting away: this, or a quarter of what is live. */
const SLACK_BYTES = 16 * 1024 * 1024;

export interface SettlerOptions {
  /** How often the heap is looked at. @default 5 s */
  readonly everyMs?: number;
  /** A count of decisions (blocks and unblocks): a look after it moved does nothing, so no collection lands among them. */
  readonly decisions?: () => number;
  /** A full collection, compacting the heap when asked; null when it cannot be had. @default V8's */
  readonly gc?: ((compact: boolean) => void) | null;
  /** The heap in use and the heap held, in bytes. @default process.memoryUsage() */
  readonly heap?: () => { used: number; total: number };
  /** How busy the event loop was since the last call, 0 to 1. @default performance.eventLoopUtilization */
  readonly busy?: () => number;
  /** Told of each collection: how long it held the event loop, the heap in use before and after, and held after. */
  readonly onCollected?: (c: { ms: number; compacted: boolean; beforeMB: number; afterMB: number; heldMB: number }) => void;
}

/**
 * Gives memory back to the system after a burst. A storm or an import of
 * 100,000 blocks leaves the heap more than twice the size of what it keeps
 * (the batches' text, log lines, firewall scripts), and V8 holds on to that
 * memory for as long as nothing forces a full collection — on a quiet
 * server, indefinitely. Every 5 s, when the heap in use has grown by 16 MB
 * (or an eighth) since the last full collection, the event loop was mostly
 * idle and no block was made or lifted (a collection holds the loop, and a
 * new offender's block with it), one full collection runs (tens of ms at
 * 100,000 blocks); never during an attack's busy seconds. On an idle loop
 * one more runs when the heap still holds 16 MB (or an eighth) more than it
 * uses: V8 gives back its young generation (32 MB after a burst, 1 MB quiet)
 * only at a collection that finds little allocated since the one before. At 1,000,000 blocks one
 * takes a few hundred ms, once after a burst; the memory it gives back is
 * several hundred MB.
 *
 * A collection frees objects but leaves the pages they were on: after a
 * burst at 1,000,000 blocks the heap held 500 MB for 290 MB in use. When
 * that room exceeds 16 MB and a quarter of what is in use, the next look at
 * an idle loop (no traffic to speak of) runs one compacting collection,
 * which moves the live objects together and gives the pages back (1.7 s at
 * 1,000,000 blocks on one core, 0.3 s at 100,000).
 */
export class MemorySettler {
  private readonly timer: NodeJS.Timeout;
  private readonly gc: ((compact: boolean) => void) | null;
  private readonly heap: () => { used: number; total: number };
  private readonly busy: () => number;
  private readonly onCollected: SettlerOptions['onCollected'];
  /** The heap in use after the last full collection. */
  private settled = 0;
  /** The heap held after the last full collection. */
  private settledHeld = 0;
  /** The last collection was the one more, for a heap holding more than it uses. */
  private heldTried = false;
  /** Full collections run. */
  collections = 0;
  /** Of those, the compacting ones. */
  compactions = 0;
  /** The last collection left room worth compacting away once the loop is idle. */
  private compactDue = false;
  private readonly decisions: () => number;
  private lastDecisions = 0;

  constructor(o: SettlerOptions = {}) {
    this.gc = o.gc === undefined ? exposeGc() : o.gc;
    this.heap = o.heap ?? ((): { used: number; total: number } => {
      const m = process.memoryUsage();
      return { used: m.heapUsed, total: m.heapTotal };
    });
    this.busy = o.busy ?? loopBusy();
    this.decisions = o.decisions ?? ((): number => 0);
    this.onCollected = o.onCollected;
    this.timer = setInterval(() => this.look(), o.everyMs ?? 5000);
    this.timer.unref();
  }

  /** One look: a full collection when the heap has grown and the loop is quiet, a compacting one when it is idle and worth it. */
  look(): void {
    const busy = this.busy();
    const decisions = this.decisions();
    const deciding = decisions !== this.lastDecisions;
    this.lastDecisions = decisions;
    const heap = this.heap();
    const before = heap.used;
    if (this.gc === null || busy > BUSY || deciding) return;
    const compact = this.compactDue && busy <= IDLE;
    const grown = before - this.settled >= Math.max(GROWTH_BYTES, this.settled / 8);
    // V8 gives its young generation back (32 MB after a burst, 1 MB quiet) only at a collection that finds
    // little allocated since the one before: on a quiet server, none comes. So on an idle loop, when the heap
    // holds that much more than it uses, one more collection; again only once the heap held has grown.
    const roomy = heap.total - heap.used >= Math.max(GROWTH_BYTES, heap.used / 8);
    const held = busy <= IDLE && roomy && (!this.heldTried || heap.total - this.settledHeld >= Math.max(GROWTH_BYTES, this.settledHeld / 8));
    if (!compact && !grown && !held) return;
    const t0 = performance.now();
    this.gc(compact);
    const after = this.heap();
    this.heldTried = !compact && !grown;
    this.settled = after.used;
    this.settledHeld = after.total;
    this.collections++;
    if (compact) this.compactions++;
    this.compactDue = !compact && after.total - after.used > Math.max(SLACK_BYTES, after.used / 4);
    this.onCollected?.({
      ms: Math.round(performance.now() - t0), compacted: compact,
      beforeMB: Math.round(before / 1048576), afterMB: Math.round(after.used / 1048576), heldMB: Math.round(after.total / 1048576),
    });
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
function exposeGc(): ((compact: boolean) => void) | null {
  try {
    setFlagsFromString('--expose-gc');
    const gc: unknown = runInNewContext('gc');
    if (typeof gc !== 'function') return null;
    return (compact) => {
      if (!compact) {
        (gc as () => void)();
        return;
      }
      // This one collection moves live objects together; V8's own go on as before.
      setFlagsFromString('--compact-on-every-full-gc');
      try {
        (gc as () => void)();
      } finally {
        setFlagsFromString('--no-compact-on-every-full-gc');
      }
    };
  } catch {
    return null;
  }
}
