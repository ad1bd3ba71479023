import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { clientOf, contains, neverAClient, parseNetwork, type Network } from './address.js';
import type { Config } from './config/schema.js';
import { steadyClock } from './clock.js';
import type { ControlApi } from './control/api.js';
import { ControlServer, isAlive } from './control/server.js';
import { isPermissionError, preparePrivateDir, userSocketPath } from './control/user-socket.js';
import { formatDuration, formatSpan, MAX_DURATION_MS, parseDuration } from './duration.js';
import { Blocker, createRunner, selectBackend, viewBlock, type Backend, type Block, type BlockView } from './enforce/index.js';
import { describe, RatedError } from './errors.js';
import { createLogger, RateLimitedLog, routeConsole, type Logger } from './log.js';
import { AllowList } from './limit/allow.js';
import { Limiter } from './limit/limiter.js';
import { WindowSpec } from './limit/sliding-window.js';
import { Metrics } from './metrics.js';
import type { RedisSharing } from './redis/index.js';
import { FileReceiver } from './receive/file.js';
import { HttpReceiver } from './receive/http.js';
import { UdpReceiver } from './receive/udp.js';
import { Journal } from './state/journal.js';
import { StateLock } from './state/lock.js';
import { VERSION } from './version.js';

export interface DaemonOptions {
  readonly config: Config;
  readonly source: string;
  readonly dryRun: boolean;
  readonly socket?: string;
  readonly log?: Logger;
}

/** Networks wider than these are never blocked, whatever the allow list says. */
const WIDEST = { 4: 8, 6: 32 } as const;

/** The running daemon: wires receivers → limiter → blocker, and owns start-up and shutdown. */
export class Daemon implements ControlApi {
  readonly log: Logger;
  private readonly config: Config;
  private readonly stats: Metrics;
  private readonly allow: AllowList;
  private backend!: Backend;
  private blocker!: Blocker;
  private limiter!: Limiter;
  private http: HttpReceiver | null = null;
  private udp: UdpReceiver | null = null;
  private files: FileReceiver | null = null;
  private control: ControlServer | null = null;
  private redis: RedisSharing | null = null;
  private readonly startedAt = Date.now();
  /** Block times run on a clock that an NTP step does not move, as kernel timeouts do not. */
  private readonly clock = steadyClock();
  private readonly timers: NodeJS.Timeout[] = [];
  /** `ip monitor address`, which tells at once when this host gains an address (allowSelf). */
  private addressMonitor: ChildProcess | null = null;
  private stopping: Promise<void> | null = null;
  private started = false;
  private repairing: Promise<void> | null = null;
  private refreshing = false;
  /** How long the last journal write took. */
  private lastSaveMs = 0;
  private droppedPackets: number | null = null;
  private rates = { at: Date.now(), received: new Map<string, number>(), perSecond: new Map<string, number>() };
  private journal: Journal | null = null;
  private lock: StateLock | null = null;
  private saveTimer: NodeJS.Timeout | null = null;
  private journalFailing = false;
  private readonly refusals: RateLimitedLog;

  constructor(private readonly options: DaemonOptions) {
    this.config = options.config;
    this.log = options.log ?? createLogger(this.config.log.level);
    if (!options.log) routeConsole(this.log);
    this.refusals = new RateLimitedLog(this.log);
    this.allow = AllowList.fromConfig([...this.config.allow], this.config.allowSelf);
    this.stats = new Metrics({
      activeBlocks: () => this.blocker.size,
      trackedClients: () => this.limiter.tracked(),
    });
  }

