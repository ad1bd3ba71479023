import { LRUCache } from 'lru-cache';
import { clientKey, contains, ipv4, parseNetwork, toNetwork, type Network } from '../address.js';
import { blockDuration, nextOffence, remembered, type Escalation, type Offence } from './escalation.js';
import { compileRules, matches, type CompiledRule, type Hit, type Rule } from './rules.js';
import { add, count } from './sliding-window.js';

/** The decision to block a client, handed to the blocker. */
export interface Verdict {
  /** The client as counted: an IPv4 address or an IPv6 `/ipv6Prefix` network. */
  readonly client: Network;
  /** Name of the rule that tripped. */
  readonly rule: string;
  /** The rule's count when it tripped (limit + 1 or more). */
  readonly hits: number;
  readonly windowMs: number;
  /** The block's duration, escalated for repeat offenders. */
  readonly blockMs: number;
  /** Why, for people: `361 requests in 120s`. */
  readonly reason: string;
  /** The client's offence history including this block. */
  readonly offence: Offence;
}

/** What `record()` did with a hit; `counted` also when the hit led to a verdict. */
export type RecordOutcome = 'counted' | 'allowed' | 'blocked-already' | 'unmatched';

/** The allow list as the limiter sees it (an `AllowList`). */
export interface AllowCheck {
  has(n: Network): boolean;
}

export interface LimiterOptions {
  readonly rules: readonly Rule[];
  readonly allow: AllowCheck;
  /** IPv6 clients are counted per network of this length. @default 64 in the configuration */
  readonly ipv6Prefix: number;
  /** Bound on clients with counters, and on clients with an offence history; least recently seen go first. */
  readonly maxClients: number;
  readonly escalation: Escalation;
  /** True when the client is blocked already; its hits are then not counted. */
  readonly isBlocked: (client: Network) => boolean;
  /** Called synchronously, at most once per `record()`, when a client goes over a limit. */
  readonly onVerdict: (v: Verdict) => void;
  /**
   * Called for every hit a rule counted, with the rule's index in `rules`,
   * so the hit can be counted in a shared store too (see `convictShared`).
   */
  readonly onCount?: (client: Network, rule: number, at: number) => void;
  /** Called when a client's offence history changes, or is forgotten (null): the journal listens. */
  readonly onOffence?: (key: string, offence: Offence | null) => void;
  /** Wall clock for escalation memory, in ms since the epoch. @default Date.now */
  readonly now?: () => number;
}

/** Counters of the limiter's life, for metrics. */
export interface LimiterStats {
  /** Clients whose counters were dropped to respect `maxClients`. */
  evictions: number;
  /** Verdicts emitted. */
  verdicts: number;
}

const INITIAL_SLOTS = 1024;

/**
 * A client's key among the counters: an IPv4 address as its 32-bit value (a
 * small integer to V8, no string kept per client: about 30 bytes less each),
 * anything else as its canonical text.
 */
type CounterKey = number | string;

function counterKey(n: Network): CounterKey {
  return n.family === 4 && n.prefix === 32 ? Number(n.value) | 0 : n.text;
}

function keyNetwork(key: CounterKey): Network | null {
  return typeof key === 'number' ? ipv4(key >>> 0) : parseNetwork(key);
}

/** A client and the rule it is nearest to crossing (`rated top`). */
export interface ClientNearLimit {
  readonly client: string;
  readonly rule: string;
  readonly hits: number;
  readonly limit: number;
}

/**
 * Counts hits per client against every matching rule and decides blocks.
 *
 * Counters live in one growing `Uint32Array` (a slot of every rule's window
 * per client, see `sliding-window.ts`); an LRU maps each client (see
 * CounterKey) to its slot, so a tracked IPv4 client costs about 120 bytes
 * with one rule instead of a typed array object each. `record()` is synchronous and allocates nothing for a
 * known IPv4 client.
 */
