import type { Network } from '../address.js';
import type { Block } from '../block.js';
import type { BlockRequest } from '../enforce/index.js';
import { describe } from '../errors.js';
import { RateLimitedLog, type Logger } from '../log.js';
import { script, type RedisLink, type Script } from '../redis/connection.js';
import type { RedisKeys } from '../redis/keys.js';
import { BLOCK, FLUSH, SNAPSHOT, UNBLOCK } from '../redis/scripts.js';

/** The scripts this module runs, by what they do. */
export const SCRIPTS = {
  block: script(BLOCK),
  unblock: script(UNBLOCK),
  flush: script(FLUSH),
  snapshot: script(SNAPSHOT),
} satisfies Record<string, Script>;

/** Shared blocks read at most, per sync; more are left in Redis and reported. */
export const MAX_SHARED_BLOCKS = 100_000;
/** How long lifts and flushes are remembered, so a copy of a block replayed after an outage stays lifted. */
const TOMBSTONE_MS = 30 * 86_400_000;
/** The largest message or stored entry read; anything longer is refused unread. */
const MAX_ENTRY_BYTES = 2048;
const RULE_NAME = /^[A-Za-z0-9_.-]{1,64}$/;
const NODE_NAME = /^[\x21-\x7e]{1,128}$/;

/** The blocks of this node, as the blocker keeps them. */
export interface LocalBlocks {
  block(req: BlockRequest): string;
  unblock(net: Network): Block | null;
  get(net: Network): Block | undefined;
  list(): Block[];
  flush(): Promise<number>;
}

/** What block sync needs of the connection. */
export type BlockLink = Pick<RedisLink, 'up' | 'run' | 'failed'>;

export interface BlockSyncOptions {
  readonly link: BlockLink;
  readonly keys: RedisKeys;
  /** This node's name in messages, so it ignores its own. */
  readonly node: string;
  readonly local: LocalBlocks;
  /** The validator for block targets (an address or network of acceptable width); null when refused. */
  readonly parseTarget: (text: string) => Network | null;
  readonly isAllowed: (net: Network) => boolean;
  /** Blocks from Redis last at most this long from now. */
  readonly maxBlockMs: number;
  readonly log: Logger;
  readonly now?: () => number;
}

/** A block as stored in Redis and published. */
interface SharedBlock {
  readonly node: string;
  readonly net: string;
  readonly expires: number;
  readonly since: number;
  readonly rule: string | null;
  readonly reason: string | null;
  readonly hits: number | null;
}

/** What happened to block entries read from Redis. */
export interface BlockSyncStats {
  /** Blocks of this node written to Redis. */
  published: number;
  /** Blocks from other nodes put in this node's firewall. */
  adopted: number;
  /** Blocks lifted here because another node lifted them. */
  lifted: number;
  /** Entries and messages refused: not an acceptable address, allow-listed, malformed. */
  refused: number;
  /** Completed resynchronisations. */
  syncs: number;
}

/**
 * Shares blocks through Redis: what this node decides is stored (with its
 * expiry) and published; what others publish, or what is stored when this
 * node starts or comes back, is enforced here with `source: cluster`.
 * Lifts and flushes leave tombstones, so a block lifted while a node was cut
 * off is not brought back by that node. Every entry read from Redis passes
 * the same validator and allow list as any other input.
 */
export class BlockSync {
  readonly stats: BlockSyncStats = { published: 0, adopted: 0, lifted: 0, refused: 0, syncs: 0 };
  private readonly link: BlockLink;
  private readonly keys: RedisKeys;
  private readonly log: Logger;
  private readonly refusals: RateLimitedLog;
  private readonly now: () => number;
  /** Lifts and a flush made while Redis was out of reach, replayed when it returns. */
  private readonly pendingLifts = new Map<string, number>();
  private pendingFlush: number | null = null;
  private syncing: Promise<void> | null = null;
  private syncAgain = false;