  /** Starts everything; resolves when the daemon is protecting. Throws a RatedError on failure. */
  async start(): Promise<void> {
    const c = this.config;
    this.backend = await selectBackend(c.firewall, createRunner(), this.options.dryRun, c.ipv6Prefix);
    // Refuse before touching the firewall: a second daemon must leave the first one's blocks alone.
    const configuredSocket = this.options.socket ?? c.control.socket;
    if (await isAlive(configuredSocket)) {
      throw new RatedError('ALREADY_RUNNING', `another rated is already running on ${configuredSocket}; stop it first (rated status)`);
    }
    if (this.backend.kind !== 'dry-run') {
      mkdirSync(c.state.dir, { recursive: true, mode: 0o750 });
      this.lock = new StateLock(c.state.dir);
      this.lock.acquire();
      this.journal = new Journal(c.state.dir);
    }
    await this.backend.ensure();
    this.blocker = new Blocker({
      backend: this.backend,
      // Every block, whatever its source, first reads this host's addresses again (at most once a second).
      isAllowed: (net) => {
        this.followOwn(1000);
        return this.allow.has(net);
      },
      log: this.log,
      metrics: this.stats,
      onLift: (net) => this.limiter.forget(net),
      onChange: () => this.scheduleSave(),
      reconciledBlockMs: c.rules[0]?.block ?? 21_600_000,
      now: this.clock,
      systemNow: Date.now,
    });
    this.limiter = new Limiter({
      now: this.clock,
      rules: c.rules.map((r) => ({ name: r.name, match: r.match, limit: r.limit, windowMs: r.window, blockMs: r.block })),
      allow: this.allow,
      ipv6Prefix: c.ipv6Prefix,
      maxClients: c.tracking.maxClients,
      escalation: { factor: c.escalation.factor, maxMs: c.escalation.max, memoryMs: c.escalation.memory },
      isBlocked: (client) => this.blocker.has(client),
      onCount: c.redis ? (client, rule, at) => this.redis?.count(client, rule, at) : undefined,
      onVerdict: (v) => {
        try {
          const outcome = this.blocker.block({
            net: v.client, durationMs: v.blockMs, source: 'rule', rule: v.rule,
            reason: v.reason, hits: v.hits, windowMs: v.windowMs,
          });
          if (outcome !== 'unchanged') this.redis?.published(this.blocker.get(v.client));
        } catch (err) {
          this.refusals.warn('block refused', { ip: v.client.text, err: describe(err) }, 'block refused');
        }
      },
    });
    const reconcileStarted = performance.now();
    const restored = this.restoreJournal();
    const reconciled = await this.blocker.resync(true);
    const reconcileMs = Math.round(performance.now() - reconcileStarted);
    if (c.redis) {
      // Loaded only when configured: the Redis client costs about 20 MB of memory.
      const { RedisSharing } = await import('./redis/index.js');
      this.redis = new RedisSharing({
        config: c.redis,
        rules: c.rules.map((r) => ({ name: r.name, limit: r.limit, window: new WindowSpec(r.window), blockMs: r.block })),
        local: this.blocker,
        parseTarget: (text) => {
          try {
            return parseBlockTarget(text);
          } catch {
            return null;
          }
        },
        isAllowed: (net) => this.allow.has(net),
        convict: (client, rule, hits) => this.limiter.convictShared(client, rule, hits),
        log: this.log,
        metrics: this.stats,
      });
      // Adopt the shared blocks before saying we are protecting, unless Redis is away.
      await this.redis.start(Math.max(2000, c.redis.timeout * 4));
    }

    const socket = await this.listenControl();
    if (c.receivers.http) {
      this.http = new HttpReceiver({
        ...c.receivers.http,
        sink: (hit) => this.limiter.record(hit),
        metrics: this.stats,
        log: this.log,
      });
      await this.http.listen();
    }
    if (c.receivers.udp) {
      this.udp = new UdpReceiver({
        ...c.receivers.udp,
        sink: (hit) => this.limiter.record(hit),
        metrics: this.stats,
        log: this.log,
      });
      await this.udp.listen();
      this.every(2000, () => this.udp?.sampleDrops());
    }
    if (c.receivers.files.length > 0) {
      this.files = new FileReceiver({
        paths: c.receivers.files,
        sink: (hit) => this.limiter.record(hit),
        metrics: this.stats,
        log: this.log,
      });
      await this.files.start();
    }
    this.blocker.start();
    if (c.allowSelf) this.followAddresses();
    // One repair at a time: while nft hangs, the loops must not pile up processes.
    this.every(c.firewall.checkInterval, () => this.repairNow().then(() => this.refreshDrops()));
    this.every(1000, () => {
      if (this.blocker.needsRepair) void this.repairNow();
    });
    this.every(5000, () => this.sampleRates());

    this.log.info({
      version: VERSION,
      config: this.options.source,
      backend: this.backend.kind,
      table: this.backend.kind === 'dry-run' ? null : c.firewall.table,
      http: this.http?.endpoint ?? null,
      udp: this.udp?.endpoint ?? null,
      // The socket's receive buffer as the kernel granted it (a warning said so when it is short).
      udpReceiveBuffer: this.udp?.receiveBuffer ?? null,
      files: this.files?.paths ?? [],
      control: socket,
      redis: this.redis ? { mode: this.redis.status().mode, up: this.redis.status().up } : null,
      rules: c.rules.map((r) => `${r.name}: ${r.limit}/${formatDuration(r.window)} → ${formatDuration(r.block)}`),
      journal: restored,
      adopted: reconciled.adopted,
      restored: reconciled.added,
      ...(this.backend.moved ? { movedFromOlderLayout: this.backend.moved } : {}),
      reconcileMs,
    }, `rated started on ${this.options.source === 'embedded defaults' ? 'its embedded defaults' : this.options.source}`);
    this.started = true;
  }

