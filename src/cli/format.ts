import type { BlockView } from '../block.js';

/** Formats a remaining time compactly: `5h59m`, `42s`. */
export function remaining(ms: number): string {
  if (ms <= 0) return 'now';
  const s = Math.ceil(ms / 1000);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (d > 0) return `${d}d${h}h`;
  if (h > 0) return `${h}h${m}m`;
  if (m > 0) return `${m}m${sec}s`;
  return `${sec}s`;
}

function time(iso: string | null): string {
  return iso === null ? '-' : iso.replace('T', ' ').replace(/\.\d{3}Z$/, 'Z');
}

// Control characters and bidirectional overrides, which would let a reason
// (typed by someone, or arriving from another node) drive the terminal.
// eslint-disable-next-line no-control-regex -- control characters are what it looks for
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u2028-\u202e\u2066-\u2069]/g;

/** Text safe to print to a terminal: unprintable characters as `\u….` escapes. */
export function printable(text: string): string {
  return text.replace(UNPRINTABLE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** Bytes for people: `720 B`, `1.4 KiB`, `3.2 MiB`. */
function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1048576).toFixed(1)} MiB`;
}

const HEADER = ['IP', 'SOURCE', 'RULE', 'HITS', 'SINCE', 'EXPIRES', 'DROPPED', 'REASON'];

function cells(b: BlockView, now: number): string[] {
  return [
    b.ip,
    b.source,
    b.rule ?? '-',
    b.hits === null ? '-' : String(b.hits),
    time(b.since),
    b.expires === null ? 'never' : `${time(b.expires)} (${remaining(Date.parse(b.expires) - now)})`,
    b.dropped ? `${b.dropped.packets} pkts ${bytes(b.dropped.bytes)}` : '-',
    b.reason ?? '-',
  ].map(printable);
}

/** Renders blocks as a table for people. */
export function blocksTable(blocks: readonly BlockView[], now = Date.now()): string {
  const lines: string[] = [];
  const table = new TableWriter((l) => lines.push(l), now);
  for (const b of blocks) table.row(b);
  table.end();
  return lines.join('\n');
}

/**
 * Writes the block table as rows arrive: the column widths are those of the
 * first rows (up to `settleAfter`), so a listing of 1,000,000 blocks starts
 * printing at once and holds only those rows.
 */
export class TableWriter {
  private pending: string[][] | null = [];
  private widths: number[] = [];
  private count = 0;

  constructor(private readonly write: (line: string) => void, private readonly now = Date.now(), private readonly settleAfter = 1000) {}

  row(b: BlockView): void {
    this.count++;
    const r = cells(b, this.now);
    if (this.pending === null) return this.write(this.line(r));
    this.pending.push(r);
    if (this.pending.length >= this.settleAfter) this.settle();
  }

  end(): void {
    if (this.count === 0) return this.write('No active blocks.');
    this.settle();
    this.write('');
    this.write(`${this.count} active block${this.count === 1 ? '' : 's'}`);
  }

  private settle(): void {
    if (this.pending === null) return;
    const rows = this.pending;
    this.widths = HEADER.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
    this.pending = null;
    this.write(this.line(HEADER));
    for (const r of rows) this.write(this.line(r));
  }

  private line(cols: string[]): string {
    return cols.map((c, i) => (i === cols.length - 1 ? c : c.padEnd(this.widths[i] ?? 0))).join('  ');
  }
}
