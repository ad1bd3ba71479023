import type { Network } from '../address.js';
import { DECIDED_HERE, type Block } from '../block.js';
import type { BlockRequest } from '../enforce/index.js';
import { describe } from '../errors.js';
import { RateLimitedLog, type Logger } from '../log.js';
import { script, type RedisLink, type Script } from '../redis/connection.js';
import type { RedisKeys } from '../redis/keys.js';
import { randomBytes } from 'node:crypto';
import { BLOCK, CHANGES, FLUSH, LACKING, SCAN_BLOCKS, UNBLOCK } from '../redis/scripts.js';

/** The scripts this module runs, by what they do. */
export const SCRIPTS = {
  block: script(BLOCK),
  unblock: script(UNBLOCK),
  flush: script(FLUSH),
  scan: script(SCAN_BLOCKS),
  changes: script(CHANGES),
  lacking: script(LACKING),
} satisfies Record<string, Script>;

/** Shared blocks read at most by a full read (firewall.maxBlocks' default); more are left in Redis and reported. */
export const MAX_SHARED_BLOCKS = 1_048_576;
/** Entries per script call when reading, checking or storing: each call is short, so Redis serves others between them. */
const PAGE = 2000;
/**
 * Changes are read from this long before the last read began, on the
 * server's clock: a replica promoted after a failover may run a little behind.
 */