  /** Stops receivers, lets the batch in flight finish, leaves blocks in place unless flushOnExit. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      for (const t of this.timers) clearInterval(t);
      this.addressMonitor?.kill();
      await Promise.allSettled([this.http?.close(), this.udp?.close(), this.files?.close()]);
      if (this.blocker) {
        // A daemon that never started protecting has nothing of its own to flush.
        if (this.config.firewall.flushOnExit && this.started) {
          const n = await this.blocker.flush().catch((err: unknown) => {
            this.log.error({ err: describe(err) }, 'flush on exit failed');
            return 0;
          });
          this.log.info({ lifted: n }, 'flushed every block on exit (firewall.flushOnExit)');
        }
        await this.blocker.close();
        this.saveNow();
      }
      await this.control?.close();
      await this.redis?.close();
      this.lock?.release();
      this.log.info({ blocks: this.blocker?.size ?? 0, kept: !this.config.firewall.flushOnExit }, 'rated stopped');
    })();
    return this.stopping;
  }

  /**
   * Adopts the journal's unexpired blocks and offence history (SPEC §7); the
   * resync that follows compares them with the kernel. Entries now covered by
   * the allow list are dropped.
   */
  private restoreJournal(): { blocks: number; expired: number; refused: number; invalid: number } | null {
    if (!this.journal) return null;
    const loaded = this.journal.load();
    if (loaded.movedAside) {
      this.stats.errors.inc('journal');
      this.log.error({ file: loaded.movedAside, err: loaded.error }, 'journal unreadable; moved it aside and starting from the kernel state');
    }
    const now = this.clock();
    let expired = 0;
    let refused = 0;
    const invalid: string[] = [];
    for (const block of loaded.blocks) {
      const problem = this.journalProblem(block, now);
      if (problem !== null) invalid.push(`${block.net.text}: ${problem}`);
      else if (block.expires !== null && block.expires <= now) {
        expired++;
        // Without kernel timeouts (iptables) its rule is still there.
        if (!this.backend.expiresInKernel) this.backend.delete(block.net);
      }
      else if (this.allow.has(block.net)) refused++;
      else this.blocker.adopt(block);
    }
    if (invalid.length > 0) {
      this.stats.errors.inc('journal');
      this.log.warn({ skipped: invalid.length, entries: invalid.slice(0, 5) }, 'journal entries that no input could have made were skipped; the rest is kept');
    }
    this.limiter.importOffences(loaded.offences);
    return { blocks: loaded.blocks.length - expired - refused - invalid.length, expired, refused, invalid: invalid.length };
  }

