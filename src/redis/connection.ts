import { createHash } from 'node:crypto';
import { connect, isIP } from 'node:net';
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import { describe } from '../errors.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { parseRedisUrl, redactUrl, type RedisEndpoint } from '../redis-url.js';
import { keySlot } from './keys.js';

/** The `redis` section of the configuration, timeouts in milliseconds. */
export interface RedisConfig {
  readonly url?: string | undefined;
  readonly cluster?: readonly string[] | undefined;
  readonly prefix: string;
  /** Bound on every Redis operation, in milliseconds. @default 500 */
  readonly timeout: number;
  /** How often shared blocks are re-read, in case a published change was missed. @default 30000 */
  readonly syncInterval: number;
}

/** What `status` shows of Redis. */
export interface RedisStatus {
  readonly mode: 'standalone' | 'cluster';
  /** The configured URL(s), passwords replaced by `***`. */
  readonly url: string | string[];
  readonly prefix: string;
  readonly up: boolean;
  /** When `up` last changed, ISO time. */
  readonly since: string;
  readonly lastError: string | null;
}

export interface RedisLinkOptions {
  readonly config: RedisConfig;
  readonly log: Logger;
  readonly metrics: Metrics;
  /** The channel to subscribe to. */
  readonly channel: string;
  /** Called with every message published on the channel. */
  readonly onMessage: (message: string) => void;
  /** Called when Redis becomes reachable: at the first connection and after every outage. */
  readonly onUp: () => void;
}

/** A Lua script, sent by its SHA1 once Redis knows it. */
export interface Script {
  readonly lua: string;
  readonly sha: string;
}

/** Prepares a script for `RedisLink.run`. */
export function script(lua: string): Script {
  return { lua, sha: createHash('sha1').update(lua).digest('hex') };
}

type Arg = string | number;

/** The commands rated uses, common to a single server and a cluster. */
interface Commands {
  evalsha(sha: string, numKeys: number, ...args: Arg[]): Promise<unknown>;
  eval(lua: string, numKeys: number, ...args: Arg[]): Promise<unknown>;
  del(...keys: string[]): Promise<number>;
  ping(): Promise<string>;
}

/** Raised when an operation took longer than `redis.timeout`. */
export class RedisTimeout extends Error {
  constructor(ms: number) {
    super(`no answer from Redis within ${ms} ms (redis.timeout)`);
    this.name = 'RedisTimeout';
  }
}

/** Reconnection delay: doubling from 100 ms up to 5 s, with jitter so nodes do not reconnect in step. */
function backoff(times: number): number {
  return Math.min(100 * 2 ** Math.min(times, 6), 5000) + Math.floor(Math.random() * 100);
}

/**
 * The connection to Redis (one server or a cluster) and a second one for the
 * block channel. Nothing waits for Redis to come back: there is no offline
 * queue, a command is retried at most once, and every operation is bounded by
 * `redis.timeout`. Tracks whether Redis is reachable, warns once per outage,
 * and calls `onUp` when it is reachable again.
 */
export class RedisLink {
  readonly mode: 'standalone' | 'cluster';
  private readonly client: Redis | Cluster;
  private readonly subscriber: Redis | Cluster;
  private readonly commands: Commands;
  private readonly log: Logger;
  private readonly timeoutMs: number;
  private upNow = false;
  private changedAt = Date.now();
  private lastErrorText: string | null = null;
  /** True once the current outage has been logged, so it is logged once. */
  private outageLogged = false;
  /** The error with which Redis refused rated (protected mode, a wrong password), until it accepts it again. */
  private refusal: string | null = null;
  private refusalLogged = false;
  private probeTimer: NodeJS.Timeout | null = null;
  /** Healthy probes in a row since the outage began. */
  private healthyProbes = 0;
  /** Probes in a row that got no answer at all while the connections looked open. */
  private unansweredProbes = 0;
  private probing = false;
  private closed = false;

