import type { BatchResult, BlockView, ListQuery, ManualBlock } from './block.js';
import { Intervals, steadyClock } from './clock.js';
import type { Config } from './config/schema.js';
import type { ControlApi } from './control/api.js';
import { listenControl, refuseIfRunning } from './control/server.js';
import { statusView, topView, type TopView } from './control/status.js';
import { assemble, type Core } from './core.js';
import { createRunner, selectBackend, type Backend } from './enforce/index.js';
import { describe } from './errors.js';
import { explain } from './explain.js';
import { Hooks } from './hooks.js';
import { AllowList, watchAddresses } from './limit/allow.js';
import { createLogger, routeConsole, type Logger } from './log.js';
import { Metrics } from './metrics.js';
import { Receivers } from './receive/index.js';
import type { RedisSharing } from './sharing/index.js';
import { MemorySettler } from './memory.js';
import { restoreBehind, startupRecord } from './startup.js';
import type { RestoreSummary } from './state/keeper.js';

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
  private readonly stats = new Metrics({ activeBlocks: () => this.core.blocker.size, trackedClients: () => this.core.limiter.tracked() });
  private readonly allow: AllowList;
  private readonly startedAt = Date.now();
  private readonly intervals = new Intervals((err) => this.log.error({ err: describe(err) }, 'periodic task failed'));
  private backend!: Backend;
  private core!: Core;
  private receivers: Receivers | null = null;
  private control: { socket: string; close: () => Promise<void> } | null = null;
  private redis: RedisSharing | null = null;
  private stopping: Promise<void> | null = null;
  private started = false;
  /** The journal's restore, behind the receivers; `ready` once reconciled with the kernel too. */
  private restored: Promise<RestoreSummary | null> = Promise.resolve(null);
  private ready = false;
  private hooks: Hooks | null = null;
  private memory: MemorySettler | null = null;

  constructor(private readonly options: DaemonOptions) {
    this.c = options.config;
    this.log = options.log ?? createLogger(this.c.log.level);
    if (!options.log) routeConsole(this.log);
    this.allow = AllowList.fromConfig([...this.c.allow], this.c.allowSelf);
  }

  /** Starts everything; resolves when the daemon is protecting. Throws a RatedError on failure. */
  async start(): Promise<void> {
    const c = this.c;
    this.backend = await selectBackend(c.firewall, createRunner(), this.options.dryRun, c.ipv6Prefix);
    // Refuse before touching the firewall: a second daemon must leave the first one's blocks alone.
    const socket = this.options.socket ?? c.control.socket;
    await refuseIfRunning(socket);
    await this.backend.ensure();
    if (this.backend.kind === 'nftables' || this.backend.kind === 'ipset') this.stats.maxBlocks = c.firewall.maxBlocks;
    this.hooks = Hooks.fromConfig(c.hooks, this.log, this.stats);
    // Block times run on a clock that an NTP step does not move, as kernel timeouts do not. Every block,
    // whatever its source, first reads this host's addresses again (at most once a second).
    this.core = assemble({
      config: c, backend: this.backend, allow: this.allow, log: this.log, metrics: this.stats, now: steadyClock(), autosave: true,
      followSelf: true, sharing: () => this.redis, hooks: this.hooks,
    });
    const { blocker, limiter, keeper } = this.core;
    keeper?.lock();
    if (c.redis) { // loaded only when configured: the Redis client costs about 20 MB of memory
      const { startSharing } = await import('./sharing/index.js');
      this.redis = await startSharing(c, { local: blocker, isAllowed: (net) => this.allow.has(net), limiter, log: this.log, metrics: this.stats });
    }
    const control = this.control = await listenControl(socket, this, this.log, this.backend.kind === 'dry-run' && this.options.socket === undefined, c.metrics.listen);
    this.receivers = new Receivers(c.receivers, (hit) => limiter.record(hit), this.stats, this.log);
    await this.receivers.start();
    blocker.start();
    if (c.allowSelf) this.intervals.also(watchAddresses(() => this.core.operator.followOwn(0)));
    this.intervals.every(c.firewall.checkInterval, () => this.repairNow());
    this.intervals.every(1000, () => blocker.needsRepair && this.repairNow());
    this.intervals.every(2000, () => this.receivers?.sample());
    this.log.info(startupRecord({
      config: c, source: this.options.source, backend: this.backend, receivers: this.receivers, control: control.socket, redis: this.redis?.status() ?? null,
    }), `rated started on ${this.options.source === 'embedded defaults' ? 'its embedded defaults' : this.options.source}`);
    this.started = true;
    this.memory = new MemorySettler({ decisions: () => this.stats.decisions(), onCollected: (c) => this.log.debug(c, 'gave memory back after a burst') });
    // Behind the receivers (seconds at 1,000,000 blocks). A check before `ready` would adopt journal blocks not read yet as strangers.
    this.restored = restoreBehind({ keeper, blocker, redis: this.redis, log: this.log, onReconciled: () => (this.ready = true) });
  }

  /** Stops receivers, lets the batch in flight finish, leaves blocks in place unless flushOnExit. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.intervals.clear();
      this.memory?.close();
      await this.receivers?.close();
      // Undefined when start() failed before the core was built.
      const core = this.core as Core | undefined;
      // A daemon that never started protecting has nothing of its own to flush.
      if (core && this.c.firewall.flushOnExit && this.started) {
        const n = await core.blocker.flush().catch((err: unknown) => (this.log.error({ err: describe(err) }, 'flush on exit failed'), 0));
        this.log.info({ lifted: n }, 'flushed every block on exit (firewall.flushOnExit)');
      }
      await core?.blocker.close();
      (this.backend as Backend | undefined)?.close?.();
      // Runs still queued are dropped; those in flight are killed: a stop takes at most 5 s.
      this.hooks?.close();
      await this.control?.close();
      await this.redis?.close();
      await core?.keeper?.close();
      this.log.info({ blocks: core?.blocker.size ?? 0, kept: !this.c.firewall.flushOnExit }, 'rated stopped');
    })();
    return this.stopping;
  }

  /** The control API (SPEC §8). */
  private get now(): { startedAt: number; backend: string; stats: Metrics; trackedClients: number; activeBlocks: number } {
    return { startedAt: this.startedAt, backend: this.backend.kind, stats: this.stats, trackedClients: this.core.limiter.tracked(), activeBlocks: this.core.blocker.size };
  }

  status = (): Promise<Record<string, unknown>> => Promise.resolve(statusView({
    ...this.now, config: this.options.source, table: this.backend.kind === 'dry-run' ? null : this.c.firewall.table,
    receivers: this.receivers?.status() ?? {}, redis: this.redis?.status() ?? null, lastErrors: this.core.blocker.lastErrors,
  }));

  // Answers about the blocks wait for the journal: a block lifted before it was read would come back.
  blocks = async (query?: ListQuery): Promise<Iterable<BlockView>> => this.restored.then(() => this.core.blocker.views(query));
  block = (input: ManualBlock): Promise<{ block: BlockView; outcome: string }> => this.core.operator.block(input);
  // A batch may hold blocks lifted before the journal was read: judged against what it holds.
  blockMany = async (inputs: readonly ManualBlock[], source: 'manual' | 'migrated', dryRun: boolean): Promise<BatchResult> =>
    this.restored.then(() => this.core.operator.blockMany(inputs, source, dryRun));
  unblock = async (ip: string): Promise<BlockView | null> => this.restored.then(() => this.core.operator.unblock(ip));
  flush = async (): Promise<number> => this.restored.then(() => this.core.operator.flush());
  metrics = (): Promise<string> => this.stats.render();
  top = (clients: number, blocks: number): Promise<TopView> => Promise.resolve(topView({
    ...this.now, redis: this.redis?.status() ?? null, closest: this.core.limiter.closest(clients, performance.now()), latest: this.core.blocker.latest(blocks),
  }));
  explain = async (ip: string): Promise<unknown> => this.restored.then(() => explain(ip, { ...this.core, allow: this.allow, ipv6Prefix: this.c.ipv6Prefix }));

  /** Checks and repairs our firewall now (SIGHUP, timers); none before reconciled or while stopping. */
  repairNow(): Promise<void> {
    if (!this.ready || this.stopping) return Promise.resolve();
    this.core.operator.followOwn(0);
    return this.core.blocker.repair();
  }
}
