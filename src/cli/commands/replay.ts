import { createReadStream, openSync, closeSync, fstatSync } from 'node:fs';
import { pipeline, Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { formatDuration } from '../../duration.js';
import { RatedError } from '../../errors.js';
import { compilePattern, hasGroup, LineParser, LineSplitter } from '../../receive/line.js';
import { Replay, REORDER_MS, type ReplayBlock, type ReplaySummary } from '../../replay.js';
import { configOf, out, type GlobalArgs } from '../context.js';


export interface ReplayArgs extends GlobalArgs {
  logs: string[];
  json?: boolean;
  pattern?: string;
  allowSelf?: boolean;
}

/** `rated replay`: runs access logs through the configured rules on their own timestamps; touches nothing. */
export async function replay(args: ReplayArgs): Promise<void> {
  const { config } = await configOf(args);
  const pattern = args.pattern ?? null;
  if (pattern !== null) checkPattern(pattern);
  if (args.logs.length === 0) throw new RatedError('USAGE', 'name at least one LOG (or - for stdin)');
  if (args.logs.filter((l) => l === '-').length > 1) throw new RatedError('USAGE', 'stdin (-) can be read only once');
  for (const log of args.logs) if (log !== '-') checkReadable(log);

  const logs = args.logs.length > 1 && !args.logs.includes('-') ? await oldestFirst(args.logs, pattern) : args.logs;
  const r = new Replay({ config, pattern, allowSelf: args.allowSelf === true });
  const t0 = performance.now();
  const damaged: Damage[] = [];
  for (const log of logs) {
    let n = 0;
    const damage = await readLines(log, (line) => {
      r.line(line, log, ++n);
      return undefined;
    });
    if (damage !== null && n === 0) throw new RatedError('USAGE', `${log === '-' ? 'stdin' : log}: cannot read: ${damage}`);
    if (damage !== null) damaged.push({ log, afterLine: n, why: damage });
  }
  const seconds = (performance.now() - t0) / 1000;
  const { blocks, summary } = r.finish();
  // A log in another format: every line refused. Saying "no client would have been blocked" would mislead.
  if (summary.lines > 0 && summary.rejected === summary.lines) {
    const reasons = Object.entries(summary.rejectedByReason).map(([k, v]) => `${k} ${v}`).join(', ');
    throw new RatedError('USAGE', `none of the ${summary.lines} lines could be read as an access log (${reasons}): ` +
      'rated reads nginx\'s combined format; give another one with --pattern (named groups ip and time)');
  }
  if (args.json) {
    out(JSON.stringify({ blocks: blocks.map(blockJson), summary: { ...summaryJson(summary, seconds, logs), damaged } }, null, 2));
  } else {
    out(table(blocks));
    out();
    for (const line of summaryText(summary, seconds)) out(line);
  }
  for (const d of damaged) process.stderr.write(`rated: warning: ${d.log === '-' ? 'stdin' : d.log} is damaged after line ${d.afterLine} (${d.why}): the results cover the lines before it\n`);
}

/** Where a log could not be read further. */
interface Damage {
  readonly log: string;
  readonly afterLine: number;
  readonly why: string;
}

function checkPattern(pattern: string): void {
  let re: RegExp;
  try {
    re = compilePattern(pattern);
  } catch (err) {
    throw new RatedError('USAGE', `--pattern: ${(err as Error).message.replace(/^Invalid regular expression: /, 'invalid regular expression: ')}`);
  }
  if (!hasGroup(re, 'time')) throw new RatedError('USAGE', '--pattern: replay needs a named group "time" (nginx $time_local, $time_iso8601 or $msec) besides "ip"');
}

function checkReadable(path: string): void {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new RatedError('USAGE', `${path}: cannot read: ${e.code === 'ENOENT' ? 'no such file' : e.code === 'EACCES' ? 'permission denied' : e.message}`);
  }
  try {
    if (fstatSync(fd).isDirectory()) throw new RatedError('USAGE', `${path}: is a directory, not a log`);
  } finally {
    closeSync(fd);
  }
}

/**
 * The bytes of a log (stdin for `-`), gunzipped when they start with gzip's
 * magic bytes, whatever the name (`.gz`, or a compressed stdin).
 */
