/**
 * Reads what other tools hold into manual blocks (`rated import`): blocklist
 * files, fail2ban's database, CrowdSec decisions, and rated's own export.
 * Nothing here is trusted: every entry is checked again by the daemon like
 * a notification, and what cannot be read is counted with where it was.
 */
import { basename } from 'node:path';
import { parseBlockTarget } from '../block.js';
import { MAX_DURATION_MS } from '../duration.js';
import { RatedError } from '../errors.js';

export type ImportFormat = 'list' | 'fail2ban' | 'crowdsec' | 'rated';
export const FORMATS = ['auto', 'list', 'fail2ban', 'crowdsec'] as const;

/** One entry read from a source, before the daemon judges it. */
export interface ImportEntry {
  /** Canonical address or network. */
  readonly ip: string;
  /** Remaining time in whole seconds; null for "the --for duration, else the default block". */
  readonly seconds: number | null;
  readonly reason: string;
}

/** What reading sources gave: entries merged per address, and what was skipped and why. */
export interface ImportRead {
  readonly entries: ImportEntry[];
  /** Skipped per reason (invalid, expired, not a ban, …). */
  readonly skipped: Record<string, number>;
  /** The first few skipped entries, with where they were. */
  readonly examples: string[];
  /** Entries that named an address already read. */
  duplicates: number;
}

/** One source: its name for messages (`-` is stdin) and its bytes. */
export interface ImportSource {
  readonly name: string;
  readonly bytes: Buffer;
}

const SQLITE_MAGIC = Buffer.from('SQLite format 3\0', 'latin1');

/** The format of a source from its first bytes; throws USAGE naming it when it is none of them. */
export function detectFormat(source: ImportSource): ImportFormat {
  if (source.bytes.subarray(0, SQLITE_MAGIC.length).equals(SQLITE_MAGIC)) return 'fail2ban';
  const head = source.bytes.subarray(0, 4096).toString('utf8').trimStart();
  if (head.startsWith('[') || head.startsWith('{') || head === 'null' || head.startsWith('null\n')) {
    return /"ip"\s*:/.test(head) && /"source"\s*:/.test(head) ? 'rated' : 'crowdsec';
  }
  if (source.bytes.subarray(0, 4096).includes(0)) {
    throw new RatedError('USAGE', `${source.name}: not a format rated imports (a blocklist, fail2ban's database, cscli decisions list -o json, rated export)`);
  }
  return 'list';
}

/** Collects entries from several sources, merged per address (the longest time wins). */
export class ImportReader {
  private readonly byIp = new Map<string, ImportEntry>();
  readonly result: ImportRead = { entries: [], skipped: {}, examples: [], duplicates: 0 };

  constructor(private readonly options: { reason?: string; now: number }) {}

  /** Reads one source in the given format (`auto` detects it). */
  async read(source: ImportSource, format: (typeof FORMATS)[number]): Promise<void> {
    const kind = format === 'auto' ? detectFormat(source) : format;
    if (kind === 'list') this.readList(source);
    else if (kind === 'fail2ban') await this.readFail2ban(source);
    else this.readJson(source, kind);
  }

  /** The merged entries, in the order first read. */
  entries(): ImportEntry[] {
    return [...this.byIp.values()];
  }