  constructor(private readonly options: RedisLinkOptions) {
    const c = options.config;
    this.log = options.log;
    this.timeoutMs = c.timeout;
    const common = {
      // Fail at once while disconnected instead of queueing (HARDENING F10).
      enableOfflineQueue: false,
      enableAutoPipelining: true,
    } as const;
    const perConnection: RedisOptions = {
      commandTimeout: c.timeout,
      connectTimeout: Math.max(1000, c.timeout * 2),
      maxRetriesPerRequest: 1,
      // A command that went unanswered when the connection dropped is not sent again later.
      autoResendUnfulfilledCommands: false,
      connectionName: 'rated',
    };
    if (c.cluster) {
      this.mode = 'cluster';
      const nodes = c.cluster.map((u) => endpoint(u));
      const first = nodes[0] as RedisEndpoint;
      const options: ClusterOptions = {
        ...common,
        clusterRetryStrategy: backoff,
        slotsRefreshTimeout: Math.max(1000, c.timeout * 2),
        redisOptions: { ...perConnection, ...auth(first) },
      };
      const startup = nodes.map((n) => ({ host: n.host, port: n.port }));
      this.client = new Cluster(startup, options);
      this.subscriber = new Cluster(startup, options);
    } else {
      this.mode = 'standalone';
      const e = endpoint(c.url ?? '');
      const options: RedisOptions = {
        ...common, ...perConnection, ...auth(e),
        host: e.host, port: e.port, db: e.db, retryStrategy: backoff,
      };
      this.client = new Redis(options);
      this.subscriber = new Redis(options);
    }
    this.commands = this.client;
    // A cluster is "ready" as soon as its slot map is read, which a failover
    // in progress does not prevent: there it is up only when it covers every slot.
    this.client.on('ready', () => {
      if (this.mode === 'standalone') this.markUp();
      else this.confirmUp();
    });
    this.client.on('close', () => {
      if (!this.closed) this.markDown(new Error(this.lastErrorText ?? 'connection closed'));
    });
    this.client.on('error', (err: Error) => {
      this.noteError(err);
      if (this.client.status !== 'ready') this.markDown(err);
    });
    this.subscriber.on('error', (err: Error) => this.noteError(err));
    this.subscriber.on('ready', () => {
      this.subscriber.subscribe(options.channel).then(() => {
        // Changes published while we were not listening are picked up by a resync.
        if (this.upNow) options.onUp();
      }, (err: unknown) => this.noteError(err));
    });
    this.subscriber.on('message', (_channel: string, message: string) => options.onMessage(message));
  }

  /** True while Redis answers. */
  get up(): boolean {
    return this.upNow;
  }

