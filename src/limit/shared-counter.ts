import type { Network } from '../address.js';
import type { CounterStore, CountRequest } from './counter-store.js';

export interface SharedCounterOptions {
  readonly store: CounterStore;
  /** Each rule's block duration, in the store's rule order: the longest wins when several trip. */
  readonly blockMs: readonly number[];
  /** False while the store is out of reach: hits are then counted locally only. */
  readonly isUp: () => boolean;
  /** A client went over rule `rule` in the shared count. */
  readonly onTrip: (client: Network, rule: number, hits: number) => void;
  /** A batch could not be counted (its hits stay in the local counters only). */
  readonly onFailure: (err: unknown) => void;
  /** Turns a hit's monotonic time into wall-clock milliseconds shared by every node. */
  readonly wallClock: (at: number) => number;
  /** How long hits are gathered before they are sent. @default 10 */
  readonly flushMs?: number;
  /** Clients per batch; a full batch is sent at once. @default 1000 */
  readonly maxBatch?: number;
  /** Batches in flight at once; more hits wait, gathered per client. @default 4 */
  readonly maxInFlight?: number;
  /** Clients waiting while every slot is in flight; hits of further clients are counted locally only. @default 100000 */
  readonly maxPending?: number;
}

/** What the shared counter has done, for status and the benchmark. */
export interface SharedCounterStats {
  /** Hits handed to the store. */
  hits: number;
  /** Batches sent. */
  batches: number;
  /** Batches that failed. */
  failed: number;
  /** Hits not shared because Redis was down or too far behind. */
  skipped: number;
  /** Clients found over a limit in the shared count. */
  trips: number;
}

interface Pending {
  readonly client: Network;
  readonly hits: number[];
  at: number;
}

/**
 * Feeds hits into a shared counter store without ever making a receiver
 * wait: `add()` only notes the hit; every `flushMs` (or when `maxBatch`
 * clients are waiting) the hits go to the store as one request per client.
 * Trips come back asynchronously through `onTrip`.
 */
export class SharedCounter {
  readonly stats: SharedCounterStats = { hits: 0, batches: 0, failed: 0, skipped: 0, trips: 0 };
  private readonly store: CounterStore;
  private readonly rules: number;
  private readonly flushMs: number;
  private readonly maxBatch: number;
  private readonly maxInFlight: number;
  private readonly maxPending: number;
  private pending = new Map<string, Pending>();
  private timer: NodeJS.Timeout | null = null;
  private inFlight = 0;
  private readonly flights = new Set<Promise<void>>();
  private closed = false;

  constructor(private readonly options: SharedCounterOptions) {
    this.store = options.store;
    this.rules = options.store.rules.length;
    this.flushMs = options.flushMs ?? 10;
    this.maxBatch = options.maxBatch ?? 1000;
    this.maxInFlight = options.maxInFlight ?? 4;
    this.maxPending = options.maxPending ?? 100_000;
  }

  /** Notes one hit of `client` on rule `rule` at monotonic time `at`; never waits. */
  add(client: Network, rule: number, at: number): void {
    if (this.closed || !this.options.isUp()) {
      this.stats.skipped++;
      return;
    }
    let p = this.pending.get(client.text);
    if (!p) {
      if (this.pending.size >= this.maxPending) {
        this.stats.skipped++;
        return;
      }
      p = { client, hits: new Array<number>(this.rules).fill(0), at };
      this.pending.set(client.text, p);
    }
    p.hits[rule] = (p.hits[rule] ?? 0) + 1;
    if (at > p.at) p.at = at;
    if (this.pending.size >= this.maxBatch && this.inFlight < this.maxInFlight) this.flush();
    else this.schedule();
  }

  /** Sends what is waiting now (at most `maxInFlight` batches at a time). */
  flush(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    while (this.pending.size > 0 && this.inFlight < this.maxInFlight) {
      const batch: Pending[] = [];
      for (const [key, p] of this.pending) {
        batch.push(p);
        this.pending.delete(key);
        if (batch.length >= this.maxBatch) break;
      }
      this.send(batch);
    }
  }

  /** Sends what is waiting and resolves when every batch in flight has settled. */
  async drain(): Promise<void> {
    this.flush();
    while (this.flights.size > 0 || this.pending.size > 0) {
      await Promise.allSettled([...this.flights]);
      this.flush();
    }
  }

  /** Drops what is waiting (Redis went away: those hits stay local). */
  discard(): void {
    this.stats.skipped += this.pending.size;
    this.pending.clear();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.pending.clear();
    await Promise.allSettled([...this.flights]);
  }

  private schedule(): void {
    if (this.timer || this.closed) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.flush();
    }, this.flushMs);
    this.timer.unref();
  }

  private send(batch: Pending[]): void {
    const requests: CountRequest[] = batch.map((p) => ({
      client: p.client.text,
      hits: p.hits,
      at: this.options.wallClock(p.at),
    }));
    for (const r of requests) for (const n of r.hits) this.stats.hits += n;
    this.stats.batches++;
    this.inFlight++;
    const flight = this.store.count(requests).then((results) => {
      results.forEach((r, i) => {
        if (!r.tripped) return;
        const p = batch[i] as Pending;
        const rule = this.worst(r.counts);
        if (rule < 0) return;
        this.stats.trips++;
        this.options.onTrip(p.client, rule, r.counts[rule] ?? 0);
      });
    }, (err: unknown) => {
      this.stats.failed++;
      this.options.onFailure(err);
    }).finally(() => {
      this.inFlight--;
      this.flights.delete(flight);
      if (this.pending.size > 0 && !this.closed) this.schedule();
    });
    this.flights.add(flight);
  }

  /** The rule over its limit with the longest block; -1 when none is. */
  private worst(counts: readonly number[]): number {
    let best = -1;
    this.store.rules.forEach((rule, i) => {
      if ((counts[i] ?? 0) > rule.limit && (best < 0 || (this.options.blockMs[i] ?? 0) > (this.options.blockMs[best] ?? 0))) best = i;
    });
    return best;
  }
}