  /** One address or CIDR per line; `#` and `;` start comments; text after the address is ignored. */
  private readList(source: ImportSource): void {
    const reason = this.options.reason ?? `imported from ${source.name === '-' ? 'stdin' : basename(source.name)}`;
    const lines = source.bytes.toString('utf8').split('\n');
    for (let i = 0; i < lines.length; i++) {
      const line = (lines[i] ?? '').replace(/[#;].*$/, '').trim();
      if (line === '') continue;
      const token = line.split(/[\s,]+/)[0] ?? '';
      this.add(token, null, reason, `${source.name}:${i + 1}`);
    }
  }

  /** fail2ban's sqlite database: the bans still in force (`bips`, or `bans` before 1.0), for their remaining time. */
  private async readFail2ban(source: ImportSource): Promise<void> {
    const { default: initSqlJs } = await import('sql.js');
    const SQL = await initSqlJs();
    let db: InstanceType<typeof SQL.Database>;
    try {
      db = new SQL.Database(source.bytes);
    } catch (err) {
      throw new RatedError('USAGE', `${source.name}: not a readable sqlite database: ${(err as Error).message}`, { cause: err });
    }
    try {
      const tables = new Set((db.exec("SELECT name FROM sqlite_master WHERE type = 'table'")[0]?.values ?? []).map((r) => String(r[0])));
      const table = tables.has('bips') ? 'bips' : tables.has('bans') ? 'bans' : null;
      if (table === null) throw new RatedError('USAGE', `${source.name}: a sqlite database without fail2ban's bips or bans table`);
      const rows = db.exec(`SELECT ip, jail, timeofban, bantime FROM ${table}`)[0]?.values ?? [];
      const nowS = this.options.now / 1000;
      for (const [ip, jail, timeofban, bantime] of rows) {
        const where = `${source.name}: ${table} ${String(jail)} ${String(ip)}`;
        if (typeof ip !== 'string' || typeof timeofban !== 'number' || typeof bantime !== 'number') {
          this.skip('invalid', where);
          continue;
        }
        const reason = this.options.reason ?? String(jail);
        if (bantime < 0) {
          this.add(ip, PERMANENT, reason, where);
          continue;
        }
        const left = Math.ceil(timeofban + bantime - nowS);
        if (left <= 0) this.skip('expired', where);
        else this.add(ip, left, reason, where);
      }
    } catch (err) {
      if (err instanceof RatedError) throw err;
      throw new RatedError('USAGE', `${source.name}: cannot read fail2ban's bans: ${(err as Error).message}`, { cause: err });
    } finally {
      db.close();
    }
  }

  /** `cscli decisions list -o json` (alerts holding decisions, or bare decisions), or rated's own `export --format json`. */
  private readJson(source: ImportSource, kind: 'crowdsec' | 'rated'): void {
    let value: unknown;
    try {
      value = JSON.parse(source.bytes.toString('utf8'));
    } catch (err) {
      throw new RatedError('USAGE', `${source.name}: not JSON: ${(err as Error).message}`, { cause: err });
    }
    if (value === null) return;
    if (!Array.isArray(value)) throw new RatedError('USAGE', `${source.name}: expected a JSON array (cscli decisions list -o json, rated export --format json)`);
    value.forEach((item: unknown, i) => {
      const where = `${source.name}: entry ${i + 1}`;
      if (!item || typeof item !== 'object') { this.skip('invalid', where); return; }
      const o = item as Record<string, unknown>;
      if (kind === 'rated') { this.readRated(o, where); return; }
      const decisions = Array.isArray(o.decisions) ? o.decisions as unknown[] : [o];
      const scenario = typeof o.scenario === 'string' ? o.scenario : null;
      decisions.forEach((d, j) => this.readDecision(d, scenario, Array.isArray(o.decisions) ? `${where}, decision ${j + 1}` : where));
    });
  }

  private readDecision(d: unknown, alertScenario: string | null, where: string): void {
    if (!d || typeof d !== 'object') { this.skip('invalid', where); return; }
    const { type, scope, value, duration, scenario } = d as Record<string, unknown>;
    if (typeof type !== 'string' || type.toLowerCase() !== 'ban') { this.skip('not a ban', where); return; }
    if (typeof scope !== 'string' || !/^(ip|range)$/i.test(scope)) { this.skip('not an address', where); return; }
    if (typeof value !== 'string') { this.skip('invalid', where); return; }
    const ms = typeof duration === 'string' ? goDuration(duration) : null;
    if (ms === null) { this.skip('invalid', `${where}: duration ${JSON.stringify(duration)}`); return; }
    if (ms <= 0) { this.skip('expired', where); return; }
    const reason = this.options.reason ?? (typeof scenario === 'string' ? scenario : alertScenario ?? 'crowdsec');
    this.add(value, Math.ceil(ms / 1000), reason, where);
  }

  private readRated(o: Record<string, unknown>, where: string): void {
    const { ip, expires, reason } = o;
    if (typeof ip !== 'string') { this.skip('invalid', where); return; }
    let seconds: number | null = null;
    if (typeof expires === 'string') {
      const left = Math.ceil((Date.parse(expires) - this.options.now) / 1000);
      if (!Number.isFinite(left)) { this.skip('invalid', `${where}: expires ${JSON.stringify(expires)}`); return; }
      if (left <= 0) { this.skip('expired', where); return; }
      seconds = left;
    }
    this.add(ip, seconds, this.options.reason ?? (typeof reason === 'string' ? reason : 'imported'), where);
  }

  private add(text: string, seconds: number | null, reason: string, where: string): void {
    let ip: string;
    try {
      ip = parseBlockTarget(text).text;
    } catch {
      this.skip('invalid', `${where}: ${JSON.stringify(text.slice(0, 64))}`);
      return;
    }
    const capped = seconds === null ? null : Math.min(seconds, MAX_DURATION_MS / 1000);
    const known = this.byIp.get(ip);
    if (known) {
      this.result.duplicates++;
      if (capped !== null && (known.seconds === null || known.seconds < capped)) this.byIp.set(ip, { ...known, seconds: capped });
      return;
    }
    this.byIp.set(ip, { ip, seconds: capped, reason: reason.slice(0, 200) });
  }

  private skip(why: string, where: string): void {
    this.result.skipped[why] = (this.result.skipped[why] ?? 0) + 1;
    if (this.result.examples.length < 5) this.result.examples.push(`${why}: ${where}`);
  }
}

/** A ban with no end (fail2ban's bantime -1): the longest block rated makes, unless --for says otherwise. */
export const PERMANENT = MAX_DURATION_MS / 1000;

const GO_UNITS: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1, us: 0.001, µs: 0.001, ns: 0.000001 };

/** A Go duration (`3h59m12.5s`, `-1m0s`) in milliseconds, as CrowdSec prints them; null when it is not one. */
export function goDuration(text: string): number | null {
  const m = /^(-)?((?:\d+(?:\.\d+)?(?:h|ms|us|µs|ns|m|s))+)$/.exec(text.trim());
  if (!m?.[2]) return text.trim() === '0' ? 0 : null;
  let ms = 0;
  for (const part of m[2].matchAll(/(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s)/g)) ms += Number(part[1]) * (GO_UNITS[part[2] ?? 's'] ?? 0);
  return m[1] ? -ms : ms;
}