  /**
   * Why a journal entry could not have been made by any input (the journal is
   * a file someone else may have written), or null when it could.
   */
  private journalProblem(block: Block, now: number): string | null {
    const net = block.net;
    if (net.prefix < WIDEST[net.family]) return `wider than /${WIDEST[net.family]}`;
    const special = neverAClient(net);
    if (special !== null) return `${special}, never a client`;
    if (block.expires === null) return null;
    if (!Number.isSafeInteger(block.expires)) return 'an expiry that is no time';
    // Rule blocks last at most as long as escalation lets them; any block at most as long as a duration can be.
    const longest = block.source === 'rule' || block.source === 'reconciled'
      ? Math.max(this.config.escalation.max, ...this.config.rules.map((r) => r.block))
      : MAX_DURATION_MS;
    if (block.expires - now > longest + 60_000) return `${formatSpan(block.expires - now)} left, longer than any block (${formatSpan(longest)})`;
    return null;
  }

  /**
   * Binds the control socket. A dry run by an ordinary user, who may not
   * create the configured one (under /run), uses the user's own socket
   * instead; the CLI looks there too.
   */
  private async listenControl(): Promise<string> {
    const configured = this.options.socket ?? this.config.control.socket;
    try {
      this.control = new ControlServer(configured, this, this.log);
      await this.control.listen();
      return configured;
    } catch (err) {
      const fallback = this.backend.kind === 'dry-run' && this.options.socket === undefined ? userSocketPath() : null;
      if (fallback === null || fallback === configured || !isPermissionError(err)) throw err;
      preparePrivateDir(fallback);
      this.control = new ControlServer(fallback, this, this.log);
      await this.control.listen();
      this.log.warn({ configured, control: fallback, err: describe(err) }, 'a dry run without root uses its own control socket; rated commands find it');
      return fallback;
    }
  }

  private scheduleSave(): void {
    if (!this.journal || this.saveTimer) return;
    // A write costs O(blocks): during a ban storm, spend at most a twentieth of the time on it.
    // What a crash loses meanwhile is still in the kernel, which the next start adopts.
    this.saveTimer = setTimeout(() => {
      this.saveTimer = null;
      this.saveNow();
    }, Math.max(200, this.lastSaveMs * 20));
    this.saveTimer.unref();
  }

  /** Writes the journal; on failure keeps running on memory and the kernel, and says so once. */
  private saveNow(): void {
    if (this.saveTimer) {
      clearTimeout(this.saveTimer);
      this.saveTimer = null;
    }
    if (!this.journal) return;
    const started = performance.now();
    try {
      this.journal.save({ blocks: this.blocker.list(), offences: this.limiter.exportOffences() });
      this.lastSaveMs = performance.now() - started;
      if (this.journalFailing) this.log.info({ file: this.journal.path }, 'journal written again');
      this.journalFailing = false;
    } catch (err) {
      this.stats.errors.inc('journal');
      if (!this.journalFailing) {
        this.log.error({ file: this.journal.path, err: describe(err) }, 'cannot write the journal; blocks stay in memory and in the kernel');
      }
      this.journalFailing = true;
      // Retry later: the next change, or this timer.
      this.saveTimer = setTimeout(() => {
        this.saveTimer = null;
        this.saveNow();
      }, 5000);
      this.saveTimer.unref();
    }
  }

  // ---- control API ----