  constructor(private readonly options: BlockSyncOptions) {
    this.link = options.link;
    this.keys = options.keys;
    this.log = options.log;
    this.refusals = new RateLimitedLog(options.log);
    this.now = options.now ?? Date.now;
  }

  /** Stores and publishes a block this node decided or extended; never waits. */
  published(block: Block): void {
    if (!this.link.up) return; // the resync after the outage stores it
    void this.store(block).catch((err: unknown) => this.failed('store a block', err));
  }

  /** Lifts a block everywhere (an operator's `unblock` here); never waits. */
  lifted(net: Network): void {
    const at = this.now();
    this.pendingLifts.set(net.text, at);
    if (this.link.up) void this.replayLift(net.text, at).catch((err: unknown) => this.failed('share an unblock', err));
  }

  /** Lifts every block everywhere (an operator's `flush` here); never waits. */
  flushed(): void {
    const at = this.now();
    this.pendingLifts.clear();
    this.pendingFlush = at;
    if (this.link.up) void this.replayFlush(at).catch((err: unknown) => this.failed('share a flush', err));
  }

  /** Applies a message from the channel. */
  onMessage(text: string): void {
    const msg = this.parse(text, 'message');
    if (msg === null || msg.node === this.options.node) return;
    switch (msg.op) {
      case 'block':
        this.adopt(msg, 'message');
        return;
      case 'unblock': {
        const net = this.target(msg.net, msg.node);
        if (!net) return;
        const b = this.options.local.get(net);
        if (b && (b.since === null || b.since <= msg.at)) {
          this.options.local.unblock(net);
          this.stats.lifted++;
        }
        return;
      }
      case 'flush':
        this.log.info({ from: msg.node }, 'flush from another node');
        void this.options.local.flush().catch((err: unknown) => this.failed('apply a flush', err));
        return;
    }
  }

  /**
   * Brings this node and Redis into step: replays lifts made while Redis was
   * away, lifts here what others lifted meanwhile, stores this node's blocks
   * that Redis lacks, and adopts the ones it lacks itself. Calls made while
   * one runs are merged into one more run.
   */
  resync(): Promise<void> {
    if (this.syncing) {
      this.syncAgain = true;
      return this.syncing;
    }
    // Assigned before it can settle: a run that ends at once (Redis away)
    // must not clear `syncing` before it was set, or no resync runs again.
    const run = this.syncLoop();
    this.syncing = run;
    void run.finally(() => {
      if (this.syncing === run) this.syncing = null;
    });
    return run;
  }

  private async syncLoop(): Promise<void> {
    try {
      do {
        this.syncAgain = false;
        if (!this.link.up) return;
        await this.syncOnce();
        this.stats.syncs++;
        // Set by a message that arrived while this sync ran.
        // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- written by onMessage meanwhile
      } while (this.syncAgain);
    } catch (err) {
      this.failed('resynchronise blocks', err);
    }
  }

  private async syncOnce(): Promise<void> {
    if (this.pendingFlush !== null) await this.replayFlush(this.pendingFlush);
    for (const [net, at] of [...this.pendingLifts]) await this.replayLift(net, at);

    const reply = await this.link.run(SCRIPTS.snapshot, this.keys.blockKeys, [this.now(), MAX_SHARED_BLOCKS, TOMBSTONE_MS]);
    const snap = readSnapshot(reply);
    if (snap.total > MAX_SHARED_BLOCKS) {
      this.refusals.warn('redis:too-many', { stored: snap.total, read: MAX_SHARED_BLOCKS }, 'more shared blocks in Redis than rated reads; the rest are ignored');
    }

    // Lifted elsewhere while we were not listening.
    for (const b of this.options.local.list()) {
      if (b.since === null) continue;
      const liftedAt = snap.lifted.get(b.net.text);
      if ((liftedAt !== undefined && b.since <= liftedAt) || (snap.flushedAt !== null && b.since <= snap.flushedAt)) {
        this.options.local.unblock(b.net);
        this.stats.lifted++;
      }
    }

    const stored = new Map<string, SharedBlock>();
    for (const [field, json] of snap.entries) {
      const entry = this.parse(json, 'entry', field);
      if (entry === null || entry.op !== 'block') continue;
      if (entry.net !== field) {
        this.refuse('an entry stored under another address', field, entry.node);
        continue;
      }
      stored.set(entry.net, entry);
    }

    // Ours that Redis lacks (stored before it lost them, or decided while it was away).
    // Blocks adopted from others are theirs to store: stored again from here,
    // a copy would outlive a lift its node made while this one was cut off.
    const now = this.now();
    for (const b of this.options.local.list()) {
      if (b.source === 'reconciled' || b.source === 'cluster' || b.expires === null || b.expires <= now) continue;
      const s = stored.get(b.net.text);
      if (!s || s.expires < b.expires - 1000) await this.store(b);
    }

    for (const entry of stored.values()) if (entry.node !== this.options.node) this.adopt(entry, 'entry');
  }

