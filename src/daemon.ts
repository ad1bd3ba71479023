import { mkdirSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import type { Network } from './address.js';
import type { BlockView } from './block.js';
import { steadyClock } from './clock.js';
import { defaultBlockMs, limiterOptions, longestRuleBlockMs } from './config/limits.js';
import type { Config } from './config/schema.js';
import type { ControlApi } from './control/api.js';
import { isAlive, listenControl, type ControlServer } from './control/server.js';
import { statusView } from './control/status.js';
import { Blocker, createRunner, selectBackend, type Backend } from './enforce/index.js';
import { Operator } from './enforce/operator.js';
import { describe, RatedError } from './errors.js';
import { AllowList, watchAddresses } from './limit/allow.js';
import { Limiter } from './limit/limiter.js';
import { createLogger, RateLimitedLog, routeConsole, type Logger } from './log.js';
import { Metrics } from './metrics.js';
import { Receivers } from './receive/index.js';
import type { RedisSharing } from './redis/index.js';
import { startupRecord } from './startup.js';
import { Journal } from './state/journal.js';
import { JournalKeeper } from './state/keeper.js';
import { StateLock } from './state/lock.js';

export interface DaemonOptions {
  readonly config: Config;
  readonly source: string;
  readonly dryRun: boolean;
  readonly socket?: string;
  readonly log?: Logger;
}

/** The running daemon: wires receivers → limiter → blocker, and owns start-up and shutdown. */
export class Daemon implements ControlApi {
  readonly log: Logger;
  private readonly c: Config;
  private readonly stats = new Metrics({ activeBlocks: () => this.blocker.size, trackedClients: () => this.limiter.tracked() });
  private readonly allow: AllowList;
  /** Block times run on a clock that an NTP step does not move, as kernel timeouts do not. */
  private readonly clock = steadyClock();
  private readonly startedAt = Date.now();
  private backend!: Backend;
  private blocker!: Blocker;
  private limiter!: Limiter;
  private operator!: Operator;
  private keeper: JournalKeeper | null = null;
  private lock: StateLock | null = null;
  private receivers: Receivers | null = null;
  private control: ControlServer | null = null;
  private redis: RedisSharing | null = null;
  private readonly timers: NodeJS.Timeout[] = [];
  private unwatch: (() => void) | null = null;
  private stopping: Promise<void> | null = null;
  private started = false;
  private repairing: Promise<void> | null = null;

  constructor(private readonly options: DaemonOptions) {
    this.c = options.config;
    this.log = options.log ?? createLogger(this.c.log.level);
    if (!options.log) routeConsole(this.log);
    this.allow = AllowList.fromConfig([...this.c.allow], this.c.allowSelf);
  }

  /** Starts everything; resolves when the daemon is protecting. Throws a RatedError on failure. */
  async start(): Promise<void> {
    const c = this.c;
    const refusals = new RateLimitedLog(this.log);
    this.backend = await selectBackend(c.firewall, createRunner(), this.options.dryRun, c.ipv6Prefix);
    // Refuse before touching the firewall: a second daemon must leave the first one's blocks alone.
    const configuredSocket = this.options.socket ?? c.control.socket;
    if (await isAlive(configuredSocket)) {
      throw new RatedError('ALREADY_RUNNING', `another rated is already running on ${configuredSocket}; stop it first (rated status)`);
    }
    await this.backend.ensure();
    // Every block, whatever its source, first reads this host's addresses again (at most once a second).
    const isAllowed = (net: Network): boolean => this.followOwn(1000) || this.allow.has(net);
    this.blocker = new Blocker({
      backend: this.backend, isAllowed, log: this.log, metrics: this.stats, now: this.clock, systemNow: Date.now,
      onLift: (net) => this.limiter.forget(net),
      onChange: () => this.keeper?.schedule(),
      reconciledBlockMs: defaultBlockMs(c),
    });
    this.operator = new Operator({
      blocker: this.blocker, isAllowed, ipv6Prefix: c.ipv6Prefix, defaultBlockMs: defaultBlockMs(c),
      forget: (net) => this.limiter.forget(net), sharing: () => this.redis, log: this.log,
    });
    this.limiter = new Limiter({
      ...limiterOptions(c), allow: this.allow, now: this.clock,
      isBlocked: (client) => this.blocker.has(client),
      onCount: c.redis ? (client, rule, at) => this.redis?.count(client, rule, at) : undefined,
      onVerdict: (v) => {
        const refused = this.operator.convict(v);
        if (refused) refusals.warn('block refused', { ip: v.client.text, err: describe(refused) }, 'block refused');
      },
    });
    const reconcileStarted = performance.now();
    const restored = this.openJournal();
    const reconciled = await this.blocker.resync(true);
    const reconcileMs = Math.round(performance.now() - reconcileStarted);
    if (c.redis) {
      // Loaded only when configured: the Redis client costs about 20 MB of memory.
      const { startSharing } = await import('./redis/index.js');
      this.redis = await startSharing(c, { local: this.blocker, isAllowed: (net) => this.allow.has(net), limiter: this.limiter, log: this.log, metrics: this.stats });
    }
    const control = await listenControl(configuredSocket, this, this.log, this.backend.kind === 'dry-run' && this.options.socket === undefined);
    this.control = control.server;
    this.receivers = new Receivers(c.receivers, (hit) => this.limiter.record(hit), this.stats, this.log);
    await this.receivers.start();
    this.blocker.start();
    if (c.allowSelf) this.unwatch = watchAddresses(() => this.followOwn(0));
    // One repair at a time: while nft hangs, the loops must not pile up processes.
    this.every(c.firewall.checkInterval, () => this.repairNow());
    this.every(1000, () => this.blocker.needsRepair && this.repairNow());
    this.every(2000, () => this.receivers?.sample());
    this.log.info(startupRecord({
      config: c, source: this.options.source, backend: this.backend, receivers: this.receivers, control: control.socket,
      redis: this.redis?.status() ?? null, restored, reconciled, reconcileMs,
    }), `rated started on ${this.options.source === 'embedded defaults' ? 'its embedded defaults' : this.options.source}`);
    this.started = true;
  }

  /** Takes the state directory and restores the journal (none in a dry run). */
  private openJournal(): ReturnType<JournalKeeper['restore']> | null {
    if (this.backend.kind === 'dry-run') return null;
    mkdirSync(this.c.state.dir, { recursive: true, mode: 0o750 });
    this.lock = new StateLock(this.c.state.dir);
    this.lock.acquire();
    this.keeper = new JournalKeeper({
      journal: new Journal(this.c.state.dir), blocks: this.blocker, offences: this.limiter,
      isAllowed: (net) => this.allow.has(net), longestRuleBlockMs: longestRuleBlockMs(this.c), now: this.clock, log: this.log,
      // Without kernel timeouts (iptables) an expired entry's rule is still there.
      dropExpired: this.backend.expiresInKernel ? undefined : (net) => this.backend.delete(net),
      onError: () => this.stats.errors.inc('journal'),
    });
    return this.keeper.restore();
  }

  /** Stops receivers, lets the batch in flight finish, leaves blocks in place unless flushOnExit. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      for (const t of this.timers) clearInterval(t);
      this.unwatch?.();
      await this.receivers?.close();
      if (this.blocker) {
        // A daemon that never started protecting has nothing of its own to flush.
        if (this.c.firewall.flushOnExit && this.started) {
          const n = await this.blocker.flush().catch((err: unknown) => (this.log.error({ err: describe(err) }, 'flush on exit failed'), 0));
          this.log.info({ lifted: n }, 'flushed every block on exit (firewall.flushOnExit)');
        }
        await this.blocker.close();
        this.keeper?.saveNow();
      }
      await this.control?.close();
      await this.redis?.close();
      this.lock?.release();
      this.log.info({ blocks: this.blocker?.size ?? 0, kept: !this.c.firewall.flushOnExit }, 'rated stopped');
    })();
    return this.stopping;
  }

  // ---- control API (SPEC §8) ----

  status(): Promise<Record<string, unknown>> {
    return Promise.resolve(statusView({
      startedAt: this.startedAt, config: this.options.source, backend: this.backend.kind,
      table: this.backend.kind === 'dry-run' ? null : this.c.firewall.table, receivers: this.receivers?.status() ?? {},
      trackedClients: this.limiter.tracked(), activeBlocks: this.blocker.size, stats: this.stats,
      redis: this.redis?.status() ?? null, lastErrors: this.blocker.lastErrors,
    }));
  }

  blocks(): Promise<BlockView[]> {
    return this.blocker.views();
  }

  block(input: { ip: string; for?: string | number; reason?: string }): Promise<{ block: BlockView; outcome: string }> {
    this.followOwn(1000);
    return this.operator.block(input);
  }

  unblock(ip: string): Promise<BlockView | null> {
    return this.operator.unblock(ip);
  }

  flush(): Promise<number> {
    return this.operator.flush();
  }

  metrics(): Promise<string> {
    return this.stats.render();
  }

  /** Checks our firewall state now and repairs it (SIGHUP); one check at a time, none before start or while stopping. */
  repairNow(): Promise<void> {
    if (!this.started || this.stopping) return Promise.resolve();
    this.followOwn(0);
    this.repairing ??= this.blocker.repair().finally(() => {
      this.repairing = null;
    });
    return this.repairing;
  }

  /**
   * Reads this host's addresses again unless the last read is younger than
   * `maxAgeMs`. A new one (a VIP, a failover address) is allowed from now on,
   * and blocks that hold it are lifted once the caller is done: a read may
   * come from inside a block decision. Returns false, for use in a test.
   */
  private followOwn(maxAgeMs: number): false {
    const added = this.allow.refreshSelf(maxAgeMs);
    if (added.length > 0) queueMicrotask(() => this.operator.liftOwn(added));
    return false;
  }

  private every(ms: number, fn: () => unknown): void {
    const failed = (err: unknown): void => this.log.error({ err: describe(err) }, 'periodic task failed');
    const t = setInterval(() => {
      try {
        const r = fn();
        if (r instanceof Promise) r.catch(failed);
      } catch (err) {
        failed(err);
      }
    }, ms);
    t.unref();
    this.timers.push(t);
  }
}
