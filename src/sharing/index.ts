import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { performance } from 'node:perf_hooks';
import type { Network } from '../address.js';
import { MAX_DURATION_MS } from '../duration.js';
import { parseBlockTarget, type Block } from '../block.js';
import type { Config } from '../config/schema.js';
import { WindowSpec } from '../limit/sliding-window.js';
import type { StoreRule } from '../limit/counter-store.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { BlockSync, type BlockSyncStats, type LocalBlocks } from './block-sync.js';
import { RedisLink, type RedisConfig, type RedisStatus } from '../redis/connection.js';
import { RedisCounterStore } from '../limit/redis-counter-store.js';
import { RedisKeys } from '../redis/keys.js';
import { SharedCounter, type SharedCounterStats } from '../limit/shared-counter.js';

export type { RedisConfig, RedisStatus } from '../redis/connection.js';
export type { LocalBlocks } from './block-sync.js';

export interface RedisSharingOptions {
  readonly config: RedisConfig;
  /** The rules in configuration order, with their block durations. */
  readonly rules: ReadonlyArray<StoreRule & { readonly blockMs: number }>;
  readonly local: LocalBlocks;
  /** The validator for block targets; null when refused. */
  readonly parseTarget: (text: string) => Network | null;
  readonly isAllowed: (net: Network) => boolean;
  /** Blocks a client that went over a rule in the shared count (the limiter's `convictShared`). */
  readonly convict: (client: Network, rule: number, hits: number) => void;
  /** Blocks read from Redis last at most this long. @default MAX_DURATION_MS (3650d, the longest `--for`) */
  readonly maxBlockMs?: number;
  readonly log: Logger;
  readonly metrics: Metrics;
}

/** `status().redis`: the connection, and what sharing has done. */
export interface RedisSharingStatus extends RedisStatus {
  /** This node's name in shared blocks and messages. */
  readonly node: string;
  readonly counting: SharedCounterStats;
  readonly blocks: BlockSyncStats;
}

/**
 * Several rated sharing counters and blocks through Redis (SPEC §9). Wires
 * the connection, the shared counter store and the block sync; the daemon
 * calls `count` for every counted hit and `published`, `unblocked`,
 * `flushed` for its own decisions. None of these ever waits on Redis.
 */
export class RedisSharing {
  readonly node: string;
  private readonly link: RedisLink;
  private readonly store: RedisCounterStore;
  private readonly counter: SharedCounter;
  private readonly sync: BlockSync;
  private readonly log: Logger;
  private syncTimer: NodeJS.Timeout | null = null;

  constructor(options: RedisSharingOptions) {
    this.log = options.log.child({ component: 'redis' });
    this.node = `${hostname().slice(0, 48)}/${randomBytes(4).toString('hex')}`;
    const keys = new RedisKeys(options.config.prefix);
    // Created before the link can call back into it.
    let sync: BlockSync | null = null;
    this.link = new RedisLink({
      config: options.config,
      log: this.log,
      metrics: options.metrics,
      channel: keys.channel,
      onMessage: (m) => sync?.onMessage(m),
      onUp: () => void sync?.resync(),
    });
    options.metrics.redisUp = 0;
    this.store = new RedisCounterStore(options.rules, this.link, keys);
    this.counter = new SharedCounter({
      store: this.store,
      blockMs: options.rules.map((r) => r.blockMs),
      isUp: () => this.link.up,
      onTrip: options.convict,
      onFailure: (err) => this.link.failed(err),
      // Every node buckets hits on the wall clock; read once at start and
      // advanced by the monotonic clock, so a clock step later moves nothing.
      wallClock: (at) => performance.timeOrigin + at,
    });
    sync = new BlockSync({
      link: this.link,
      keys,
      node: this.node,
      local: options.local,
      parseTarget: options.parseTarget,
      isAllowed: options.isAllowed,
      maxBlockMs: options.maxBlockMs ?? MAX_DURATION_MS,
      log: this.log,
    });
    this.sync = sync;
    this.syncTimer = setInterval(() => void this.sync.resync(), options.config.syncInterval);
    this.syncTimer.unref();
  }

  /**
   * Waits (at most `ms`) for the first connection and the first sync of
   * blocks, so a node that starts enforces the shared blocks at once.
   * Redis being away is not an error: rated counts locally meanwhile.
   */
  async start(ms: number): Promise<boolean> {
    const up = await this.link.waitUp(ms);
    if (up) await this.sync.resync();
    return up;
  }

  /** Counts a hit in the shared store too (sent within milliseconds, in a batch). */
  count(client: Network, rule: number, at: number): void {
    this.counter.add(client, rule, at);
  }

  /** Shares a block this node decided or extended. */
  published(block: Block | undefined): void {
    if (block && block.source !== 'cluster' && block.source !== 'reconciled') this.sync.published(block);
  }

  /** Shares an operator's unblock, and forgets the client's shared counters. */
  unblocked(net: Network): void {
    this.sync.lifted(net);
    if (this.link.up && this.store.rules.length > 0) {
      this.store.forget(net.text).catch((err: unknown) => this.link.failed(err));
    }
  }

  /**
   * This node's blocks restored from the journal: Redis may lack those
   * decided while it was away; the next sync checks them a page at a time.
   */
  recheck(blocks: Iterable<Block>): void {
    this.sync.recheck(blocks);
    void this.sync.resync();
  }

  /** Shares an operator's flush. */
  flushed(): void {
    this.sync.flushed();
  }

  status(): RedisSharingStatus {
    return { ...this.link.status(), node: this.node, counting: { ...this.counter.stats }, blocks: { ...this.sync.stats } };
  }

  async close(): Promise<void> {
    if (this.syncTimer) clearInterval(this.syncTimer);
    this.syncTimer = null;
    await this.counter.close();
    await this.link.close();
  }
}

/**
 * Starts sharing as configured (`redis:`) and waits for the first sync of
 * blocks, unless Redis is away: a node that starts enforces the shared
 * blocks at once.
 */
export async function startSharing(c: Config, parts: {
  readonly local: LocalBlocks;
  readonly isAllowed: (net: Network) => boolean;
  readonly limiter: { convictShared(client: Network, rule: number, hits: number): void };
  readonly log: Logger;
  readonly metrics: Metrics;
}): Promise<RedisSharing> {
  const config = c.redis as RedisConfig;
  const sharing = new RedisSharing({
    config,
    rules: c.rules.map((r) => ({ name: r.name, limit: r.limit, window: new WindowSpec(r.window), blockMs: r.block })),
    local: parts.local,
    parseTarget: (text) => {
      try {
        return parseBlockTarget(text);
      } catch {
        return null;
      }
    },
    isAllowed: parts.isAllowed,
    convict: (client, rule, hits) => parts.limiter.convictShared(client, rule, hits),
    log: parts.log,
    metrics: parts.metrics,
  });
  await sharing.start(Math.max(2000, config.timeout * 4));
  return sharing;
}