  private async store(b: Block): Promise<void> {
    const now = this.now();
    if (b.expires === null || b.expires <= now) return;
    const record: SharedBlock = {
      node: this.options.node, net: b.net.text, expires: b.expires, since: b.since ?? now,
      rule: b.rule, reason: b.reason, hits: b.hits,
    };
    const json = JSON.stringify(record);
    const message = JSON.stringify({ v: 1, op: 'block', ...record });
    const r = await this.link.run(SCRIPTS.block, this.keys.blockKeys, [
      record.net, record.expires, record.since, json, now, this.keys.channel, message, TOMBSTONE_MS,
      now + this.options.maxBlockMs,
    ]);
    if (Number(r) === 1) this.stats.published++;
  }

  private async replayLift(net: string, at: number): Promise<void> {
    const message = JSON.stringify({ v: 1, op: 'unblock', node: this.options.node, net, at });
    await this.link.run(SCRIPTS.unblock, this.keys.blockKeys, [net, at, this.keys.channel, message, TOMBSTONE_MS]);
    if (this.pendingLifts.get(net) === at) this.pendingLifts.delete(net);
  }

  private async replayFlush(at: number): Promise<void> {
    const message = JSON.stringify({ v: 1, op: 'flush', node: this.options.node, at });
    await this.link.run(SCRIPTS.flush, this.keys.blockKeys, [at, this.keys.channel, message, TOMBSTONE_MS]);
    if (this.pendingFlush === at) this.pendingFlush = null;
  }

  /** Enforces a block from another node here, after the same checks as any other input. */
  private adopt(entry: SharedBlock, via: 'message' | 'entry'): void {
    const net = this.target(entry.net, entry.node);
    if (!net) return;
    const now = this.now();
    if (entry.expires <= now) return;
    // Lifted here, and the lift not shared yet (Redis was away): the older copy stays lifted.
    const lift = this.pendingLifts.get(net.text);
    if (lift !== undefined && entry.since <= lift) return;
    if (this.pendingFlush !== null && entry.since <= this.pendingFlush) return;
    const durationMs = Math.min(entry.expires - now, this.options.maxBlockMs);
    const existing = this.options.local.get(net);
    // Kernel expiry is whole seconds; a second either way is the same block.
    if (existing && (existing.expires === null || existing.expires >= now + durationMs - 1000)) return;
    try {
      const outcome = this.options.local.block({
        net, durationMs, source: 'cluster', rule: entry.rule, reason: entry.reason, hits: entry.hits,
      });
      if (outcome !== 'unchanged') this.stats.adopted++;
    } catch (err) {
      this.refuse(describe(err), entry.net, entry.node);
      return;
    }
    if (via === 'entry') this.log.debug({ ip: net.text, from: entry.node }, 'adopted a shared block');
  }

