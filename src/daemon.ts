import { mkdirSync } from 'node:fs';
import { parseNetwork, type Network } from './address.js';
import type { Config } from './config/schema.js';
import type { ControlApi } from './control/api.js';
import { ControlServer } from './control/server.js';
import { formatDuration, parseDuration } from './duration.js';
import { Blocker, createRunner, selectBackend, viewBlock, type Backend, type BlockView } from './enforce/index.js';
import { describe, RatedError } from './errors.js';
import { createLogger, RateLimitedLog, type Logger } from './log.js';
import { AllowList } from './limit/allow.js';
import { Limiter } from './limit/limiter.js';
import { Metrics } from './metrics.js';
import { HttpReceiver } from './receive/http.js';
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
  private control: ControlServer | null = null;
  private readonly startedAt = Date.now();
  private readonly timers: NodeJS.Timeout[] = [];
  private stopping: Promise<void> | null = null;
  private droppedPackets: number | null = null;
  private rates = { at: Date.now(), received: 0, perSecond: 0 };
  private journal: Journal | null = null;
  private lock: StateLock | null = null;
  private saveTimer: NodeJS.Timeout | null = null;
  private journalFailing = false;
  private readonly refusals: RateLimitedLog;

  constructor(private readonly options: DaemonOptions) {
    this.config = options.config;
    this.log = options.log ?? createLogger(this.config.log.level);
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
    this.backend = await selectBackend(c.firewall, createRunner(), this.options.dryRun);
    if (this.backend.kind !== 'dry-run') {
      mkdirSync(c.state.dir, { recursive: true, mode: 0o750 });
      this.lock = new StateLock(c.state.dir);
      this.lock.acquire();
      this.journal = new Journal(c.state.dir);
    }
    await this.backend.ensure();
    this.blocker = new Blocker({
      backend: this.backend,
      isAllowed: (net) => this.allow.has(net),
      log: this.log,
      metrics: this.stats,
      onLift: (net) => this.limiter.forget(net),
      onChange: () => this.scheduleSave(),
    });
    this.limiter = new Limiter({
      rules: c.rules.map((r) => ({ name: r.name, match: r.match, limit: r.limit, windowMs: r.window, blockMs: r.block })),
      allow: this.allow,
      ipv6Prefix: c.ipv6Prefix,
      maxClients: c.tracking.maxClients,
      escalation: { factor: c.escalation.factor, maxMs: c.escalation.max, memoryMs: c.escalation.memory },
      isBlocked: (client) => this.blocker.has(client),
      onVerdict: (v) => {
        try {
          this.blocker.block({
            net: v.client, durationMs: v.blockMs, source: 'rule', rule: v.rule,
            reason: v.reason, hits: v.hits, windowMs: v.windowMs,
          });
        } catch (err) {
          this.refusals.warn('block refused', { ip: v.client.text, err: describe(err) }, 'block refused');
        }
      },
    });
    const restored = this.restoreJournal();
    const reconciled = await this.blocker.resync(true);

    const socket = this.options.socket ?? c.control.socket;
    this.control = new ControlServer(socket, this, this.log);
    await this.control.listen();
    if (c.receivers.http) {
      this.http = new HttpReceiver({
        ...c.receivers.http,
        sink: (hit) => this.limiter.record(hit),
        metrics: this.stats,
        log: this.log,
      });
      await this.http.listen();
    }
    this.blocker.start();
    this.every(c.firewall.checkInterval, () => this.blocker.repair().then(() => this.refreshDrops()));
    this.every(1000, () => {
      if (this.blocker.needsRepair) void this.blocker.repair();
    });
    this.every(5000, () => this.sampleRates());

    this.log.info({
      version: VERSION,
      config: this.options.source,
      backend: this.backend.kind,
      table: this.backend.kind === 'dry-run' ? null : c.firewall.table,
      http: this.http?.endpoint ?? null,
      control: socket,
      rules: c.rules.map((r) => `${r.name}: ${r.limit}/${formatDuration(r.window)} → ${formatDuration(r.block)}`),
      journal: restored,
      adopted: reconciled.adopted,
      restored: reconciled.added,
    }, `rated started on ${this.options.source === 'embedded defaults' ? 'its embedded defaults' : this.options.source}`);
  }

  /** Stops receivers, lets the batch in flight finish, leaves blocks in place unless flushOnExit. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      for (const t of this.timers) clearInterval(t);
      await Promise.allSettled([this.http?.close()]);
      if (this.blocker) {
        if (this.config.firewall.flushOnExit) {
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
  private restoreJournal(): { blocks: number; expired: number; refused: number } | null {
    if (!this.journal) return null;
    const loaded = this.journal.load();
    if (loaded.movedAside) {
      this.stats.errors.inc('journal');
      this.log.error({ file: loaded.movedAside, err: loaded.error }, 'journal unreadable; moved it aside and starting from the kernel state');
    }
    const now = Date.now();
    let expired = 0;
    let refused = 0;
    for (const block of loaded.blocks) {
      if (block.expires !== null && block.expires <= now) expired++;
      else if (this.allow.has(block.net)) refused++;
      else this.blocker.adopt(block);
    }
    this.limiter.importOffences(loaded.offences);
    return { blocks: loaded.blocks.length - expired - refused, expired, refused };
  }

  private scheduleSave(): void {
    if (!this.journal || this.saveTimer) return;
    this.saveTimer = setTimeout(() => {
      this.saveTimer = null;
      this.saveNow();
    }, 200);
    this.saveTimer.unref();
  }

  /** Writes the journal; on failure keeps running on memory and the kernel, and says so once. */
  private saveNow(): void {
    if (this.saveTimer) {
      clearTimeout(this.saveTimer);
      this.saveTimer = null;
    }
    if (!this.journal) return;
    try {
      this.journal.save({ blocks: this.blocker.list(), offences: this.limiter.exportOffences() });
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
        http: this.http ? {
          listen: this.http.endpoint,
          received: this.stats.received.get('http'),
          rejected: sumPrefix(this.stats.rejected.values, 'http\t'),
          ignored: sumPrefix(this.stats.ignored.values, 'http\t'),
          perSecond: this.rates.perSecond,
        } : null,
        udp: null,
        files: null,
      },
      trackedClients: this.limiter.tracked(),
      activeBlocks: this.blocker.size,
      droppedPackets: this.droppedPackets,
      firewall: {
        batches: this.stats.firewallBatches,
        elements: this.stats.firewallElements,
        refused: this.stats.firewallRefused,
        driftRepairs: this.stats.driftRepairs,
      },
      redis: null,
      lastErrors: [...this.blocker.lastErrors],
    };
  }

  blocks(): BlockView[] {
    return this.blocker.list().map(viewBlock);
  }

  async block(input: { ip: string; for?: string | number; reason?: string }): Promise<{ block: BlockView; outcome: string }> {
    const net = parseBlockTarget(input.ip);
    if (this.allow.has(net)) {
      throw new RatedError('REFUSED', `${net.text} is allow-listed (allow, allowSelf) and is never blocked`);
    }
    let durationMs = this.config.rules[0]?.block ?? 21_600_000;
    if (input.for !== undefined) {
      const parsed = parseDuration(input.for);
      if (parsed === null || parsed <= 0) throw new RatedError('USAGE', `--for: expected a duration like "90s", "10m", "6h", "1d", got ${JSON.stringify(input.for)}`);
      durationMs = parsed;
    }
    const reason = input.reason === undefined ? 'manual' : input.reason.slice(0, 200);
    const outcome = this.blocker.block({ net, durationMs, source: 'manual', rule: null, reason, hits: null });
    await this.blocker.settle();
    const block = this.blocker.get(net);
    if (!block) throw new RatedError('FIREWALL_FAILED', `${net.text} could not be blocked`);
    return { block: viewBlock(block), outcome };
  }

  async unblock(ip: string): Promise<BlockView | null> {
    const net = parseBlockTarget(ip);
    let lifted = this.blocker.unblock(net);
    if (!lifted && net.family === 6 && net.prefix === 128) {
      // IPv6 clients are blocked per network: lift the network the address belongs to.
      const client = parseNetwork(`${net.text}/${this.config.ipv6Prefix}`);
      if (client) lifted = this.blocker.unblock(client);
    }
    this.limiter.forget(net);
    await this.blocker.settle();
    return lifted ? viewBlock(lifted) : null;
  }

  async flush(): Promise<number> {
    return this.blocker.flush();
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
    this.droppedPackets = (await this.backend.check()).droppedPackets;
  }

  private sampleRates(): void {
    const now = Date.now();
    const received = this.stats.received.total();
    const elapsed = (now - this.rates.at) / 1000;
    this.rates = { at: now, received, perSecond: elapsed > 0 ? Math.round((received - this.rates.received) / elapsed) : 0 };
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