export class Limiter {
  readonly stats: LimiterStats = { evictions: 0, verdicts: 0 };
  private readonly rules: readonly CompiledRule[];
  private readonly offsets: readonly number[];
  private readonly stride: number;
  private readonly allow: AllowCheck;
  private readonly ipv6Prefix: number;
  private readonly maxClients: number;
  private readonly escalation: Escalation;
  private readonly isBlocked: (client: Network) => boolean;
  private readonly onVerdict: (v: Verdict) => void;
  private readonly onCount: ((client: Network, rule: number, at: number) => void) | undefined;
  private readonly onOffence: ((key: string, offence: Offence | null) => void) | undefined;
  private readonly now: () => number;
  private readonly clients: LRUCache<CounterKey, number>;
  /** Offence history in order of last offence, oldest first; bounded by maxClients. */
  private readonly offences = new Map<string, Offence>();
  private slab: Uint32Array;
  /** Slots handed out so far; freed ones go to `free`. */
  private used = 0;
  private readonly free: number[] = [];
  /** A client whose counters were zeroed but whose entry was kept (see drop); not tracked. */
  private parked: CounterKey | null = null;

  constructor(opts: LimiterOptions) {
    if (!(Number.isInteger(opts.maxClients) && opts.maxClients >= 1)) {
      throw new RangeError(`maxClients must be a positive integer, got ${opts.maxClients}`);
    }
    if (!(Number.isInteger(opts.ipv6Prefix) && opts.ipv6Prefix >= 0 && opts.ipv6Prefix <= 128)) {
      throw new RangeError(`ipv6Prefix must be an integer from 0 to 128, got ${opts.ipv6Prefix}`);
    }
    this.rules = compileRules(opts.rules);
    const offsets: number[] = [];
    let stride = 0;
    for (const rule of this.rules) {
      offsets.push(stride);
      stride += rule.window.stride;
    }
    this.offsets = offsets;
    this.stride = stride;
    this.allow = opts.allow;
    this.ipv6Prefix = opts.ipv6Prefix;
    this.maxClients = opts.maxClients;
    this.escalation = opts.escalation;
    this.isBlocked = opts.isBlocked;
    this.onVerdict = opts.onVerdict;
    this.onCount = opts.onCount;
    this.onOffence = opts.onOffence;
    this.now = opts.now ?? Date.now;
    // One slot more than maxClients: a new client takes its slot before
    // set() evicts the least recent one and frees another.
    this.slab = new Uint32Array(Math.min(INITIAL_SLOTS, opts.maxClients + 1) * stride);
    this.clients = new LRUCache<CounterKey, number>({
      max: opts.maxClients,
      dispose: (slot, key, reason) => {
        if (key === this.parked) this.parked = null;
        this.free.push(slot);
        if (reason === 'evict') this.stats.evictions++;
      },
    });
  }

  /**
   * Counts one hit: allow-listed addresses and already-blocked clients are
   * not counted; otherwise every matching rule counts it, and the first rule
   * over its limit (the longest block when several are) yields one verdict,
   * after which the client's counters start from zero.
   */
  record(hit: Hit): RecordOutcome {
    if (this.allow.has(hit.ip)) return 'allowed';
    let client = clientKey(hit.ip, this.ipv6Prefix);
    // An IPv6 network that holds an allowed address (this host's own /64, say)
    // is never blocked as a whole: its clients are counted one address each.
    if (client !== hit.ip && this.allow.has(client)) client = hit.ip;
    if (this.isBlocked(client)) return 'blocked-already';
    const rules = this.rules;
    let base = -1;
    let tripped: CompiledRule | null = null;
    let trippedHits = 0;
    for (let i = 0; i < rules.length; i++) {
      const rule = rules[i] as CompiledRule;
      if (!matches(rule, hit)) continue;
      if (base < 0) base = this.slotOf(counterKey(client)) * this.stride;
      const n = add(this.slab, base + (this.offsets[i] ?? 0), rule.window, hit.at);
      this.onCount?.(client, i, hit.at);
      if (n > rule.limit && (tripped === null || rule.blockMs > tripped.blockMs)) {
        tripped = rule;
        trippedHits = n;
      }
    }
    if (base < 0) return 'unmatched';
    if (tripped !== null) this.convict(client, tripped, trippedHits);
    return 'counted';
  }