  /** A block target from Redis, or null (logged) when it must not reach the firewall. */
  private target(text: string, from: string): Network | null {
    const net = this.options.parseTarget(text);
    if (!net) {
      this.refuse('not an address or network rated blocks', text, from);
      return null;
    }
    if (this.options.isAllowed(net)) {
      this.refuse('allow-listed (allow, allowSelf)', net.text, from);
      return null;
    }
    return net;
  }

  private refuse(why: string, ip: string, from: string | null): void {
    this.stats.refused++;
    this.refusals.warn(`redis:${why}`, { ip: printable(ip), from: from === null ? null : printable(from), why }, 'refused a block from Redis');
  }

  /** Reads a message or stored entry; null (logged) when it is not one rated wrote. */
  private parse(text: string, kind: 'message' | 'entry', field?: string): Message | null {
    const bad = (why: string): null => {
      this.refuse(`malformed ${kind}: ${why}`, field ?? text.slice(0, 64), null);
      return null;
    };
    if (text.length > MAX_ENTRY_BYTES) return bad('too long');
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch {
      return bad('not JSON');
    }
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return bad('not an object');
    const o = raw as Record<string, unknown>;
    const node = typeof o.node === 'string' && NODE_NAME.test(o.node) ? o.node : null;
    if (node === null) return bad('no node');
    if (typeof o.net !== 'string' && o.op !== 'flush') return bad('no address');
    const net = typeof o.net === 'string' ? o.net : '';
    const op = kind === 'entry' ? 'block' : o.op;
    switch (op) {
      case 'block': {
        if (!isTime(o.expires)) return bad('no expiry');
        return {
          op: 'block', node, net, expires: o.expires,
          since: isTime(o.since) ? o.since : this.now(),
          rule: typeof o.rule === 'string' && RULE_NAME.test(o.rule) ? o.rule : null,
          reason: typeof o.reason === 'string' ? printable(o.reason).slice(0, 200) : null,
          hits: Number.isSafeInteger(o.hits) && (o.hits as number) >= 0 ? o.hits as number : null,
        };
      }
      case 'unblock':
        return isTime(o.at) ? { op: 'unblock', node, net, at: o.at } : bad('no time');
      case 'flush':
        return isTime(o.at) ? { op: 'flush', node, at: o.at } : bad('no time');
      default:
        return bad('unknown operation');
    }
  }

  private failed(what: string, err: unknown): void {
    this.link.failed(err);
    this.refusals.warn(`redis:failed:${what}`, { err: describe(err) }, `could not ${what} in Redis`);
  }
}

type Message =
  | ({ op: 'block' } & SharedBlock)
  | { op: 'unblock'; node: string; net: string; at: number }
  | { op: 'flush'; node: string; at: number };

function isTime(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v) && v > 0 && v < 1e14;
}

/** Text safe to log and list: control characters replaced, at most 200 characters. */
function printable(text: string): string {
  // Control characters are exactly what this removes.
  // eslint-disable-next-line no-control-regex
  return text.slice(0, 200).replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
}

interface Snapshot {
  readonly total: number;
  readonly entries: Array<[string, string]>;
  readonly lifted: Map<string, number>;
  readonly flushedAt: number | null;
}

function readSnapshot(reply: unknown): Snapshot {
  if (!Array.isArray(reply) || reply.length < 3) throw new Error('unexpected reply from the snapshot script');
  const [total, flat, liftedFlat, flushed] = reply as [unknown, unknown, unknown, unknown];
  const entries: Array<[string, string]> = [];
  if (Array.isArray(flat)) {
    for (let i = 0; i + 1 < flat.length; i += 2) entries.push([String(flat[i]), String(flat[i + 1])]);
  }
  const lifted = new Map<string, number>();
  if (Array.isArray(liftedFlat)) {
    for (let i = 0; i + 1 < liftedFlat.length; i += 2) lifted.set(String(liftedFlat[i]), Number(liftedFlat[i + 1]));
  }
  const f = Number(flushed);
  return { total: Number(total), entries, lifted, flushedAt: flushed !== null && flushed !== undefined && Number.isFinite(f) ? f : null };
}