async function* bytesOf(raw: Readable): AsyncGenerator<Buffer> {
  const chunks = raw[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const rest = { [Symbol.asyncIterator]: () => chunks };
  const first = await chunks.next();
  if (first.done === true) return;
  const head = first.value;
  if (head[0] !== 0x1f || head[1] !== 0x8b) {
    yield head;
    yield* rest;
    return;
  }
  const source = Readable.from((async function* () {
    yield head;
    yield* rest;
  })());
  yield* pipeline(source, createGunzip(), () => undefined) as AsyncIterable<Buffer>;
}

/**
 * Calls `onLine` for every line, the last one too when it has no newline.
 * Returns why the log could not be read to its end (a truncated or corrupt
 * `.gz`), or null; the lines before the damage have been given.
 */
async function readLines(log: string, onLine: (line: string) => 'stop' | undefined): Promise<string | null> {
  // An object, so that the checks below see the splitter's writes.
  const state = { stop: false };
  const splitter = new LineSplitter((line) => {
    if (!state.stop && onLine(line) === 'stop') state.stop = true;
  });
  const raw: Readable = log === '-' ? process.stdin : createReadStream(log, { highWaterMark: 256 * 1024 });
  try {
    for await (const chunk of bytesOf(raw)) {
      splitter.push(chunk);
      if (state.stop) break;
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code !== 'Z_DATA_ERROR' && e.code !== 'Z_BUF_ERROR') throw new RatedError('USAGE', `${log === '-' ? 'stdin' : log}: cannot read: ${e.message}`, { cause: err });
    // A cut line at the damage is not a line.
    return e.code === 'Z_BUF_ERROR' ? 'unexpected end of gzip data' : 'invalid gzip data';
  } finally {
    if (raw !== process.stdin) raw.destroy();
  }
  if (!state.stop) {
    const last = splitter.flush();
    if (last !== null && last !== '') onLine(last);
  }
  return null;
}

/**
 * Orders logs by their first timestamp, so `access.log*` (newest first, as
 * the shell sorts the names) is replayed in time order.
 */
async function oldestFirst(logs: readonly string[], pattern: string | null): Promise<string[]> {
  const parser = new LineParser({ pattern, time: true });
  const firsts = new Map<string, number>();
  for (const log of logs) {
    let first = Infinity;
    let n = 0;
    await readLines(log, (line) => {
      const r = parser.parse(line);
      if (r.kind === 'hit') {
        first = r.line.time;
        return 'stop';
      }
      return ++n >= 10_000 ? 'stop' : undefined;
    });
    firsts.set(log, first);
  }
  return [...logs].sort((a, b) => (firsts.get(a) ?? Infinity) - (firsts.get(b) ?? Infinity));
}

function iso(ms: number | null): string | null {
  return ms === null || !Number.isFinite(ms) ? null : new Date(ms).toISOString();
}

function blockJson(b: ReplayBlock): Record<string, unknown> {
  return {
    ip: b.ip, rule: b.rule, reason: b.reason, hits: b.hits,
    since: iso(b.since), expires: iso(b.expires), duration: formatDuration(b.durationMs), durationMs: b.durationMs,
    offence: b.offence, file: b.file, line: b.line,
  };
}

function summaryJson(s: ReplaySummary, seconds: number, logs: readonly string[]): Record<string, unknown> {
  return {
    logs,
    lines: s.lines, rejected: s.rejected, rejectedByReason: s.rejectedByReason, ignored: s.ignored,
    clients: s.clients, blocks: s.blocks, blockedClients: s.blockedClients, refused: s.refused,
    reordered: s.reordered, outOfOrder: s.outOfOrder,
    from: iso(s.from), to: iso(s.to),
    seconds: Math.round(seconds * 1000) / 1000,
    linesPerSecond: seconds > 0 ? Math.round(s.lines / seconds) : null,
  };
}

function time(ms: number): string {
  return new Date(ms).toISOString().replace('T', ' ').replace(/\.\d{3}Z$/, 'Z');
}

function table(blocks: readonly ReplayBlock[]): string {
  if (blocks.length === 0) return 'No client would have been blocked.';
  const header = ['SINCE (log time)', 'IP', 'RULE', 'HITS', 'BLOCK', 'UNTIL', 'REASON'];
  const rows = blocks.map((b) => [
    time(b.since), b.ip, b.rule, String(b.hits),
    `${formatDuration(b.durationMs)}${b.offence > 1 ? ` (#${b.offence})` : ''}`, time(b.expires), b.reason,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ');
  return [line(header), ...rows.map(line)].join('\n');
}

function summaryText(s: ReplaySummary, seconds: number): string[] {
  const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? '' : 's'}`;
  const lines = [
    `${plural(s.lines, 'line')} read, ${s.rejected} rejected, ${s.ignored} ignored (allow list, unix sockets); ` +
    `${plural(s.clients, 'client')} seen; ${plural(s.blocks, 'block')} of ${plural(s.blockedClients, 'client')}` +
    (s.refused > 0 ? ` (${s.refused} refused: allow-listed network)` : ''),
  ];
  const reasons = Object.entries(s.rejectedByReason);
  if (reasons.length > 0) lines.push(`rejected: ${reasons.map(([r, n]) => `${r} ${n}`).join(', ')}`);
  if (s.from !== null && s.to !== null) {
    const rate = seconds > 0 ? `, ${Math.round(s.lines / seconds)} lines/s` : '';
    lines.push(`log time ${time(s.from)} → ${time(s.to)}; replayed in ${seconds.toFixed(1)}s${rate}`);
  }
  if (s.reordered > 0) lines.push(`${plural(s.reordered, 'line')} counted at their own time though a later line came first (nginx writes a line when its request completes)`);
  if (s.outOfOrder > 0) {
    lines.push(`warning: ${plural(s.outOfOrder, 'line')} more than ${REORDER_MS / 60_000} minutes older than lines before them, not counted: give logs oldest first`);
  }
  return lines;
}