  /**
   * Forgets the counters and offence history of a client, or of every client
   * inside a network. An address stands for the client it is counted under
   * (its IPv6 `/ipv6Prefix` network).
   */
  forget(target: Network): void {
    const clientPrefix = target.family === 4 ? 32 : this.ipv6Prefix;
    if (target.prefix >= clientPrefix) {
      // An address may be counted on its own (see record) or under its network.
      for (const n of [target, toNetwork(target, clientPrefix)]) {
        this.drop(counterKey(n));
        if (this.offences.delete(n.text)) this.onOffence?.(n.text, null);
      }
      return;
    }
    // A network wider than one client: rare (unblock of a range), so a scan will do.
    const inside = (key: CounterKey): boolean => {
      const n = keyNetwork(key);
      return n !== null && contains(target, n);
    };
    for (const key of [...this.clients.keys()].filter(inside)) this.clients.delete(key);
    for (const key of [...this.offences.keys()].filter(inside)) {
      this.offences.delete(key);
      this.onOffence?.(key, null);
    }
  }

  /**
   * Blocks a client that went over rule `rule` (an index in `rules`) in a
   * shared count, as if it had here: escalation, one verdict, counters reset.
   * Returns false, doing nothing, when the client is allow-listed or already
   * blocked.
   */
  convictShared(client: Network, rule: number, hits: number): boolean {
    const r = this.rules[rule];
    if (!r || this.allow.has(client) || this.isBlocked(client)) return false;
    this.convict(client, r, hits);
    return true;
  }

  /**
   * What each rule has counted of `client` in its window at `at` (monotonic
   * ms, as hits are timed), without counting anything: for `rated explain`.
   */
  countsOf(client: Network, at: number): Array<{ rule: string; hits: number; limit: number; windowMs: number }> {
    const slot = this.clients.peek(counterKey(client));
    return this.rules.map((rule, i) => ({
      rule: rule.name,
      hits: slot === undefined || counterKey(client) === this.parked ? 0 : count(this.slab, slot * this.stride + (this.offsets[i] ?? 0), rule.window, at),
      limit: rule.limit,
      windowMs: rule.window.windowMs,
    }));
  }

  /**
   * The `n` clients nearest a limit (hits ÷ limit, highest first), among the
   * `scan` most recently seen: for `rated top`, once a second, so bounded
   * work whatever the number of clients; the nearest are the busy ones.
   */
  closest(n: number, at: number, scan = 50_000): ClientNearLimit[] {
    const best: Array<ClientNearLimit & { ratio: number }> = [];
    let seen = 0;
    for (const [key, slot] of this.clients.entries()) {
      if (seen++ >= scan) break;
      if (key === this.parked) continue;
      this.rules.forEach((rule, i) => {
        const hits = count(this.slab, slot * this.stride + (this.offsets[i] ?? 0), rule.window, at);
        if (hits === 0) return;
        const ratio = hits / rule.limit;
        if (best.length >= n && ratio <= (best.at(-1)?.ratio ?? 0)) return;
        const client = keyNetwork(key)?.text ?? String(key);
        const pos = best.findIndex((b) => b.ratio < ratio);
        best.splice(pos === -1 ? best.length : pos, 0, { client, rule: rule.name, hits, limit: rule.limit, ratio });
        if (best.length > n) best.pop();
      });
    }
    return best.map(({ ratio: _, ...c }) => c);
  }

  /** Number of clients with counters. */
  tracked(): number {
    return this.clients.size - (this.parked !== null && this.clients.has(this.parked) ? 1 : 0);
  }

