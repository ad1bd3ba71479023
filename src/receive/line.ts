import { performance } from 'node:perf_hooks';
import { parseAddress, type Network } from '../address.js';
import { RateLimitedLog, type Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { backtrackingRisk } from '../regex-guard.js';
import { boundField, parseMethod, parseStatus, type HitSink } from './hit.js';

/**
 * Access-log lines, as the UDP receiver, the file receiver and `rated replay`
 * read them (SPEC §4):
 *
 * - an optional RFC 3164 header, `<PRI>Mmm dd hh:mm:ss [host ]tag: ` (nginx
 *   writes the host unless `nohostname`), then the message;
 * - by default the message's first field is the client address (nginx's
 *   `$remote_addr` starts both the `rated` and the `combined` format). When
 *   the rest follows `log_format rated '$remote_addr $request_method $status
 *   $host $request_uri'`, method, status, host and uri are read too; when it
 *   follows `combined`, method, uri, status and the time;
 * - or a configured pattern with named groups `ip` (required), `method`,
 *   `status`, `host`, `uri` and, for replay, `time`.
 *
 * Only the field at the fixed position is an address: the line is never
 * searched for one (HARDENING §4 row 43). Every address goes through
 * address.ts.
 */

/** Longest line read in full; the rest of a longer line is cut off (it still counts by its first field). */
export const MAX_LINE = 16 * 1024;

/** Why a line was not counted. */
export type LineReason =
  | 'empty'        // nothing but the header, or an empty datagram
  | 'binary'       // control characters (NUL, …): not an access-log line
  | 'bad-header'   // starts like a syslog header but is not RFC 3164
  | 'bad-address'  // the address field is not an acceptable client address
  | 'no-match'     // the configured pattern does not match
  | 'no-time'      // replay: the line carries no timestamp
  | 'bad-time';    // replay: the timestamp cannot be read

/** The fields read from one line. */
export interface ParsedLine {
  readonly ip: Network;
  readonly method: string | undefined;
  readonly status: number | undefined;
  readonly host: string | undefined;
  readonly uri: string | undefined;
  /** The line's own time, in ms since the epoch; NaN unless parsed with `time: true`. */
  readonly time: number;
}

export type LineResult =
  | { readonly kind: 'hit'; readonly line: ParsedLine }
  /** nginx's `unix:` client (a request over a unix socket): not a client address, not an error. */
  | { readonly kind: 'ignored'; readonly reason: 'unix-socket' }
  | { readonly kind: 'rejected'; readonly reason: LineReason };

export interface LineParserOptions {
  /** A regex (text or compiled) with named groups; null for the default formats. */
  readonly pattern?: string | RegExp | null;
  /** Read the line's time (combined `$time_local`, `$time_iso8601` or `$msec`); lines without one are rejected. */
  readonly time?: boolean;
}

const MONTHS: Record<string, number> = {
  Jan: 0, Feb: 1, Mar: 2, Apr: 3, May: 4, Jun: 5, Jul: 6, Aug: 7, Sep: 8, Oct: 9, Nov: 10, Dec: 11,
};

// PRI, timestamp (day space-padded), optional host, tag (nginx allows
// letters, digits and "_"; others add "-", "." or "[pid]"), ": ". Every part
// is bounded and the host cannot contain a space, so there is no backtracking
// worth the name.
const HEADER = /^<(\d{1,3})>(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ 0-3]\d [0-2]\d:[0-5]\d:[0-6]\d (?:[!-~]{1,255} )?[A-Za-z0-9_.[\]-]{1,64}: /;
// Anything but tab, LF (split already) and CR: such a line is not an access log line.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/;
// After the address: ident, remote user (escaped by nginx, so no raw quote),
// [time], "request", status. The time's fixed shape keeps the lazy user
// field linear.
const COMBINED = /^\S+ [^"]*? \[(\d\d\/[A-Z][a-z]{2}\/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] "([^"]*)" (\d{3})(?: |$)/;
const TIME_LOCAL = /^(\d\d)\/([A-Z][a-z]{2})\/(\d{4}):(\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)$/;
const TIME_ISO = /^(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(\.\d{1,9})?(Z|[+-]\d\d:?\d\d)$/;
const TIME_EPOCH = /^\d{9,11}(\.\d{1,6})?$/;

/** Compiles a configured pattern; throws an Error saying what is wrong with it. */
export function compilePattern(pattern: string | RegExp): RegExp {
  const re = typeof pattern === 'string' ? new RegExp(pattern) : pattern;
  if (!/\(\?<ip>/.test(re.source)) throw new Error('the pattern needs a named group "ip", e.g. ^(?<ip>\\S+) ');
  const risk = typeof pattern === 'string' ? backtrackingRisk(re.source) : null;
  if (risk !== null) throw new Error(`the pattern has ${risk}, which can take exponential time on a hostile line; write it without one`);
  // Global or sticky regexes keep state between exec() calls.
  return re.global || re.sticky ? new RegExp(re.source, re.flags.replace(/[gy]/g, '')) : re;
}

/** True when the pattern has a named group of this name. */
export function hasGroup(re: RegExp, name: string): boolean {
  return re.source.includes(`(?<${name}>`);
}

/** Parses access-log lines; one instance per receiver, reused for every line. */
export class LineParser {
  private readonly pattern: RegExp | null;
  private readonly time: boolean;
  // Consecutive lines share their second: parse each timestamp text once.
  private lastTimeText = '';
  private lastTime = NaN;

  constructor(options: LineParserOptions = {}) {
    this.pattern = options.pattern === undefined || options.pattern === null ? null : compilePattern(options.pattern);
    this.time = options.time === true;
  }

  /** Parses one line (no newline; a trailing CR is dropped); lines longer than MAX_LINE are read up to it. */
  parse(input: string): LineResult {
    let line = input.length > MAX_LINE ? input.slice(0, MAX_LINE) : input;
    if (line.charCodeAt(line.length - 1) === 13) line = line.slice(0, -1);
    if (line.length === 0) return reject('empty');
    if (CONTROL.test(line)) return reject('binary');
    let message = line;
    if (line.charCodeAt(0) === 60 /* < */) {
      const h = HEADER.exec(line);
      if (h === null || Number(h[1]) > 191) return reject('bad-header');
      message = line.slice(h[0].length);
      if (message.length === 0) return reject('empty');
    }
    return this.pattern === null ? this.parseDefault(message) : this.parseWithPattern(this.pattern, message);
  }

  private parseDefault(message: string): LineResult {
    const sp = message.indexOf(' ');
    const first = sp < 0 ? message : message.slice(0, sp);
    if (first === 'unix:') return IGNORED_UNIX;
    const ip = parseAddress(first);
    if (ip === null) return reject('bad-address');
    if (sp < 0) return this.hit(ip, undefined, undefined, undefined, undefined, undefined);
    const rest = message.slice(sp + 1);

    const c = COMBINED.exec(rest);
    if (c !== null) {
      const request = c[2] ?? '';
      const s1 = request.indexOf(' ');
      const method = parseMethod(s1 < 0 ? request : request.slice(0, s1));
      let uri: string | undefined;
      if (s1 >= 0) {
        const s2 = request.indexOf(' ', s1 + 1);
        uri = boundField(s2 < 0 ? request.slice(s1 + 1) : request.slice(s1 + 1, s2));
      }
      return this.hit(ip, method, parseStatus(c[3]), undefined, uri, c[1]);
    }

    // log_format rated: method status host uri (the uri is the rest of the line).
    const a = rest.indexOf(' ');
    const b = a < 0 ? -1 : rest.indexOf(' ', a + 1);
    const d = b < 0 ? -1 : rest.indexOf(' ', b + 1);
    if (d >= 0) {
      const method = parseMethod(rest.slice(0, a));
      const status = parseStatus(rest.slice(a + 1, b));
      if (method !== undefined && status !== undefined) {
        const host = rest.slice(b + 1, d);
        return this.hit(ip, method, status, host === '-' ? undefined : boundField(host, 256), boundField(rest.slice(d + 1)), undefined);
      }
    }
    return this.hit(ip, undefined, undefined, undefined, undefined, undefined);
  }

  private parseWithPattern(re: RegExp, message: string): LineResult {
    const m = re.exec(message);
    const g = m?.groups;
    if (!g) return reject('no-match');
    const text = g.ip;
    if (text === 'unix:') return IGNORED_UNIX;
    const ip = text === undefined ? null : parseAddress(text);
    if (ip === null) return reject('bad-address');
    const host = g.host;
    return this.hit(ip, parseMethod(g.method), parseStatus(g.status),
      host === undefined || host === '-' ? undefined : boundField(host, 256), boundField(g.uri), g.time);
  }

  private hit(ip: Network, method: string | undefined, status: number | undefined, host: string | undefined,
    uri: string | undefined, timeText: string | undefined): LineResult {
    let time = NaN;
    if (this.time) {
      if (timeText === undefined || timeText === '') return reject('no-time');
      if (timeText !== this.lastTimeText) {
        this.lastTimeText = timeText;
        this.lastTime = parseLogTime(timeText);
      }
      time = this.lastTime;
      if (Number.isNaN(time)) return reject('bad-time');
    }
    return { kind: 'hit', line: { ip, method, status, host, uri, time } };
  }
}

const IGNORED_UNIX: LineResult = Object.freeze({ kind: 'ignored', reason: 'unix-socket' });
const REJECTED = new Map<LineReason, LineResult>();

function reject(reason: LineReason): LineResult {
  let r = REJECTED.get(reason);
  if (r === undefined) {
    r = Object.freeze({ kind: 'rejected', reason });
    REJECTED.set(reason, r);
  }
  return r;
}

/**
 * Reads a log timestamp into ms since the epoch: nginx's `$time_local`
 * (`22/Nov/2026:10:00:00 +0100`), `$time_iso8601` (`2026-11-22T10:00:00+01:00`)
 * or `$msec` (`1795341600.123`). NaN when it is none of them or out of range.
 */
export function parseLogTime(text: string): number {
  let m = TIME_LOCAL.exec(text);
  if (m !== null) {
    const month = MONTHS[m[2] ?? ''];
    if (month === undefined) return NaN;
    const offset = (Number(m[8]) * 60 + Number(m[9])) * (m[7] === '-' ? -1 : 1);
    return utc(Number(m[3]), month, Number(m[1]), Number(m[4]), Number(m[5]), Number(m[6]), 0, offset);
  }
  m = TIME_ISO.exec(text);
  if (m !== null) {
    const zone = m[8] ?? 'Z';
    let offset = 0;
    if (zone !== 'Z') {
      const digits = zone.replace(':', '');
      offset = (Number(digits.slice(1, 3)) * 60 + Number(digits.slice(3, 5))) * (digits[0] === '-' ? -1 : 1);
    }
    const ms = m[7] === undefined ? 0 : Math.floor(Number(`0${m[7]}`) * 1000);
    return utc(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]), ms, offset);
  }
  if (TIME_EPOCH.test(text)) return Math.round(Number(text) * 1000);
  return NaN;
}

function utc(year: number, month: number, day: number, h: number, min: number, s: number, ms: number, offsetMin: number): number {
  if (month < 0 || month > 11 || day < 1 || day > 31 || h > 23 || min > 59 || s > 60 || offsetMin < -1440 || offsetMin > 1440) return NaN;
  const t = Date.UTC(year, month, day, h, min, s, ms);
  // Date.UTC rolls 31 Feb over into March: refuse it.
  if (new Date(t).getUTCDate() !== day) return NaN;
  return t - offsetMin * 60_000;
}

/**
 * Splits a byte stream into lines at LF, keeping a partial last line until
 * its newline arrives. A line longer than `max` bytes is cut to `max` (the
 * rest up to its newline is skipped), so one endless line costs bounded
 * memory. Bytes are read as Latin-1: nginx escapes everything outside
 * printable ASCII, and the address validator accepts ASCII only.
 */
export class LineSplitter {
  private parts: Buffer[] = [];
  private held = 0;
  private cut = false;

  constructor(private readonly onLine: (line: string) => void, private readonly max = MAX_LINE) {}

  /** Bytes of a partial line held until its newline. */
  get pending(): number {
    return this.held;
  }

  push(chunk: Buffer): void {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(10, start);
      if (nl < 0) {
        this.hold(chunk, start, chunk.length);
        return;
      }
      if (this.held === 0 && !this.cut) {
        this.onLine(chunk.toString('latin1', start, Math.min(nl, start + this.max)));
      } else {
        this.hold(chunk, start, nl);
        this.onLine(this.take());
      }
      start = nl + 1;
    }
  }

  /** Returns the partial line held (null when none) and forgets it. */
  flush(): string | null {
    if (this.held === 0 && !this.cut) return null;
    return this.take();
  }

  private hold(chunk: Buffer, start: number, end: number): void {
    const room = this.max - this.held;
    const n = Math.min(end - start, room);
    if (n < end - start) this.cut = true;
    if (n > 0) {
      // Copy: the chunk's buffer is reused by the reader.
      this.parts.push(Buffer.from(chunk.subarray(start, start + n)));
      this.held += n;
    }
  }

  private take(): string {
    const text = this.parts.length === 1 ? (this.parts[0] as Buffer).toString('latin1') : Buffer.concat(this.parts).toString('latin1');
    this.parts = [];
    this.held = 0;
    this.cut = false;
    return text;
  }
}

export interface LineIntakeOptions {
  /** Receiver name for metrics and logs: `udp`, `files`. */
  readonly receiver: string;
  readonly parser: LineParser;
  readonly sink: HitSink;
  readonly metrics: Metrics;
  readonly log: Logger;
}

/**
 * Turns lines into hits for the limiter, counting each line once as received
 * (a valid address), rejected (per reason) or ignored; rejected lines are
 * warned about at most once per reason every 10 s.
 */
export class LineIntake {
  private readonly warn: RateLimitedLog;
  private readonly receiver: string;

  constructor(private readonly options: LineIntakeOptions) {
    this.receiver = options.receiver;
    this.warn = new RateLimitedLog(options.log);
  }

  /** One line; `source` (a file name) goes into the warning. */
  line(text: string, source?: string): void {
    const r = this.options.parser.parse(text);
    const metrics = this.options.metrics;
    switch (r.kind) {
      case 'hit': {
        metrics.received.inc(this.receiver);
        const l = r.line;
        const outcome = this.options.sink({ ip: l.ip, method: l.method, status: l.status, host: l.host, uri: l.uri, at: performance.now() });
        if (outcome === 'allowed') metrics.ignored.inc(`${this.receiver}\tallow-list`);
        return;
      }
      case 'ignored':
        metrics.ignored.inc(`${this.receiver}\t${r.reason}`);
        return;
      case 'rejected':
        this.reject(r.reason, text, source);
        return;
    }
  }

  /** Counts a rejection that happened before parsing (a datagram from a foreign peer, a lost partial line). */
  reject(reason: string, text: string | undefined, source?: string): void {
    this.options.metrics.rejected.inc(`${this.receiver}\t${reason}`);
    const fields: Record<string, unknown> = { receiver: this.receiver, reason };
    if (source !== undefined) fields.source = source;
    if (text !== undefined) fields.line = printable(text.slice(0, 120));
    this.warn.warn(`${this.receiver}:${reason}`, fields, 'log line rejected');
  }
}

/** A sample of hostile input that is safe to log: control characters escaped. */
function printable(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\x00-\x1f\x7f-\xff]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}