const CHANGES_OVERLAP_MS = 5000;
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
  /** Every block, in no particular order. */
  all(): Block[];
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
  /** This node's blocks Redis may lack (decided while it was away, a store that failed): checked and stored at the next sync. */
  private readonly unsynced = new Map<string, Network>();
  /** Where the next sync reads changes from (the server's ms), or null for a full read. */
  private cursor: number | null = null;
  /** The Redis data the cursor belongs to; another epoch means the data was lost and everything is read and stored again. */
  private epoch: string | null = null;
  /** The last cluster-wide flush applied here. */
  private flushSeen: number | null = null;
  /** The epoch this node offers when Redis has none. */
  private readonly freshEpoch = randomBytes(8).toString('hex');
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
    if (!this.link.up) {
      // The sync after the outage stores it.
      this.unsynced.set(block.net.text, block.net);
      return;
    }
    void this.store(block).catch((err: unknown) => {
      this.unsynced.set(block.net.text, block.net);
      this.failed('store a block', err);
    });
  }

  /**
   * Blocks of this node that Redis may lack (those restored from the
   * journal at start): checked against Redis at the next sync, a page of
   * them per call, and stored where it lacks them.
   */
  recheck(blocks: Iterable<Block>): void {
    for (const b of blocks) if (DECIDED_HERE.has(b.source)) this.unsynced.set(b.net.text, b.net);
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

  /**
   * One sync: lifts to replay, then what changed in Redis since the last
   * sync (everything at the first one, or when Redis's data was lost), then
   * this node's blocks Redis may lack. Its cost follows the changes, never
   * the number of blocks.
   */
  private async syncOnce(): Promise<void> {
    if (this.pendingFlush !== null) await this.replayFlush(this.pendingFlush);
    for (const [net, at] of [...this.pendingLifts]) await this.replayLift(net, at);
    if (this.cursor === null) await this.readAll();
    else await this.readChanges(this.cursor);
    await this.storeUnsynced();
  }

  /** Reads every shared block, a page at a time. */
  private async readAll(): Promise<void> {
    let cursor = '0';
    let read = 0;
    let startedAt: number | null = null;
    do {
      const page = readScanPage(await this.link.run(SCRIPTS.scan, this.keys.blockKeys, [this.now(), TOMBSTONE_MS, cursor, PAGE, this.freshEpoch]));
      if (startedAt === null) {
        startedAt = page.serverMs;
        this.newEpoch(page.epoch);
        this.applyFlush(page.flushedAt);
        for (const [net, at] of page.lifted) this.applyLift(net, at);
        if (page.total > MAX_SHARED_BLOCKS) {
          this.refusals.warn('redis:too-many', { stored: page.total, read: MAX_SHARED_BLOCKS }, 'more shared blocks in Redis than rated reads; the rest are ignored');
        }
      }
      for (const [field, json] of page.entries) this.applyEntry(field, json);
      read += page.entries.length;
      cursor = page.cursor;
    } while (cursor !== '0' && read < MAX_SHARED_BLOCKS);
    this.cursor = startedAt - CHANGES_OVERLAP_MS;
  }

  /** Reads the blocks stored and lifted since `since`, a page at a time, oldest change first. */
  private async readChanges(since: number): Promise<void> {
    let from = since;
    let skip = 0;
    let startedAt: number | null = null;
    for (;;) {
      const page = readChangesPage(await this.link.run(SCRIPTS.changes, this.keys.blockKeys, [this.now(), TOMBSTONE_MS, from, skip, PAGE, this.freshEpoch]));
      if (startedAt === null) {
        startedAt = page.serverMs;
        if (this.epoch !== page.epoch) {
          // Redis lost its data (a restart, a failover without persistence): read it all, store ours again.
          this.newEpoch(page.epoch);
          await this.readAll();
          return;
        }
        this.applyFlush(page.flushedAt);
      }
      for (const c of page.changes) {
        if (c.liftedAt !== null) this.applyLift(c.net, c.liftedAt);
        if (c.json !== null) this.applyEntry(c.net, c.json);
      }
      if (page.changes.length < PAGE) break;
      // The next page starts at the last change's time, past those of that time already read.
      const last = (page.changes.at(-1) as { at: number }).at;
      const sameTime = page.changes.filter((c) => c.at === last).length;
      skip = last === from ? skip + sameTime : sameTime;
      from = last;
    }
    this.cursor = startedAt - CHANGES_OVERLAP_MS;
  }

  /** Takes note of the data's epoch; a new one means every block of ours is to be stored again. */
  private newEpoch(epoch: string): void {
    if (this.epoch !== null && this.epoch !== epoch) this.recheck(this.options.local.all());
    this.epoch = epoch;
  }

  /** A cluster-wide flush not yet applied here: lifts what was decided before it (rare: a walk of every block). */
  private applyFlush(flushedAt: number | null): void {
    if (flushedAt === null || flushedAt === this.flushSeen) return;
    this.flushSeen = flushedAt;
    for (const b of this.options.local.all()) {
      if (b.since !== null && b.since <= flushedAt) {
        this.options.local.unblock(b.net);
        this.stats.lifted++;
      }
    }
  }

  /** A block lifted elsewhere while this node was not listening. */
  private applyLift(text: string, at: number): void {
    const net = this.options.parseTarget(text);
    if (!net) return;
    const b = this.options.local.get(net);
    if (b !== undefined && b.since !== null && b.since <= at) {
      this.options.local.unblock(b.net);
      this.stats.lifted++;
    }
  }

  /** A stored entry: adopted when another node's. */
  private applyEntry(field: string, json: string): void {
    const entry = this.parse(json, 'entry', field);
    if (entry === null || entry.op !== 'block') return;
    if (entry.net !== field) {
      this.refuse('an entry stored under another address', field, entry.node);
      return;
    }
    if (entry.node !== this.options.node) this.adopt(entry, 'entry');
  }

  /**
   * Stores this node's blocks that Redis lacks: checked a page at a time
   * (one script call per page), and only those it lacks are stored. Blocks
   * adopted from others are theirs to store: stored again from here, a copy
   * would outlive a lift its node made while this one was cut off.
   */
  private async storeUnsynced(): Promise<void> {
    const now = this.now();
    const candidates: Block[] = [];
    for (const [text, net] of this.unsynced) {
      this.unsynced.delete(text);
      const b = this.options.local.get(net);
      if (b && DECIDED_HERE.has(b.source) && b.expires !== null && b.expires > now) candidates.push(b);
    }
    for (let i = 0; i < candidates.length; i += PAGE) {
      const page = candidates.slice(i, i + PAGE);
      try {
        const lacking = await this.link.run(SCRIPTS.lacking, this.keys.blockKeys, page.flatMap((b) => [b.net.text, b.expires ?? 0]));
        const stores = (Array.isArray(lacking) ? lacking : []).map((k) => page[Number(k) - 1]).filter((b) => b !== undefined);
        await Promise.all(stores.map((b) => this.store(b)));
      } catch (err) {
        // Checked again at the next sync.
        for (const b of candidates.slice(i)) this.unsynced.set(b.net.text, b.net);
        throw err;
      }
    }
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

interface ScanPage {
  readonly cursor: string;
  readonly entries: Array<[string, string]>;
  readonly lifted: Array<[string, number]>;
  readonly serverMs: number;
  readonly flushedAt: number | null;
  readonly epoch: string;
  readonly total: number;
}

interface Change {
  readonly net: string;
  /** The server's ms of the change. */
  readonly at: number;
  readonly json: string | null;
  readonly liftedAt: number | null;
}

interface ChangesPage {
  readonly changes: Change[];
  readonly serverMs: number;
  readonly flushedAt: number | null;
  readonly epoch: string;
}

function pairs(flat: unknown): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  if (Array.isArray(flat)) for (let i = 0; i + 1 < flat.length; i += 2) out.push([String(flat[i]), String(flat[i + 1])]);
  return out;
}

function timeOrNull(v: unknown): number | null {
  const n = Number(v);
  return v !== null && v !== undefined && v !== false && Number.isFinite(n) ? n : null;
}

function readScanPage(reply: unknown): ScanPage {
  if (!Array.isArray(reply) || reply.length < 7) throw new Error('unexpected reply from the block scan script');
  const [cursor, flat, liftedFlat, serverMs, flushed, epoch, total] = reply as unknown[];
  return {
    cursor: String(cursor),
    entries: pairs(flat),
    lifted: pairs(liftedFlat).map(([net, at]) => [net, Number(at)]),
    serverMs: Number(serverMs),
    flushedAt: timeOrNull(flushed),
    epoch: String(epoch),
    total: Number(total),
  };
}

function readChangesPage(reply: unknown): ChangesPage {
  if (!Array.isArray(reply) || reply.length < 4) throw new Error('unexpected reply from the block changes script');
  const [flat, serverMs, flushed, epoch] = reply as unknown[];
  const changes: Change[] = [];
  if (Array.isArray(flat)) {
    const f = flat as unknown[];
    for (let i = 0; i + 3 < f.length; i += 4) {
      const json = f[i + 2];
      changes.push({
        net: String(f[i]), at: Number(f[i + 1]),
        json: typeof json === 'string' ? json : null, liftedAt: timeOrNull(f[i + 3]),
      });
    }
  }
  return { changes, serverMs: Number(serverMs), flushedAt: timeOrNull(flushed), epoch: String(epoch) };
}