  /** The offence histories still within escalation memory, oldest offence first, for the journal. */
  exportOffences(): Array<[string, Offence]> {
    const now = this.now();
    const out: Array<[string, Offence]> = [];
    for (const [key, o] of this.offences) {
      if (remembered(o, now, this.escalation.memoryMs)) out.push([key, { count: o.count, lastAt: o.lastAt }]);
    }
    return out;
  }

  /** Restores offence histories from the journal; malformed and forgotten entries are skipped. */
  importOffences(entries: Iterable<readonly [string, Offence]>): void {
    const now = this.now();
    const usable = [...entries].filter(([key, o]) =>
      typeof key === 'string' && key !== '' &&
      Number.isInteger(o.count) && o.count >= 1 && Number.isFinite(o.lastAt) &&
      remembered(o, now, this.escalation.memoryMs));
    usable.sort((a, b) => a[1].lastAt - b[1].lastAt);
    for (const [key, o] of usable) this.remember(key, { count: o.count, lastAt: o.lastAt });
  }

  /** The offence history of a client, if remembered. */
  offenceOf(client: Network): Offence | undefined {
    return this.offences.get(client.text);
  }

  private convict(client: Network, rule: CompiledRule, hits: number): void {
    const key = client.text;
    // Start from zero after the block; the slot is free until the client returns.
    this.drop(counterKey(client));
    const offence = nextOffence(this.offences.get(key), this.now(), this.escalation.memoryMs);
    this.remember(key, offence);
    this.stats.verdicts++;
    this.onVerdict({
      client,
      rule: rule.name,
      hits,
      windowMs: rule.windowMs,
      blockMs: blockDuration(rule.blockMs, offence, this.escalation),
      reason: `${hits} requests in ${windowText(rule.windowMs)}`,
      offence,
    });
  }

  private remember(key: string, offence: Offence): void {
    // Re-insert so the Map's order stays "least recent offence first".
    this.offences.delete(key);
    this.offences.set(key, offence);
    this.onOffence?.(key, offence);
    if (this.offences.size > this.maxClients) {
      const oldest = this.offences.keys().next();
      if (oldest.done !== true) this.offences.delete(oldest.value);
    }
  }

  /** The client's slot, taking a zeroed one for a new client. */
  /**
   * Forgets a client's counters. lru-cache empties every one of its
   * preallocated arrays (maxClients long) when its last entry is deleted,
   * which a flood of one-shot offenders would make happen on every verdict:
   * the last client is zeroed and parked in place instead.
   */
  private drop(key: CounterKey): void {
    const slot = this.clients.peek(key);
    if (slot === undefined) return;
    if (this.clients.size > 1) {
      this.clients.delete(key);
      return;
    }
    this.slab.fill(0, slot * this.stride, (slot + 1) * this.stride);
    this.parked = key;
  }

  private slotOf(key: CounterKey): number {
    const known = this.clients.get(key);
    if (known !== undefined) {
      if (key === this.parked) this.parked = null;
      return known;
    }
    const slot = this.free.pop() ?? this.grow();
    this.slab.fill(0, slot * this.stride, (slot + 1) * this.stride);
    // A text built piece by piece (IPv6 networks) is a tree of string parts in
    // V8, about 140 bytes more per client; charCodeAt flattens it in place.
    if (typeof key === 'string') key.charCodeAt(0);
    this.clients.set(key, slot);
    return slot;
  }

  private grow(): number {
    const slot = this.used++;
    if ((slot + 1) * this.stride > this.slab.length) {
      const slots = Math.min(Math.max(INITIAL_SLOTS, (this.slab.length / this.stride) * 2), this.maxClients + 1);
      const bigger = new Uint32Array(slots * this.stride);
      bigger.set(this.slab);
      this.slab = bigger;
    }
    return slot;
  }
}

// Seconds, as SPEC §6 shows it ("361 requests in 120s"): a rate reads best in one unit.
function windowText(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}
