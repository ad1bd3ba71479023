import { clientKey } from './address.js';
import type { Config } from './config/schema.js';
import { limiterOptions } from './config/limits.js';
import { AllowList } from './limit/allow.js';
import { Limiter } from './limit/limiter.js';
import { LineParser, type ParsedLine } from './receive/line.js';

/** One block that the daemon would have decided, on the log's own clock. */
export interface ReplayBlock {
  /** The client as it would be blocked: an IPv4 address or an IPv6 `/ipv6Prefix` network. */
  readonly ip: string;
  readonly rule: string;
  readonly reason: string;
  readonly hits: number;
  /** Log time of the line that crossed the limit, ms since the epoch. */
  readonly since: number;
  readonly expires: number;
  /** The block's length, escalated for repeat offenders. */
  readonly durationMs: number;
  /** 1 for a first offence, 2 for the second within escalation memory, … */
  readonly offence: number;
  /** Where the line that crossed the limit is: the log as named on the command line, and its line number. */
  readonly file: string;
  readonly line: number;
}

/** What a replay read and decided, apart from the blocks. */
export interface ReplaySummary {
  /** Lines read, including rejected ones. */
  lines: number;
  rejected: number;
  /** Rejected lines per reason (bad-address, no-time, …). */
  readonly rejectedByReason: Record<string, number>;
  /** Lines of allow-listed clients and of unix-socket clients: read, never counted. */
  ignored: number;
  /** Distinct clients (IPv6 per `/ipv6Prefix`) among the lines read. */
  clients: number;
  blocks: number;
  /** Distinct clients blocked at least once. */
  blockedClients: number;
  /** Verdicts refused because the client's network overlaps the allow list, as the blocker would. */
  refused: number;
  /** Lines counted at their own time though a later line came first (nginx logs in completion order). */
  reordered: number;
  /** Lines more than REORDER_MS older than a line read before them: too far back to place, not counted. */
  outOfOrder: number;
  /** Log time of the earliest and the latest line counted, ms since the epoch; null when none. */
  from: number | null;
  to: number | null;
}

export interface ReplayOptions {
  readonly config: Config;
  /** A regex with named groups ip and time; null for nginx's combined format. */
  readonly pattern: string | null;
  /**
   * Also spare this host's own addresses (allowSelf). Off by default: logs
   * are often replayed on another machine, whose addresses say nothing about
   * the web server's.
   */
  readonly allowSelf?: boolean;
}

/**
 * How far back a line's time may go and still be counted at its own time:
 * nginx writes a line when its request completes, so a slow request's line
 * comes after those of quicker requests that began later. Lines wait this
 * long (on the log's clock) in a reorder buffer before they are counted.
 */
export const REORDER_MS = 5 * 60_000;

interface Pending {
  readonly hit: ParsedLine;
  readonly file: string;
  readonly line: number;
}

/**
 * Runs access-log lines through the configured rules on the log's own
 * timestamps. It uses the daemon's Limiter with the same options; the
 * blocker is simulated (a blocked client's hits are not counted until its
 * block ends on the log's clock, allow-listed networks are refused), and
 * nothing touches the firewall.
 */
export class Replay {
  readonly blocks: ReplayBlock[] = [];
  readonly summary: ReplaySummary = {
    lines: 0, rejected: 0, rejectedByReason: {}, ignored: 0, clients: 0, blocks: 0, blockedClients: 0,
    refused: 0, reordered: 0, outOfOrder: 0, from: null, to: null,
  };
  private readonly parser: LineParser;
  private readonly limiter: Limiter;
  private readonly allow: AllowList;
  private readonly ipv6Prefix: number;
  /** Block end per client on the log's clock. */
  private readonly active = new Map<string, number>();
  private readonly seen = new Set<string>();
  private readonly blocked = new Set<string>();
  /** The log's clock: the time of the line being counted; lines are counted in time order. */
  private clock = -Infinity;
  /** The latest time read so far. */
  private latest = -Infinity;
  private where = { file: '', line: 0 };
  /**
   * Lines read but not counted yet, in time order (equal times in the order
   * read), from `head` on. Logs are nearly sorted, so a late line is inserted
   * close to the end, and the earliest leave from the front.
   */
  private pending: Pending[] = [];
  private head = 0;

