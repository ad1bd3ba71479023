import { LRUCache } from 'lru-cache';
import { add, WindowSpec } from './sliding-window.js';

/** One rule as a counter store sees it: a name, a limit and a window. */
export interface StoreRule {
  readonly name: string;
  readonly limit: number;
  readonly window: WindowSpec;
}

/** Hits of one client to count together. */
export interface CountRequest {
  /** The client as counted: canonical text of an address or an IPv6 `/ipv6Prefix` network. */
  readonly client: string;
  /** Hits per rule, indexed like the store's rules; 0 for a rule none of them matched. */
  readonly hits: readonly number[];
  /** Wall-clock time of the hits, in milliseconds since the epoch. */
  readonly at: number;
}

/** What counting one request found. */
export interface CountResult {
  /** Each rule's window count after the hits; 0 for a rule without hits. */
  readonly counts: readonly number[];
  /**
   * True when a count went over its rule's limit. The client's counters of
   * every rule were then cleared, for every user of the store, so exactly
   * one caller learns that the client tripped.
   */
  readonly tripped: boolean;
}

/**
 * Where sliding-window counters live: in this process, or in Redis where
 * every rated sharing it adds to the same counts. Both implement the window
 * of `sliding-window.ts` (sub-buckets, same error bound) and pass one
 * contract test suite.
 */
export interface CounterStore {
  /** The rules, in the order of `CountRequest.hits`. */
  readonly rules: readonly StoreRule[];
  /** Counts every request, in order; each hit goes into the bucket of its request's `at`. */
  count(batch: readonly CountRequest[]): Promise<CountResult[]>;
  /** Clears a client's counters of every rule. */
  forget(client: string): Promise<void>;
  /** Releases what the store holds; it is not used afterwards. */
  close(): Promise<void>;
}

/** The ring layout of every rule, end to end, in one array per client. */
export function layout(rules: readonly StoreRule[]): { offsets: number[]; stride: number } {
  const offsets: number[] = [];
  let stride = 0;
  for (const rule of rules) {
    offsets.push(stride);
    stride += rule.window.stride;
  }
  return { offsets, stride };
}

/**
 * A counter store in this process's memory, bounded to `maxClients` clients
 * (least recently counted go first). It counts exactly as the limiter's own
 * in-process counters do.
 */
export class MemoryCounterStore implements CounterStore {
  readonly rules: readonly StoreRule[];
  private readonly offsets: readonly number[];
  private readonly stride: number;
  private readonly clients: LRUCache<string, Uint32Array>;

  constructor(rules: readonly StoreRule[], maxClients = 100_000) {
    this.rules = rules;
    const { offsets, stride } = layout(rules);
    this.offsets = offsets;
    this.stride = stride;
    this.clients = new LRUCache({ max: maxClients });
  }

  count(batch: readonly CountRequest[]): Promise<CountResult[]> {
    return Promise.resolve(batch.map((req) => this.countOne(req)));
  }

  forget(client: string): Promise<void> {
    this.clients.delete(client);
    return Promise.resolve();
  }

  close(): Promise<void> {
    this.clients.clear();
    return Promise.resolve();
  }

  private countOne(req: CountRequest): CountResult {
    let state = this.clients.get(req.client);
    if (!state) {
      state = new Uint32Array(this.stride);
      this.clients.set(req.client, state);
    }
    const counts: number[] = [];
    let tripped = false;
    for (const [i, rule] of this.rules.entries()) {
      const n = req.hits[i] ?? 0;
      let c = 0;
      for (let k = 0; k < n; k++) c = add(state, this.offsets[i] ?? 0, rule.window, req.at);
      counts.push(c);
      if (c > rule.limit) tripped = true;
    }
    if (tripped) this.clients.delete(req.client);
    return { counts, tripped };
  }
}
