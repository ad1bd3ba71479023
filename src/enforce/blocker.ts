import { performance } from 'node:perf_hooks';
import { contains, neverAClient, toNetwork, type Network } from '../address.js';
import { formatDuration, formatSpan } from '../duration.js';
import { describe, RatedError } from '../errors.js';
import { RateLimitedLog, type Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { viewBlock, type Block, type BlockView, type Dropped, type ListQuery, type Source } from '../block.js';
import type { Backend, KernelEntry } from './backend.js';
import { ExpiryHeap } from './expiry-heap.js';

/** A decision to block. */
export interface BlockRequest {
  readonly net: Network;
  readonly durationMs: number;
  readonly source: Source;
  readonly rule?: string | null;
  readonly reason?: string | null;
  readonly hits?: number | null;
  readonly windowMs?: number;
}

export type BlockOutcome = 'added' | 'extended' | 'unchanged';

/** Why a block ended. */
export type LiftCause = 'expired' | 'unblock' | 'flush' | 'refused';

/** How many of the latest blocks `latest()` can show. */
const NEWEST_KEPT = 100;
/** Distinct rule names, reasons and sources kept once each (`Words`). */
const WORDS_KEPT = 10_000;

/** How long after its expiry an element of ours may still be in the kernel without being a stranger to adopt. */
const LINGER_MS = 30_000;

/**
 * Blocks up to which `rated list` shows what each one dropped (reading every
 * kernel counter takes about 0.2 s at 20,000 and several at 100,000);
 * `--sort dropped` reads them up to the backend's own read limit.
 */
export const LIST_READ_LIMIT = 20_000;

/** A block the firewall refused this many times in a row is given up, never retried forever (a poison element, a full set). */
export const REFUSALS_BEFORE_GIVING_UP = 3;

export interface BlockerOptions {
  readonly backend: Backend;
  readonly isAllowed: (net: Network) => boolean;
  readonly log: Logger;
  readonly metrics: Metrics;
  /** How long decisions are gathered into one transaction. */
  readonly batchDelayMs?: number;
  /** Called after every change of the set of blocks. */
  readonly onChange?: () => void;
  /** Told of each block made or changed, and each lifted, for any cause (the journal). */
  readonly record?: { put(block: Block): void; lift(net: Network): void };
  /** Called when a block is lifted by an operator (the limiter forgets the client). */
  readonly onLift?: (net: Network, cause: LiftCause) => void;
  /** Called for each new block decided here (not adopted) and each block lifted, for any cause (hooks). */
  readonly onEvent?: (event: 'block' | 'unblock', block: Block) => void;
  readonly now?: () => number;
  /**
   * The system clock backends read kernel expiry against (Date.now), given
   * when `now` is a steady clock (clock.ts): the two part at a clock step,
   * and kernel times are then moved onto `now` before they are compared.
   */
  readonly systemNow?: () => number;
  /**
   * How long an adopted kernel entry stays blocked when the kernel keeps no
   * expiry for it (iptables rules); without it such a block never ends.
   */
  readonly reconciledBlockMs?: number;
}

/**
 * Owns the active blocks: decides what the kernel must hold, applies,
 * extends and lifts blocks in batches, and repairs the kernel when it
 * disagrees. With set backends every block is also an element with a kernel
 * timeout, so a dead daemon never leaves a permanent block behind; without
 * them (iptables) the sweep deletes the rules of blocks whose time is up.
 *
 * Blocks may nest (a manual /24 around a blocked address, a /64 around a
 * manual IPv6 address). Interval sets refuse overlapping elements, so only
 * the outermost blocks are kernel elements; the inner ones wait in memory and
 * go back to the kernel when the outer one ends first.
 */
export class Blocker {
  private readonly blocks = new Map<string, Block>();
  /**
   * How many blocks there are of each prefix length, per family: nesting is
   * looked up one length in use at a time, never by scanning every block
   * (and costs no memory per block).
   */
  private readonly lengths: Record<4 | 6, Uint32Array> = { 4: new Uint32Array(33), 6: new Uint32Array(129) };
  /** Rule names, reasons and sources, each kept once however many blocks share it. */
  private readonly words = new Words();
  /** Refusals in a row of blocks the kernel would not take. */
  private readonly refusals = new Map<string, number>();
  private readonly backend: Backend;
  private readonly log: Logger;
  private readonly warn: RateLimitedLog;
  private readonly metrics: Metrics;
  private readonly now: () => number;
  private readonly batchDelayMs: number;
  private commitTimer: NodeJS.Timeout | null = null;
  private committing: Promise<void> | null = null;
  /** When the last commit ended (performance.now()). */
  private lastCommitEnded = Number.NEGATIVE_INFINITY;
  /** The firewall check in flight (`repair`). */
  private repairing: Promise<void> | null = null;
  private sweepTimer: NodeJS.Timeout | null = null;
  /** Set when a commit could not run; the next repair reapplies everything. */
  private dirty = false;
  /**
   * Blocks made, extended or lifted while a resync reads the kernel: what it
   * reads is stale for them, and their own changes are queued or on their way.
   */
  private changedDuringList: Set<string> | null = null;
  /** Runs flush, resync and repair one at a time, so none acts on a listing another made stale. */
  private exclusive: Promise<unknown> = Promise.resolve();
  /**
   * Blocks lifted at their expiry whose elements the kernel may hold a moment
   * longer (timeouts are whole seconds): net → until when. A resync must not
   * adopt those leftovers as new blocks.
   */
  private readonly expiring = new Map<string, number>();
  /** The latest blocks started here, newest last (`rated top`). */
  private readonly newest: Block[] = [];
  private closed = false;
  /** Every block with an expiry, soonest first (and stale entries, skipped when they come up). */
  private readonly expiry = new ExpiryHeap<Block>();
  private advised = false;
  readonly lastErrors: Array<{ at: string; error: string }> = [];

  constructor(private readonly options: BlockerOptions) {
    this.backend = options.backend;
    this.log = options.log;
    this.warn = new RateLimitedLog(options.log);
    this.metrics = options.metrics;
    this.now = options.now ?? Date.now;
    this.batchDelayMs = options.batchDelayMs ?? 10;
  }

  get size(): number {
    return this.blocks.size;
  }

  /** True when exactly this client or network is blocked (a hot-path lookup). */
  has(net: Network): boolean {
    return this.blocks.has(net.text);
  }

  /** The latest `n` blocks started here that are still in force, newest first. */
  latest(n: number): BlockView[] {
    const out: BlockView[] = [];
    for (let i = this.newest.length - 1; i >= 0 && out.length < n; i--) {
      const b = this.newest[i] as Block;
      if (this.blocks.get(b.net.text) === b) out.push(viewBlock(b));
    }
    return out;
  }

  get(net: Network): Block | undefined {
    return this.blocks.get(net.text);
  }

  /** The block that holds `net`: its own, or the narrowest of the wider networks blocked around it. */
  holding(net: Network): Block | undefined {
    const own = this.blocks.get(net.text);
    if (own) return own;
    const counts = this.lengths[net.family];
    for (let len = net.prefix - 1; len >= 0; len--) {
      const b = counts[len] ? this.blocks.get(toNetwork(net, len).text) : undefined;
      if (b) return b;
    }
    return undefined;
  }

  /** What the kernel element of `net` dropped, when the elements can be read at a bearable cost. */
  async droppedOf(net: Network): Promise<Dropped | null> {
    if (this.tooManyToRead) return null;
    return (await this.backend.list()).find((e) => e.net.text === net.text)?.dropped ?? null;
  }

  /** The active blocks, in no particular order. */
  all(): Block[] {
    return [...this.blocks.values()];
  }

  /** The active blocks, soonest expiry last. */
  list(): Block[] {
    return [...this.blocks.values()].sort((a, b) => (b.expires ?? Infinity) - (a.expires ?? Infinity));
  }

  /**
   * The active blocks as SPEC §6 shows them, each with what its kernel
   * element dropped. The per-element counters are read only here: at
   * 1,000,000 elements that read is slow, and nothing else needs them.
   */
  async views(query: ListQuery = {}): Promise<Iterable<BlockView>> {
    const dropped = new Map<string, Dropped>();
    try {
      // A plain listing streams at once: past LIST_READ_LIMIT blocks reading every counter first would hold
      // its first line for seconds. Sorting by what was dropped needs them all, as far as they can be read.
      const limit = query.sort === 'dropped' ? this.backend.readLimit : Math.min(this.backend.readLimit, LIST_READ_LIMIT);
      if (this.blocks.size <= limit) for (const e of await this.backend.list()) if (e.dropped) dropped.set(e.net.text, e.dropped);
    } catch (err) {
      this.log.warn({ err: describe(err) }, 'cannot read what each block dropped; listing without it');
    }
    let blocks = this.list();
    const packets = (b: Block): number => dropped.get(b.net.text)?.packets ?? -1;
    if (query.sort === 'dropped') blocks.sort((a, b) => packets(b) - packets(a));
    else if (query.sort === 'expires') blocks.reverse();
    else if (query.sort === 'since') blocks.sort((a, b) => (b.since ?? -Infinity) - (a.since ?? -Infinity));
    if (query.limit !== undefined) blocks = blocks.slice(0, query.limit);
    // One view at a time, as the listing is sent: 1,000,000 views at once would hold hundreds of MB.
    return (function* () {
      for (const b of blocks) yield viewBlock(b, dropped.get(b.net.text) ?? null);
    })();
  }

  /**
   * Blocks `req.net` for `req.durationMs`. Allow-listed addresses are refused;
   * a block never shortens an existing one.
   */
  block(req: BlockRequest): BlockOutcome {
    if (this.options.isAllowed(req.net)) {
      throw new RatedError('REFUSED', `${req.net.text} is allow-listed (allow, allowSelf) and is never blocked`);
    }
    const special = neverAClient(req.net);
    if (special !== null) throw new RatedError('REFUSED', `${req.net.text} is ${special}, never a remote client, and is never blocked`);
    const now = this.now();
    const expires = now + req.durationMs;
    const existing = this.blocks.get(req.net.text);
    if (existing) {
      if (existing.expires === null || existing.expires >= expires) return 'unchanged';
      existing.expires = expires;
      this.expiry.push(expires, existing);
      existing.rule = req.rule ?? existing.rule;
      existing.reason = req.reason ?? existing.reason;
      existing.hits = req.hits ?? existing.hits;
      existing.source = req.source;
      this.options.record?.put(existing);
      this.changedDuringList?.add(existing.net.text);
      if (!this.coveredByOther(existing)) this.backend.add(existing.net, expires - now, true);
      this.logBlock(existing, req, 'extended');
      this.changed();
      return 'extended';
    }
    const block: Block = {
      net: req.net, rule: req.rule ?? null, reason: req.reason ?? null, source: req.source,
      since: now, expires, hits: req.hits ?? null,
    };
    this.insert(block);
    this.changedDuringList?.add(block.net.text);
    // The element of a block that just expired may still be in the kernel.
    const mayBePresent = this.expiring.delete(block.net.text);
    if (!this.coveredByOther(block)) {
      for (const inner of this.inside(block)) {
        this.changedDuringList?.add(inner.net.text);
        this.backend.delete(inner.net);
      }
      this.backend.add(block.net, req.durationMs, mayBePresent);
    }
    this.metrics.blocks.inc(`${block.rule ?? ''}\t${block.source}`);
    this.logBlock(block, req, 'blocked');
    this.newest.push(block);
    if (this.newest.length > NEWEST_KEPT) this.newest.shift();
    this.options.onEvent?.('block', block);
    this.adviseOnSize();
    this.changed();
    return 'added';
  }

  /** Says once (again after the count fell back well below it) that the backend is past the size it suits. */
  private adviseOnSize(): void {
    const max = this.backend.advisedMax;
    if (max === undefined) return;
    if (this.blocks.size <= max * 0.9) this.advised = false;
    else if (this.blocks.size > max && !this.advised) {
      this.advised = true;
      this.log.warn({ backend: this.backend.kind, blocks: this.blocks.size, advisedMax: max },
        `${this.backend.kind} holds one rule per block and every packet walks them all: past ${max} blocks use firewall.backend nftables or ipset`);
    }
  }

  /** Lifts the block of exactly `net`; returns it, or null when there was none. */
  unblock(net: Network, cause: LiftCause = 'unblock'): Block | null {
    const block = this.blocks.get(net.text);
    if (!block) return null;
    this.lift(block, cause, true);
    this.changed();
    return block;
  }

  /**
   * Lifts every block we manage and empties our sets; returns how many blocks
   * there were. A block is forgotten only once the kernel has let it go: when
   * the flush fails, every block stays, listed and in force.
   */
  flush(): Promise<number> {
    return this.serialize(async () => {
      await this.settle();
      const all = [...this.blocks.values()];
      const changed = new Set<string>();
      this.changedDuringList = changed;
      let inKernel: number | null;
      try {
        inKernel = await this.backend.flush();
      } finally {
        this.changedDuringList = null;
      }
      for (const b of all) {
        // Made, extended or lifted while the sets were emptied: a decision of its own.
        if (changed.has(b.net.text) || this.blocks.get(b.net.text) !== b) continue;
        this.remove(b);
        this.lifted(b, 'flush');
      }
      this.expiring.clear();
      // Blocks decided while the sets were being emptied may have been emptied with them.
      const now = this.now();
      for (const b of this.blocks.values()) {
        if (b.expires !== null && b.expires > now && !this.coveredByOther(b)) this.backend.add(b.net, b.expires - now, true);
      }
      this.changed();
      return Math.max(all.length, inKernel ?? 0);
    });
  }

  /** Adopts a block without touching the kernel (journal entries and kernel elements at start-up). */
  adopt(block: Block): void {
    if (this.blocks.has(block.net.text)) return;
    this.insert(block);
  }

  /** Starts the expiry sweep. */
  start(): void {
    this.sweepTimer = setInterval(() => this.sweep(), 1000);
    this.sweepTimer.unref();
  }

  /** Lifts the blocks whose time is up: as many steps as blocks expire, whatever the number in force. */
  sweep(): void {
    const now = this.now();
    for (const [text, until] of this.expiring) {
      // In expiry order: the first one still lingering ends the walk.
      if (until > now) break;
      this.expiring.delete(text);
    }
    let any = false;
    for (const [at, block] of this.expiry.due(now)) {
      // Lifted, or extended, since this entry was made: stale.
      if (this.blocks.get(block.net.text) !== block || block.expires !== at) continue;
      this.lift(block, 'expired', !this.backend.expiresInKernel);
      any = true;
    }
    // Stale entries of extended and lifted blocks: dropped when they outnumber the blocks.
    if (this.expiry.size > 2 * this.blocks.size + 1024) {
      this.expiry.rebuild((at, b) => this.blocks.get(b.net.text) === b && b.expires === at);
    }
    if (any) this.changed();
  }

  /**
   * Makes the kernel hold exactly what we believe: adds missing elements with
   * their remaining time, renews ones whose timeout is too short, and adopts
   * elements of our sets we did not know about. Returns what it changed.
   */
  resync(adoptUnknown: boolean): Promise<{ added: number; adopted: number; removed: number }> {
    return this.serialize(() => this.resyncNow(adoptUnknown, true));
  }

  /** True when there are more blocks than the backend can read back at a bearable cost. */
  private get tooManyToRead(): boolean {
    return this.blocks.size > this.backend.readLimit;
  }

  /**
   * Without reading the kernel (too many elements to read): when `reapply`,
   * offers every block to the kernel again with its remaining time; an add
   * of an element already there changes nothing, a missing one comes back.
   */
  private async reapplyBlind(reapply: boolean): Promise<{ added: number; adopted: number; removed: number }> {
    await this.settle();
    if (!reapply) return { added: 0, adopted: 0, removed: 0 };
    this.dirty = false;
    const now = this.now();
    let added = 0;
    for (const block of this.blocks.values()) {
      if (block.expires === null || block.expires <= now || this.coveredByOther(block)) continue;
      this.backend.add(block.net, block.expires - now, false);
      added++;
    }
    await this.commitNow();
    return { added, adopted: 0, removed: 0 };
  }

  private async resyncNow(adoptUnknown: boolean, reapply: boolean): Promise<{ added: number; adopted: number; removed: number }> {
    if (this.tooManyToRead) return this.reapplyBlind(reapply);
    await this.settle();
    // This resync reapplies everything; a commit refused from here on asks for another.
    const wasDirty = this.dirty;
    this.dirty = false;
    const changed = new Set<string>();
    this.changedDuringList = changed;
    let kernel: KernelEntry[];
    try {
      kernel = await this.backend.list();
    } catch (err) {
      this.dirty ||= wasDirty;
      throw err;
    } finally {
      this.changedDuringList = null;
    }
    kernel = this.onOurClock(kernel);
    // From here to the commit nothing else runs: the listing is current for every other block.
    const now = this.now();
    const seen = new Map<string, KernelEntry>();
    let adopted = 0;
    let removed = 0;
    for (const entry of kernel) {
      seen.set(entry.net.text, entry);
      if (this.blocks.has(entry.net.text)) continue;
      // Lifted while we read: its delete is queued or on its way, not a stranger to adopt.
      if (changed.has(entry.net.text)) continue;
      // Lifted at its expiry a moment ago; the kernel drops it by itself.
      const lingers = this.expiring.get(entry.net.text);
      if (lingers !== undefined && entry.expiresAt !== null && entry.expiresAt <= lingers) continue;
      if (this.options.isAllowed(entry.net) || neverAClient(entry.net) !== null) {
        this.log.warn({ ip: entry.net.text }, 'removing an allow-listed or special-purpose address from our set');
        this.backend.delete(entry.net);
        removed++;
        continue;
      }
      if (!adoptUnknown) continue;
      // A rule without kernel expiry would outlive every restart: give it one.
      const fallback = !this.backend.expiresInKernel && this.options.reconciledBlockMs !== undefined
        ? now + this.options.reconciledBlockMs
        : null;
      this.insert({ net: entry.net, rule: null, reason: null, source: 'reconciled', since: null, expires: entry.expiresAt ?? fallback, hits: null });
      adopted++;
    }
    let added = 0;
    for (const block of this.blocks.values()) {
      if (block.expires !== null && block.expires <= now) continue;
      if (changed.has(block.net.text)) continue;
      if (this.coveredByOther(block)) continue;
      const entry = seen.get(block.net.text);
      if (block.expires === null) continue;
      const remaining = block.expires - now;
      // Kernel expiry is read in whole seconds; renew only when clearly short.
      // A block longer than the kernel's longest timeout is renewed once the
      // kernel's time is half gone.
      const cap = this.backend.maxTimeoutMs;
      const due = cap === undefined ? block.expires - 2000 : Math.min(block.expires - 2000, now + cap / 2);
      if (!entry || (entry.expiresAt !== null && entry.expiresAt < due)) {
        this.backend.add(block.net, remaining, entry !== undefined);
        added++;
      }
    }
    if (adopted > 0) this.changed();
    await this.commitNow();
    return { added, adopted, removed };
  }

  /**
   * Verifies our table and elements; repairs and reports drift. One check at
   * a time: asked again while one runs, it answers with that one, so a hung
   * tool piles nothing up.
   */
  repair(): Promise<void> {
    this.repairing ??= this.repairOnce().finally(() => (this.repairing = null));
    return this.repairing;
  }

  private repairOnce(): Promise<void> {
    return this.serialize(async () => {
      try {
        const check = await this.backend.check();
        this.metrics.droppedPackets = check.droppedPackets;
        this.metrics.dropped = check.dropped ?? null;
        if (!check.intact) {
          await this.backend.ensure();
          const r = await this.resyncNow(true, true);
          this.metrics.driftRepairs++;
          this.log.warn({ backend: this.backend.kind, restored: r.added }, 'our firewall table was changed by something else; restored it');
          return;
        }
        const wasDirty = this.dirty;
        // Past LIST_READ_LIMIT blocks, reading every element on each check costs more than it finds (a second
        // of nft and parsing at 100,000, every checkInterval): the structure check and our writes' results stand for it.
        const r = this.blocks.size > LIST_READ_LIMIT ? await this.reapplyBlind(wasDirty) : await this.resyncNow(true, wasDirty);
        if (r.added > 0 || r.adopted > 0 || r.removed > 0) {
          if (!wasDirty) this.metrics.driftRepairs++;
          this.log.warn({ backend: this.backend.kind, ...r }, wasDirty ? 'reapplied blocks after a firewall error' : 'our firewall set differed from our blocks; repaired it');
        }
      } catch (err) {
        this.recordError('repair', err);
      }
    });
  }

  /** Kernel expiry, read against the system clock, moved onto ours when a clock step has parted them. */
  private onOurClock(kernel: KernelEntry[]): KernelEntry[] {
    if (!this.options.systemNow) return kernel;
    const skew = this.now() - this.options.systemNow();
    // Below a second the two agree as well as kernel times are read (whole seconds).
    if (Math.abs(skew) < 1000) return kernel;
    return kernel.map((e) => (e.expiresAt === null ? e : { net: e.net, expiresAt: e.expiresAt + skew }));
  }

  /** Runs `task` after every flush, resync and repair queued before it. */
  private serialize<T>(task: () => Promise<T>): Promise<T> {
    const run = this.exclusive.then(task, task);
    this.exclusive = run.catch(() => undefined);
    return run;
  }

  /** Waits until every queued change has been offered to the kernel. */
  async settle(): Promise<void> {
    while (this.committing || this.commitTimer || this.backend.pending() > 0) {
      if (this.commitTimer) {
        clearTimeout(this.commitTimer);
        this.commitTimer = null;
      }
      if (this.committing) await this.committing;
      else await this.commitNow();
    }
  }

  /**
   * Waits until the changes queued so far have been offered to the kernel,
   * not those queued meanwhile: during a ban storm the queue never empties,
   * and an operator's block must not wait for the storm to end.
   */
  async committed(): Promise<void> {
    // The commit in flight may have drained the queue before our change came; any commit started after it takes ours.
    if (this.committing) await this.committing;
    if (this.backend.pending() > 0) await this.commitNow();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    // A repair in flight is not awaited: with 100k blocks it may outlast the stop deadline, and the next start reconciles anyway.
    await this.settle();
  }

  private insert(block: Block): void {
    // A journal read back or a Redis page gives each block its own copy of the same few words.
    block.rule = this.words.of(block.rule);
    block.reason = this.words.of(block.reason);
    block.source = this.words.of(block.source);
    this.blocks.set(block.net.text, block);
    this.options.record?.put(block);
    if (block.expires !== null) this.expiry.push(block.expires, block);
    this.countLength(block.net, 1);
  }

  private remove(block: Block): void {
    this.blocks.delete(block.net.text);
    this.options.record?.lift(block.net);
    this.refusals.delete(block.net.text);
    this.countLength(block.net, -1);
  }

  private countLength(net: Network, by: number): void {
    const counts = this.lengths[net.family];
    counts[net.prefix] = (counts[net.prefix] ?? 0) + by;
  }

  /** True when another active block contains this one. */
  private coveredByOther(block: Block): boolean {
    const counts = this.lengths[block.net.family];
    for (let len = block.net.prefix - 1; len >= 0; len--) {
      if (counts[len] && this.blocks.has(toNetwork(block.net, len).text)) return true;
    }
    return false;
  }

  /** The active blocks strictly inside this one: a walk of every block, and only for a network that may hold some. */
  private inside(block: Block): Block[] {
    const { family, prefix } = block.net;
    if (!this.lengths[family].some((n, len) => n > 0 && len > prefix)) return [];
    const out: Block[] = [];
    for (const b of this.blocks.values()) if (b.net.prefix > prefix && b.net.family === family && contains(block.net, b.net)) out.push(b);
    return out;
  }

  private lift(block: Block, cause: LiftCause, deleteFromKernel: boolean): void {
    const wasInKernel = !this.coveredByOther(block);
    this.remove(block);
    this.changedDuringList?.add(block.net.text);
    if (wasInKernel) {
      if (deleteFromKernel) this.backend.delete(block.net);
      // The kernel may keep it up to a second longer (whole-second timeouts) and a little batch latency.
      // Under load a commit may reach the kernel seconds after its timeout was
      // computed, and the element outlives our record by as long: give it 30 s.
      else if (cause === 'expired' && block.expires !== null) this.expiring.set(block.net.text, block.expires + LINGER_MS);
      // Blocks nested inside this one go back to the kernel on their own.
      const now = this.now();
      for (const inner of this.inside(block)) {
        if (inner.expires !== null && inner.expires > now && !this.coveredByOther(inner)) {
          this.changedDuringList?.add(inner.net.text);
          this.backend.add(inner.net, inner.expires - now, false);
        }
      }
    }
    this.lifted(block, cause);
  }

  private lifted(block: Block, cause: LiftCause): void {
    this.metrics.unblocks.inc(cause);
    this.log.info({ ip: block.net.text, rule: block.rule, source: block.source, cause }, cause === 'expired' ? 'block expired' : 'unblocked');
    if (cause !== 'expired') this.options.onLift?.(block.net, cause);
    this.options.onEvent?.('unblock', block);
  }

  private logBlock(block: Block, req: BlockRequest, msg: string): void {
    this.log.info({
      ip: block.net.text, rule: block.rule, source: block.source, hits: block.hits,
      window: req.windowMs === undefined ? undefined : formatDuration(req.windowMs),
      duration: formatSpan(req.durationMs), reason: block.reason,
      expires: block.expires === null ? null : new Date(block.expires).toISOString(),
    }, msg);
  }

  private changed(): void {
    this.options.onChange?.();
    if (this.backend.pending() > 0) this.scheduleCommit();
  }

  /**
   * A change after a quiet spell goes to the kernel at once; changes that
   * follow a commit within `batchDelayMs` (a storm) gather for that long, and
   * while a commit runs, until it is done.
   */
  private scheduleCommit(): void {
    if (this.commitTimer || this.closed) return;
    const quiet = this.committing === null && performance.now() - this.lastCommitEnded >= this.batchDelayMs;
    this.commitTimer = setTimeout(() => {
      this.commitTimer = null;
      void this.commitNow();
    }, quiet ? 0 : this.batchDelayMs);
  }

  /** Sends the queue to the kernel; one commit at a time. */
  private async commitNow(): Promise<void> {
    if (this.committing) {
      await this.committing;
      if (this.backend.pending() === 0) return;
    }
    if (this.backend.pending() === 0) return;
    const size = this.backend.pending();
    const started = performance.now();
    this.committing = (async () => {
      try {
        const result = await this.backend.commit();
        this.metrics.firewallBatches++;
        this.metrics.firewallElements += result.applied;
        this.metrics.batchSeconds.observe((performance.now() - started) / 1000);
        for (const f of result.failed) {
          this.metrics.firewallRefused++;
          this.recordError('firewall', new Error(`${f.op} ${f.net.text}: ${f.error}`));
          if (!this.giveUpOnRefusal(f.net, f.op)) this.dirty = true;
        }
        if (result.failed.length > 0) this.log.debug({ size, failed: result.failed.length }, 'batch partly refused');
      } catch (err) {
        // The decisions stay in memory; the next repair puts them in the kernel.
        this.dirty = true;
        this.recordError('firewall', err);
      } finally {
        this.committing = null;
        this.lastCommitEnded = performance.now();
      }
    })();
    await this.committing;
    if (this.backend.pending() > 0) this.scheduleCommit();
  }

  /**
   * Counts a refusal; the third in a row of the same block ends it, so a
   * block the kernel will never take (a poison element, a full set) is
   * neither retried forever nor listed as if it were in force. Returns
   * whether it was given up.
   */
  private giveUpOnRefusal(net: Network, op: 'add' | 'delete'): boolean {
    const block = this.blocks.get(net.text);
    if (op !== 'add' || !block) return false;
    const n = (this.refusals.get(net.text) ?? 0) + 1;
    if (n < REFUSALS_BEFORE_GIVING_UP) {
      this.refusals.set(net.text, n);
      return false;
    }
    this.warn.error('given-up', { ip: net.text, refusals: n }, 'the firewall refused this block again and again; gave it up');
    this.lift(block, 'refused', false);
    this.changed();
    return true;
  }

  private recordError(component: string, err: unknown): void {
    const error = describe(err);
    this.metrics.errors.inc(component);
    this.lastErrors.push({ at: new Date(this.now()).toISOString(), error });
    if (this.lastErrors.length > 10) this.lastErrors.shift();
    this.warn.error(component, { err: error }, `${component} error`);
  }

  /** True when the last commit failed and a repair is due. */
  get needsRepair(): boolean {
    return this.dirty;
  }
}

/**
 * One copy of each of the few strings many blocks share (a rule's name, an
 * import's reason): 1,000,000 blocks read back each carry their own copy
 * otherwise. Bounded: once full, new words are kept as they come.
 */
class Words {
  private readonly seen = new Map<string, string>();

  of<T extends string | null>(word: T): T {
    if (word === null) return word;
    const known = this.seen.get(word);
    if (known !== undefined) return known as T;
    if (this.seen.size < WORDS_KEPT) this.seen.set(word, word);
    return word;
  }
}