  constructor(options: ReplayOptions) {
    const c = options.config;
    this.parser = new LineParser({ pattern: options.pattern, time: true });
    this.allow = AllowList.fromConfig([...c.allow], options.allowSelf === true);
    this.ipv6Prefix = c.ipv6Prefix;
    this.limiter = new Limiter({
      ...limiterOptions(c),
      allow: this.allow,
      isBlocked: (client) => (this.active.get(client.text) ?? -Infinity) > this.clock,
      onVerdict: (v) => {
        if (this.allow.has(v.client)) {
          this.summary.refused++;
          return;
        }
        const since = this.clock;
        this.active.set(v.client.text, since + v.blockMs);
        this.blocked.add(v.client.text);
        this.blocks.push({
          ip: v.client.text, rule: v.rule, reason: v.reason, hits: v.hits, since, expires: since + v.blockMs,
          durationMs: v.blockMs, offence: v.offence.count, file: this.where.file, line: this.where.line,
        });
      },
      now: () => this.clock,
    });
  }

  /** One log line; `file` and `line` say where it is, for the blocks it leads to. */
  line(text: string, file: string, line: number): void {
    const s = this.summary;
    s.lines++;
    const r = this.parser.parse(text);
    if (r.kind === 'rejected') {
      s.rejected++;
      s.rejectedByReason[r.reason] = (s.rejectedByReason[r.reason] ?? 0) + 1;
      return;
    }
    if (r.kind === 'ignored') {
      s.ignored++;
      return;
    }
    const hit = r.line;
    // Further back than the reorder buffer reaches, or behind lines already counted: it cannot be placed.
    if (hit.time < this.clock || hit.time < this.latest - REORDER_MS) {
      s.outOfOrder++;
      return;
    }
    if (hit.time < this.latest) s.reordered++;
    else this.latest = hit.time;
    this.insert({ hit, file, line });
    const due = this.latest - REORDER_MS;
    while (this.head < this.pending.length && (this.pending[this.head] as Pending).hit.time <= due) this.count(this.pending[this.head++] as Pending);
    if (this.head > 65_536 && this.head * 2 > this.pending.length) {
      this.pending = this.pending.slice(this.head);
      this.head = 0;
    }
  }

  /** Puts a line after every pending line of the same or an earlier time. */
  private insert(p: Pending): void {
    const list = this.pending;
    const last = list[list.length - 1];
    if (list.length === this.head || (last !== undefined && last.hit.time <= p.hit.time)) {
      list.push(p);
      return;
    }
    let lo = this.head;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((list[mid] as Pending).hit.time <= p.hit.time) lo = mid + 1;
      else hi = mid;
    }
    list.splice(lo, 0, p);
  }

  /** Counts one line at its own time. */
  private count(p: Pending): void {
    const s = this.summary;
    const hit = p.hit;
    this.clock = hit.time;
    s.from ??= hit.time;
    s.to = hit.time;
    this.seen.add(clientKey(hit.ip, this.ipv6Prefix).text);
    this.where = { file: p.file, line: p.line };
    const outcome = this.limiter.record({ ip: hit.ip, method: hit.method, status: hit.status, host: hit.host, uri: hit.uri, at: hit.time });
    if (outcome === 'allowed') s.ignored++;
    if (this.active.size > 100_000) this.prune();
  }

  /** Counts the lines still waiting, then finishes the counts of the summary. */
  finish(): { blocks: ReplayBlock[]; summary: ReplaySummary } {
    while (this.head < this.pending.length) this.count(this.pending[this.head++] as Pending);
    this.summary.clients = this.seen.size;
    this.summary.blocks = this.blocks.length;
    this.summary.blockedClients = this.blocked.size;
    return { blocks: this.blocks, summary: this.summary };
  }

  private prune(): void {
    for (const [key, end] of this.active) if (end <= this.clock) this.active.delete(key);
  }
}