  async status(): Promise<Record<string, unknown>> {
    return {
      status: 'up',
      version: VERSION,
      pid: process.pid,
      startedAt: new Date(this.startedAt).toISOString(),
      uptime: Math.round((Date.now() - this.startedAt) / 1000),
      config: this.options.source,
      backend: this.backend.kind,
      table: this.backend.kind === 'dry-run' ? null : this.config.firewall.table,
      receivers: {
        http: this.http ? { listen: this.http.endpoint, ...this.receiverCounts('http') } : null,
        udp: this.udp ? {
          listen: this.udp.endpoint,
          ...this.receiverCounts('udp'),
          drops: this.udp.sampleDrops(),
          receiveBuffer: this.udp.receiveBuffer,
        } : null,
        files: this.files ? {
          listen: this.files.paths.join(', '),
          ...this.receiverCounts('files'),
          rotations: { rename: this.stats.rotations.get('rename'), truncate: this.stats.rotations.get('truncate') },
          files: this.files.status(),
        } : null,
      },
      trackedClients: this.limiter.tracked(),
      activeBlocks: this.blocker.size,
      droppedPackets: this.droppedPackets,
      dropped: this.stats.dropped,
      firewall: {
        batches: this.stats.firewallBatches,
        elements: this.stats.firewallElements,
        refused: this.stats.firewallRefused,
        driftRepairs: this.stats.driftRepairs,
      },
      redis: this.redis?.status() ?? null,
      lastErrors: [...this.blocker.lastErrors],
    };
  }

  async blocks(): Promise<BlockView[]> {
    // Per-element counters are read only when someone lists: at 1,000,000
    // elements that read is slow, and nothing else needs them.
    const dropped = new Map<string, { packets: number; bytes: number }>();
    try {
      for (const e of await this.backend.list()) if (e.dropped) dropped.set(e.net.text, e.dropped);
    } catch (err) {
      this.log.warn({ err: describe(err) }, 'cannot read what each block dropped; listing without it');
    }
    return this.blocker.list().map((b) => viewBlock(b, dropped.get(b.net.text) ?? null));
  }

  async block(input: { ip: string; for?: string | number; reason?: string }): Promise<{ block: BlockView; outcome: string }> {
    const net = parseBlockTarget(input.ip);
    this.followOwn(1000);
    if (this.allow.has(net)) {
      throw new RatedError('REFUSED', `${net.text} is allow-listed (allow, allowSelf) and is never blocked`);
    }
    let durationMs = this.config.rules[0]?.block ?? 21_600_000;
    if (input.for !== undefined) {
      const parsed = parseDuration(input.for);
      if (parsed === null || parsed <= 0) throw new RatedError('USAGE', `--for: expected a duration like "90s", "10m", "6h", "1d", at most 3650d, got ${JSON.stringify(input.for)}`);
      durationMs = parsed;
    }
    const reason = input.reason === undefined ? 'manual' : input.reason.slice(0, 200);
    const outcome = this.blocker.block({ net, durationMs, source: 'manual', rule: null, reason, hits: null });
    if (outcome !== 'unchanged') this.redis?.published(this.blocker.get(net));
    // This block in the kernel, not every block a storm keeps deciding.
    await this.blocker.committed();
    const block = this.blocker.get(net);
    if (!block) throw new RatedError('FIREWALL_FAILED', `${net.text} could not be blocked`);
    return { block: viewBlock(block), outcome };
  }

  async unblock(ip: string): Promise<BlockView | null> {
    const net = parseBlockTarget(ip);
    let lifted = this.blocker.unblock(net);
    // IPv6 clients are blocked per network: an address stands for its client's network.
    const client = clientOf(net, this.config.ipv6Prefix);
    if (!lifted && client !== net) lifted = this.blocker.unblock(client);
    this.limiter.forget(net);
    if (this.redis) {
      // Lift it on every node, also where it is held as the client's IPv6 network.
      const nets = new Map([[net.text, net]]);
      nets.set((lifted?.net ?? client).text, lifted?.net ?? client);
      for (const n of nets.values()) this.redis.unblocked(n);
    }
    await this.blocker.committed();
    return lifted ? viewBlock(lifted) : null;
  }