  /** Resolves when Redis is reachable, or after `ms` either way. */
  async waitUp(ms: number): Promise<boolean> {
    if (this.upNow) return true;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      timer.unref();
      const poll = setInterval(() => {
        if (this.upNow) done();
      }, 20);
      poll.unref();
      function done(): void {
        clearTimeout(timer);
        clearInterval(poll);
        resolve();
      }
    });
    return this.upNow;
  }

  /** Runs a script, bounded by `redis.timeout`. Rejects when Redis is down or slow. */
  async run(s: Script, keys: readonly string[], args: readonly Arg[]): Promise<unknown> {
    return this.bounded(async () => {
      try {
        return await this.commands.evalsha(s.sha, keys.length, ...keys, ...args);
      } catch (err) {
        if (!(err instanceof Error && err.message.startsWith('NOSCRIPT'))) throw err;
        return this.commands.eval(s.lua, keys.length, ...keys, ...args);
      }
    });
  }

  /**
   * The node ("host:port") that holds `key`'s slot in a cluster, as the
   * client last read the slot map; null on a single server or when unknown.
   */
  nodeOf(key: string): string | null {
    if (!(this.client instanceof Cluster)) return null;
    return this.client.slots[keySlot(key)]?.[0] ?? null;
  }

  /** Deletes keys that share one cluster slot, bounded by `redis.timeout`. */
  async del(keys: readonly string[]): Promise<void> {
    if (keys.length > 0) await this.bounded(() => this.commands.del(...keys));
  }

  /**
   * Records that an operation failed. When Redis did not answer (or a cluster
   * slot has no master), it counts as down until a probe gets an answer; an
   * error reply to one command is only remembered.
   */
  failed(err: unknown): void {
    if (isOutage(err)) this.markDown(err);
    else this.noteError(err);
  }

  /**
   * Remembers an error. When Redis refuses rated itself (protected mode, a
   * wrong password) that cause is said once, with what to do, and is not
   * hidden by the broken pipes that follow it.
   */
  private noteError(err: unknown): void {
    const text = describe(err);
    const fix = redisAdvice(text);
    if (fix === null) {
      if (this.refusal === null || !/EPIPE|ECONNRESET|closed|ended/i.test(text)) this.lastErrorText = text;
      return;
    }
    this.refusal = text;
    this.lastErrorText = text;
    if (this.refusalLogged) return;
    this.refusalLogged = true;
    this.log.warn({ redis: this.status().url, err: text, fix }, 'Redis refuses rated');
  }

  status(): RedisStatus {
    const c = this.options.config;
    return {
      mode: this.mode,
      url: c.cluster ? c.cluster.map(redactUrl) : redactUrl(c.url ?? ''),
      prefix: c.prefix,
      up: this.upNow,
      since: new Date(this.changedAt).toISOString(),
      lastError: this.lastErrorText,
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.probeTimer) clearInterval(this.probeTimer);
    this.probeTimer = null;
    // disconnect() rather than quit(): a shutdown must not wait on Redis.
    this.subscriber.disconnect();
    this.client.disconnect();
  }

  private async bounded<T>(op: () => Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new RedisTimeout(this.timeoutMs)), this.timeoutMs);
      timer.unref();
    });
    try {
      return await Promise.race([op(), deadline]);
    } finally {
      clearTimeout(timer);
    }
  }

  private markUp(): void {
    if (this.upNow || this.closed) return;
    this.upNow = true;
    this.changedAt = Date.now();
    this.options.metrics.redisUp = 1;
    if (this.probeTimer) clearInterval(this.probeTimer);
    this.probeTimer = null;
    this.refusal = null;
    this.refusalLogged = false;
    const status = this.status();
    if (this.outageLogged) this.log.info({ redis: status.url }, 'Redis is reachable again; resynchronising blocks');
    else this.log.info({ redis: status.url, mode: this.mode }, 'connected to Redis');
    this.outageLogged = false;
    this.options.onUp();
  }

  private markDown(err: unknown): void {
    if (this.closed) return;
    this.noteError(err);
    if (this.upNow) {
      this.upNow = false;
      this.changedAt = Date.now();
    }
    this.options.metrics.redisUp = 0;
    if (!this.outageLogged) {
      this.outageLogged = true;
      this.log.warn({ redis: this.status().url, err: this.lastErrorText },
        'Redis is unreachable; counting locally and enforcing blocks here until it returns');
      // A server that takes the connection and drops it at once may be refusing
      // rated (protected mode), which the client library reports as a broken pipe.
      if (this.refusal === null && /EPIPE|ECONNRESET|closed/i.test(this.lastErrorText ?? '')) void this.askWhy();
    }
    this.startProbe();
  }

  /** Asks the first server with a bare PING what it says to a newcomer; a refusal is noted with its fix. */
  private async askWhy(): Promise<void> {
    const c = this.options.config;
    const e = parseRedisUrl(c.url ?? c.cluster?.[0] ?? '');
    if (!e || e.tls) return;
    const first = await new Promise<string>((resolve) => {
      const socket = connect(e.port, e.host);
      let text = '';
      const done = (): void => {
        socket.destroy();
        resolve(text.split('\r\n')[0] ?? '');
      };
      socket.setTimeout(this.timeoutMs * 2, done);
      socket.on('connect', () => socket.write('PING\r\n'));
      socket.on('data', (d: Buffer) => {
        text += d.toString('latin1');
        if (text.includes('\r\n')) done();
      });
      socket.on('error', done);
      socket.on('close', done);
    });
    if (first.startsWith('-')) this.noteError(new Error(first.slice(1, 300)));
  }

  /** While down, asks every master for a PING each second; all answering means up again. */
  private startProbe(): void {
    if (this.probeTimer || this.closed) return;
    this.healthyProbes = 0;
    this.probeTimer = setInterval(() => {
      if (this.probing || this.upNow) return;
      this.probing = true;
      this.probe().then((ok) => {
        this.probing = false;
        this.healthyProbes = ok ? this.healthyProbes + 1 : 0;
        // A cluster whose lost master has just come back answers before its
        // connections settle: two healthy probes a second apart, not one.
        if (ok && (this.mode === 'standalone' || this.healthyProbes >= 2)) this.markUp();
        // A partition drops packets without closing anything: the open
        // connections wait on TCP retransmissions that back off for minutes
        // after it heals. After five silent seconds, connect afresh.
        if (!ok && this.unansweredProbes >= 5) this.reconnect();
      }, () => {
        this.probing = false;
        this.healthyProbes = 0;
      });
    }, 1000);
    this.probeTimer.unref();
  }

  /** A cluster that says it is ready: up once a probe finds every slot covered (after an outage, by the probe loop). */
  private confirmUp(): void {
    void this.probe().then((ok) => {
      if (ok && !this.outageLogged) this.markUp();
      else if (!ok) this.markDown(new Error(this.lastErrorText ?? 'Redis Cluster does not cover every slot'));
      else this.startProbe();
    });
  }

  /**
   * Every known master answers, and in a cluster the cluster itself says
   * `cluster_state:ok` (every slot has a master): during a failover the
   * masters that answer may not hold the dead one's slots yet.
   */
  private async probe(): Promise<boolean> {
    if (this.client.status !== 'ready') return false;
    const masters = this.client instanceof Cluster ? this.client.nodes('master') : null;
    const targets: Array<{ ping(): Promise<string> }> = masters ?? [this.client];
    if (targets.length === 0) return false;
    try {
      await this.bounded(() => Promise.all(targets.map((t) => t.ping())));
      this.unansweredProbes = 0;
      if (masters !== null) {
        const states = await this.bounded(() => Promise.all(masters.map((m) => m.cluster('INFO'))));
        const failing = states.find((info) => !/^cluster_state:ok\r?$/m.test(info));
        if (failing !== undefined) {
          this.lastErrorText = `Redis Cluster state is ${/^cluster_state:(\w+)/m.exec(failing)?.[1] ?? 'unknown'}: a master's slots have no master yet`;
          return false;
        }
        // For cluster-node-timeout after a master dies the others still say
        // ok, and the client has already dropped the dead one from its pool:
        // every slot's owner must be one of the masters that just answered.
        const asked = masters[0];
        if (asked === undefined) return false;
        const slots: unknown = await this.bounded(() => asked.cluster('SLOTS'));
        const missing = unansweredOwner(slots, asked.options.host ?? '', new Set(masters.map((m) => `${m.options.host ?? ''}:${String(m.options.port ?? '')}`)));
        if (missing !== null) {
          this.lastErrorText = `Redis Cluster: ${missing}`;
          // Nothing is sent while down, so nothing else makes the client look
          // for the lost master again: ask for the slot map, which re-adds it.
          if (this.client instanceof Cluster) this.client.refreshSlotsCache();
          return false;
        }
      }
      return true;
    } catch (err) {
      this.unansweredProbes = err instanceof RedisTimeout ? this.unansweredProbes + 1 : 0;
      this.noteError(err);
      return false;
    }
  }

  /** Drops the connections that no longer answer and makes new ones (with the usual backoff). */
  private reconnect(): void {
    this.unansweredProbes = 0;
    if (this.closed) return;
    this.log.debug({ redis: this.status().url }, 'no answer on open connections: connecting afresh');
    this.client.disconnect(true);
    this.subscriber.disconnect(true);
  }
}

