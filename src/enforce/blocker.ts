import { performance } from 'node:perf_hooks';
import { contains, toNetwork, type Network } from '../address.js';
import { formatDuration } from '../duration.js';
import { describe, RatedError } from '../errors.js';
import { RateLimitedLog, type Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { Backend, KernelEntry } from './backend.js';

export type Source = 'rule' | 'manual' | 'cluster' | 'reconciled';

/** One active block. Times are wall-clock milliseconds; null where unknown. */
export interface Block {
  readonly net: Network;
  rule: string | null;
  reason: string | null;
  source: Source;
  since: number | null;
  expires: number | null;
  hits: number | null;
}

/** The JSON shape of a block (SPEC §6). */
export interface BlockView {
  ip: string;
  rule: string | null;
  reason: string | null;
  source: Source;
  since: string | null;
  expires: string | null;
  hits: number | null;
}

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
export type LiftCause = 'expired' | 'unblock' | 'flush';

export interface BlockerOptions {
  readonly backend: Backend;
  readonly isAllowed: (net: Network) => boolean;
  readonly log: Logger;
  readonly metrics: Metrics;
  /** How long decisions are gathered into one transaction. */
  readonly batchDelayMs?: number;
  /** Called after every change of the set of blocks (the journal listens). */
  readonly onChange?: () => void;
  /** Called when a block is lifted by an operator (the limiter forgets the client). */
  readonly onLift?: (net: Network, cause: LiftCause) => void;
  readonly now?: () => number;
}

/** Renders a block as SPEC §6 JSON. */
export function viewBlock(b: Block): BlockView {
  return {
    ip: b.net.text,
    rule: b.rule,
    reason: b.reason,
    source: b.source,
    since: b.since === null ? null : new Date(b.since).toISOString(),
    expires: b.expires === null ? null : new Date(b.expires).toISOString(),
    hits: b.hits,
  };
}

/**
 * Owns the active blocks: decides what the kernel must hold, applies,
 * extends and lifts blocks in batches, and repairs the kernel when it
 * disagrees. Every block is also an element with a kernel timeout, so a dead
 * daemon never leaves a permanent block behind.
 *
 * Blocks may nest (a manual /24 around a blocked address, a /64 around a
 * manual IPv6 address). Interval sets refuse overlapping elements, so only
 * the outermost blocks are kernel elements; the inner ones wait in memory and
 * go back to the kernel when the outer one ends first.
 */
export class Blocker {
  private readonly blocks = new Map<string, Block>();
  /** Blocks per `family/prefix`, to find nesting without scanning every block. */
  private readonly byLength = new Map<string, Set<Block>>();
  private readonly backend: Backend;
  private readonly log: Logger;
  private readonly warn: RateLimitedLog;
  private readonly metrics: Metrics;
  private readonly now: () => number;
  private readonly batchDelayMs: number;
  private commitTimer: NodeJS.Timeout | null = null;
  private committing: Promise<void> | null = null;
  private sweepTimer: NodeJS.Timeout | null = null;
  /** Set when a commit could not run; the next repair reapplies everything. */
  private dirty = false;
  private closed = false;
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

  get(net: Network): Block | undefined {
    return this.blocks.get(net.text);
  }

  /** The active blocks, soonest expiry last. */
  list(): Block[] {
    return [...this.blocks.values()].sort((a, b) => (b.expires ?? Infinity) - (a.expires ?? Infinity));
  }

  /**
   * Blocks `req.net` for `req.durationMs`. Allow-listed addresses are refused;
   * a block never shortens an existing one.
   */
  block(req: BlockRequest): BlockOutcome {
    if (this.options.isAllowed(req.net)) {
      throw new RatedError('REFUSED', `${req.net.text} is allow-listed (allow, allowSelf) and is never blocked`);
    }
    const now = this.now();
    const expires = now + req.durationMs;
    const existing = this.blocks.get(req.net.text);
    if (existing) {
      if (existing.expires === null || existing.expires >= expires) return 'unchanged';
      existing.expires = expires;
      existing.rule = req.rule ?? existing.rule;
      existing.reason = req.reason ?? existing.reason;
      existing.hits = req.hits ?? existing.hits;
      existing.source = req.source;
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
    if (!this.coveredByOther(block)) {
      for (const inner of this.inside(block)) this.backend.delete(inner.net);
      this.backend.add(block.net, req.durationMs, false);
    }
    this.metrics.blocks.inc(`${block.rule ?? ''}\t${block.source}`);
    this.logBlock(block, req, 'blocked');
    this.changed();
    return 'added';
  }

  /** Lifts the block of exactly `net`; returns it, or null when there was none. */
  unblock(net: Network, cause: LiftCause = 'unblock'): Block | null {
    const block = this.blocks.get(net.text);
    if (!block) return null;
    this.lift(block, cause, true);
    this.changed();
    return block;
  }

  /** Lifts every block we manage and empties our sets; returns how many blocks there were. */
  async flush(): Promise<number> {
    const all = [...this.blocks.values()];
    this.blocks.clear();
    this.byLength.clear();
    for (const b of all) this.lifted(b, 'flush');
    await this.settle();
    const inKernel = await this.backend.flush();
    this.changed();
    return Math.max(all.length, inKernel);
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

  /** Lifts the blocks whose time is up. */
  sweep(): void {
    const now = this.now();
    let any = false;
    for (const block of this.blocks.values()) {
      if (block.expires !== null && block.expires <= now) {
        this.lift(block, 'expired', !this.backend.expiresInKernel);
        any = true;
      }
    }
    if (any) this.changed();
  }

  /**
   * Makes the kernel hold exactly what we believe: adds missing elements with
   * their remaining time, renews ones whose timeout is too short, and adopts
   * elements of our sets we did not know about. Returns what it changed.
   */
  async resync(adoptUnknown: boolean): Promise<{ added: number; adopted: number; removed: number }> {
    await this.settle();
    const kernel = await this.backend.list();
    const now = this.now();
    const seen = new Map<string, KernelEntry>();
    let adopted = 0;
    let removed = 0;
    for (const entry of kernel) {
      seen.set(entry.net.text, entry);
      if (this.blocks.has(entry.net.text)) continue;
      if (this.options.isAllowed(entry.net)) {
        this.log.warn({ ip: entry.net.text }, 'removing an allow-listed address from our set');
        this.backend.delete(entry.net);
        removed++;
        continue;
      }
      if (!adoptUnknown) continue;
      this.insert({ net: entry.net, rule: null, reason: null, source: 'reconciled', since: null, expires: entry.expiresAt, hits: null });
      adopted++;
    }
    let added = 0;
    for (const block of this.blocks.values()) {
      if (block.expires !== null && block.expires <= now) continue;
      if (this.coveredByOther(block)) continue;
      const entry = seen.get(block.net.text);
      const remaining = block.expires === null ? null : block.expires - now;
      if (remaining === null) continue;
      // Kernel expiry is read in whole seconds; renew only when clearly short.
      if (!entry || (entry.expiresAt !== null && entry.expiresAt < block.expires! - 2000)) {
        this.backend.add(block.net, remaining, entry !== undefined);
        added++;
      }
    }
    if (adopted > 0) this.changed();
    await this.commitNow();
    this.dirty = false;
    return { added, adopted, removed };
  }

  /** Verifies our table and elements; repairs and reports drift. */
  async repair(): Promise<void> {
    try {
      const check = await this.backend.check();
      if (!check.intact) {
        await this.backend.ensure();
        const r = await this.resync(true);
        this.metrics.driftRepairs++;
        this.log.warn({ backend: this.backend.kind, restored: r.added }, 'our firewall table was changed by something else; restored it');
        return;
      }
      const wasDirty = this.dirty;
      const r = await this.resync(true);
      if (r.added > 0 || r.adopted > 0 || r.removed > 0) {
        if (!wasDirty) this.metrics.driftRepairs++;
        this.log.warn({ backend: this.backend.kind, ...r }, wasDirty ? 'reapplied blocks after a firewall error' : 'our firewall set differed from our blocks; repaired it');
      }
    } catch (err) {
      this.recordError('repair', err);
    }
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

  async close(): Promise<void> {
    this.closed = true;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    await this.settle();
  }

  private insert(block: Block): void {
    this.blocks.set(block.net.text, block);
    const key = `${block.net.family}/${block.net.prefix}`;
    let set = this.byLength.get(key);
    if (!set) this.byLength.set(key, (set = new Set()));
    set.add(block);
  }

  private remove(block: Block): void {
    this.blocks.delete(block.net.text);
    const key = `${block.net.family}/${block.net.prefix}`;
    const set = this.byLength.get(key);
    set?.delete(block);
    if (set?.size === 0) this.byLength.delete(key);
  }

  /** True when another active block contains this one. */
  private coveredByOther(block: Block): boolean {
    const { family, prefix } = block.net;
    for (const key of this.byLength.keys()) {
      const [f, len] = key.split('/').map(Number) as [number, number];
      if (f !== family || len >= prefix) continue;
      if (this.blocks.has(toNetwork(block.net, len).text)) return true;
    }
    return false;
  }

  /** The active blocks strictly inside this one. */
  private inside(block: Block): Block[] {
    const out: Block[] = [];
    const { family, prefix } = block.net;
    for (const [key, set] of this.byLength) {
      const [f, len] = key.split('/').map(Number) as [number, number];
      if (f !== family || len <= prefix) continue;
      for (const b of set) if (contains(block.net, b.net)) out.push(b);
    }
    return out;
  }

  private lift(block: Block, cause: LiftCause, deleteFromKernel: boolean): void {
    const wasInKernel = !this.coveredByOther(block);
    this.remove(block);
    if (wasInKernel) {
      if (deleteFromKernel) this.backend.delete(block.net);
      // Blocks nested inside this one go back to the kernel on their own.
      const now = this.now();
      for (const inner of this.inside(block)) {
        if (inner.expires !== null && inner.expires > now && !this.coveredByOther(inner)) {
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
  }

  private logBlock(block: Block, req: BlockRequest, msg: string): void {
    this.log.info({
      ip: block.net.text, rule: block.rule, source: block.source, hits: block.hits,
      window: req.windowMs === undefined ? undefined : formatDuration(req.windowMs),
      duration: formatDuration(req.durationMs), reason: block.reason,
      expires: block.expires === null ? null : new Date(block.expires).toISOString(),
    }, msg);
  }

  private changed(): void {
    this.options.onChange?.();
    if (this.backend.pending() > 0) this.scheduleCommit();
  }

  private scheduleCommit(): void {
    if (this.commitTimer || this.closed) return;
    this.commitTimer = setTimeout(() => {
      this.commitTimer = null;
      void this.commitNow();
    }, this.batchDelayMs);
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
          this.dirty = true;
          this.recordError('firewall', new Error(`${f.op} ${f.net.text}: ${f.error}`));
        }
        if (result.failed.length > 0) this.log.debug({ size, failed: result.failed.length }, 'batch partly refused');
      } catch (err) {
        // The decisions stay in memory; the next repair puts them in the kernel.
        this.dirty = true;
        this.recordError('firewall', err);
      } finally {
        this.committing = null;
      }
    })();
    await this.committing;
    if (this.backend.pending() > 0) this.scheduleCommit();
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