  async flush(): Promise<number> {
    const n = await this.blocker.flush();
    this.redis?.flushed();
    return n;
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
   * Reads this host's addresses again whenever the kernel reports a change
   * (`ip monitor address`), so a new VIP is allowed before anyone can be
   * blocked for it. Without `ip`, the periodic check and SIGHUP still do.
   */
  private followAddresses(): void {
    const child = spawn('ip', ['-o', 'monitor', 'address'], { stdio: ['ignore', 'pipe', 'ignore'] });
    this.addressMonitor = child;
    child.on('error', (err) => this.log.debug({ err: describe(err) }, 'cannot follow address changes; checking them at every firewall check'));
    child.stdout.on('data', () => this.followOwn(0));
    // Neither the process nor its pipe keeps the daemon from exiting.
    child.unref();
    (child.stdout as unknown as { unref?: () => void }).unref?.();
  }

  /**
   * Reads this host's addresses again unless the last read is younger than
   * `maxAgeMs`. A new one (a VIP, a failover address) is allowed from now on,
   * and blocks that hold it are lifted once the caller is done: a read may
   * come from inside a block decision.
   */
  private followOwn(maxAgeMs: number): void {
    const added = this.allow.refreshSelf(maxAgeMs);
    if (added.length > 0) queueMicrotask(() => this.liftOwn(added));
  }

  /** Lifts every block that holds one of these addresses of this host, just found on an interface. */
  private liftOwn(added: readonly Network[]): void {
    this.log.info({ addresses: added.map((n) => n.text) }, "new addresses of this host; they are never blocked (allowSelf)");
    for (const b of this.blocker.list()) {
      if (!added.some((a) => contains(b.net, a))) continue;
      this.log.warn({ ip: b.net.text }, "lifting a block that holds one of this host's own addresses");
      this.blocker.unblock(b.net);
      this.redis?.unblocked(b.net);
    }
  }

  async metrics(): Promise<string> {
    return this.stats.render();
  }

  private every(ms: number, fn: () => unknown): void {
    const t = setInterval(() => {
      try {
        const r = fn();
        if (r instanceof Promise) r.catch((err: unknown) => this.log.error({ err: describe(err) }, 'periodic task failed'));
      } catch (err) {
        this.log.error({ err: describe(err) }, 'periodic task failed');
      }
    }, ms);
    t.unref();
    this.timers.push(t);
  }

  private async refreshDrops(): Promise<void> {
    if (this.refreshing) return;
    this.refreshing = true;
    try {
      const check = await this.backend.check();
      this.droppedPackets = check.droppedPackets;
      this.stats.dropped = check.dropped ?? null;
    } finally {
      this.refreshing = false;
    }
  }

  /** Received, rejected and ignored notifications of one receiver, and its recent rate. */
  private receiverCounts(receiver: string): { received: number; rejected: number; ignored: number; perSecond: number } {
    return {
      received: this.stats.received.get(receiver),
      rejected: sumPrefix(this.stats.rejected.values, `${receiver}\t`),
      ignored: sumPrefix(this.stats.ignored.values, `${receiver}\t`),
      perSecond: this.rates.perSecond.get(receiver) ?? 0,
    };
  }

  private sampleRates(): void {
    const now = Date.now();
    const elapsed = (now - this.rates.at) / 1000;
    const received = new Map(this.stats.received.values);
    const perSecond = new Map<string, number>();
    for (const [receiver, n] of received) {
      perSecond.set(receiver, elapsed > 0 ? Math.round((n - (this.rates.received.get(receiver) ?? 0)) / elapsed) : 0);
    }
    this.rates = { at: now, received, perSecond };
  }
}

/** Parses the target of `block` and `unblock`: an address or a CIDR network, not wider than /8 or /32. */
export function parseBlockTarget(input: string): Network {
  const net = parseNetwork(input.trim());
  if (!net) throw new RatedError('USAGE', `expected an IP address or CIDR network, got ${JSON.stringify(input.slice(0, 64))}`);
  if (net.prefix < WIDEST[net.family]) {
    throw new RatedError('USAGE', `${net.text} is too wide: networks wider than /${WIDEST[net.family]} are never blocked`);
  }
  return net;
}

function sumPrefix(values: Map<string, number>, prefix: string): number {
  let sum = 0;
  for (const [k, v] of values) if (k.startsWith(prefix)) sum += v;
  return sum;
}