const CLUSTER_SLOTS = 16384;

/**
 * Why a `CLUSTER SLOTS` reply shows data out of reach: a slot owner that is
 * not among the masters that answered ("host:port"), or slots with no owner;
 * null when every slot is held by a master that answered. An owner announced
 * without a host is on the host that was asked.
 */
export function unansweredOwner(reply: unknown, askedHost: string, answered: ReadonlySet<string>): string | null {
  if (!Array.isArray(reply)) return 'CLUSTER SLOTS gave no slot map';
  let covered = 0;
  for (const range of reply as unknown[]) {
    if (!Array.isArray(range)) continue;
    const [from, to, owner] = range as unknown[];
    if (typeof from !== 'number' || typeof to !== 'number' || !Array.isArray(owner)) continue;
    const [host, port] = owner as unknown[];
    const key = `${typeof host === 'string' && host !== '' && host !== '?' ? host : askedHost}:${String(port)}`;
    if (!answered.has(key)) return `master ${key}, which holds slots ${String(from)}-${String(to)}, does not answer`;
    covered += to - from + 1;
  }
  return covered >= CLUSTER_SLOTS ? null : `${String(CLUSTER_SLOTS - covered)} slots have no master`;
}

/** What to do when Redis refuses rated itself rather than being out of reach; null for other errors. */
export function redisAdvice(text: string): string | null {
  if (/protected mode|^DENIED/i.test(text)) {
    return 'Redis is in protected mode and refuses clients from other addresses: set requirepass in redis.conf and put the password in redis.url (redis://:PASSWORD@host:6379/0), or bind Redis where rated may reach it';
  }
  if (/WRONGPASS|invalid username-password|invalid password/i.test(text)) {
    return 'Redis refused the password: check the one in redis.url (redis://[USER]:PASSWORD@host:6379/0) against requirepass or the ACL user';
  }
  if (/NOAUTH|Authentication required/i.test(text)) return 'Redis requires a password: put it in redis.url (redis://:PASSWORD@host:6379/0)';
  if (/NOPERM/i.test(text)) return 'the Redis ACL user in redis.url lacks a permission rated needs (EVALSHA, HSET, ZADD, PUBLISH, SUBSCRIBE): grant it';
  return null;
}

// Error replies that mean the data is out of reach, not that one command was wrong.
const OUTAGE_REPLIES = /^(CLUSTERDOWN|TRYAGAIN|MOVED|ASK|LOADING|MASTERDOWN|READONLY|BUSY)\b/;

/** True when an error means Redis is out of reach rather than that one command was refused. */
export function isOutage(err: unknown): boolean {
  if (!(err instanceof Error)) return true;
  if (err.name === 'ReplyError') return OUTAGE_REPLIES.test(err.message);
  return true;
}

function endpoint(url: string): RedisEndpoint {
  const e = parseRedisUrl(url);
  // The configuration was validated; this is a programming error.
  if (!e) throw new Error(`not a Redis URL: ${redactUrl(url)}`);
  return e;
}

function auth(e: RedisEndpoint): Partial<RedisOptions> {
  return {
    ...(e.username !== undefined ? { username: e.username } : {}),
    ...(e.password !== undefined ? { password: e.password } : {}),
    // A name to check the certificate against; an IP address is checked as such.
    ...(e.tls ? { tls: isIP(e.host) === 0 ? { servername: e.host } : {} } : {}),
  };
}
