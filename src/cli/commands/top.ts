import { emitKeypressEvents } from 'node:readline';
import type { BlockView } from '../../block.js';
import type { TopView } from '../../control/status.js';
import { formatSpan } from '../../duration.js';
import { RatedError } from '../../errors.js';
import { api, out, type GlobalArgs } from '../context.js';

/** How the clients nearest a limit are ordered: nearest first, most hits first, or by address. */
export type ClientOrder = 'nearest' | 'hits' | 'address';

const KEYS: Readonly<Record<string, ClientOrder>> = { c: 'nearest', h: 'hits', a: 'address' };
const REFRESH_MS = 1000;

/** Two samples a known time apart, for rates. */
export interface Samples {
  readonly prev: TopView;
  readonly cur: TopView;
  readonly seconds: number;
}

/**
 * The screen of `rated top` as lines of at most `width` characters, fitting
 * `height` rows: rates from two samples, the clients nearest a limit, the
 * latest blocks. A pure function, so what the screen shows is tested as text.
 */
export function renderTop(s: Samples, order: ClientOrder, width: number, height: number, live: boolean): string[] {
  const { prev, cur } = s;
  const dt = Math.max(s.seconds, 0.001);
  const rate = (a: number, b: number): string => fmt(Math.max(0, a - b) / dt);
  const names = Object.keys(cur.receivers).sort();
  const rejected = names.reduce((sum, n) => sum + (cur.receivers[n]?.rejected ?? 0) - (prev.receivers[n]?.rejected ?? 0), 0);
  const lines: string[] = [];
  lines.push(`rated top · up ${formatSpan(cur.uptime * 1000)} · ${cur.backend} · ${cur.at.slice(11, 19)} UTC${live ? ' · q quits · sort clients: c nearest, h hits, a address' : ''}`);
  lines.push(`notifications/s  ${names.length === 0 ? 'no receivers' : names.map((n) => `${n} ${rate(cur.receivers[n]?.received ?? 0, prev.receivers[n]?.received ?? 0)}`).join('   ')}   rejected/s ${fmt(Math.max(0, rejected) / dt)}`);
  lines.push(`blocks/s ${rate(cur.blocks, prev.blocks)}   lifted/s ${rate(cur.unblocks, prev.unblocks)}   active blocks ${cur.activeBlocks}   tracked clients ${cur.trackedClients}`);
  const dropped = cur.droppedPackets === null || prev.droppedPackets === null ? 'n/a' : rate(cur.droppedPackets, prev.droppedPackets);
  lines.push(`dropped packets/s ${dropped}   redis ${cur.redis === null ? 'not configured' : `${cur.redis.up ? 'up' : 'DOWN'} (${cur.redis.mode})`}`);
  lines.push('');
  const room = Math.max(2, height - lines.length - 4);
  const clientRows = Math.max(1, Math.min(cur.closest.length, Math.ceil(room / 2)));
  const blockRows = Math.max(1, room - clientRows);
  lines.push(`CLIENTS NEAREST A LIMIT (${order})`);
  lines.push(`${'CLIENT'.padEnd(40)} ${'RULE'.padEnd(16)} ${'HITS/LIMIT'.padStart(12)} ${'NEAR'.padStart(5)}`);
  const clients = [...cur.closest].sort(order === 'hits' ? (a, b) => b.hits - a.hits
    : order === 'address' ? (a, b) => a.client.localeCompare(b.client, 'en', { numeric: true })
      : (a, b) => b.hits / b.limit - a.hits / a.limit);
  if (clients.length === 0) lines.push('(no client counted in its window)');
  for (const c of clients.slice(0, clientRows)) {
    lines.push(`${c.client.padEnd(40)} ${c.rule.padEnd(16)} ${`${c.hits}/${c.limit}`.padStart(12)} ${`${Math.round((100 * c.hits) / c.limit)}%`.padStart(5)}`);
  }
  lines.push('LATEST BLOCKS');
  lines.push(`${'IP'.padEnd(40)} ${'SOURCE'.padEnd(10)} ${'RULE'.padEnd(16)} ${'SINCE'.padEnd(8)} ${'LEFT'.padStart(8)}  REASON`);
  if (cur.latest.length === 0) lines.push('(none since rated started)');
  for (const b of cur.latest.slice(0, blockRows)) lines.push(blockLine(b, Date.parse(cur.at)));
  return lines.map((l) => (l.length > width ? l.slice(0, width) : l));
}

function blockLine(b: BlockView, now: number): string {
  const since = b.since === null ? '-' : b.since.slice(11, 19);
  const left = b.expires === null ? 'never' : formatSpan(Math.max(0, Date.parse(b.expires) - now));
  return `${b.ip.padEnd(40)} ${b.source.padEnd(10)} ${(b.rule ?? '-').padEnd(16)} ${since.padEnd(8)} ${left.padStart(8)}  ${b.reason ?? ''}`;
}

/** A rate for people: 3 significant figures, no more than one decimal. */
function fmt(n: number): string {
  if (n >= 100) return String(Math.round(n));
  return n.toFixed(1).replace(/\.0$/, '');
}

/**
 * `rated top`: a live view refreshed each second, read from the control API.
 * Plain ANSI (the alternate screen, home, clear to the end): four escape
 * sequences that every terminal knows cost less than a library's start-up.
 * When stdout is not a terminal, or with --once, one snapshot of plain lines.
 */
export async function top(args: GlobalArgs & { once?: boolean }): Promise<void> {
  const sample = async (): Promise<{ view: TopView; at: number }> => {
    const res = await api(args, 'GET', '/top?clients=50&blocks=50');
    return { view: res.body as TopView, at: performance.now() };
  };
  let prev = await sample();
  const live = !args.once && process.stdout.isTTY && process.stdin.isTTY;
  if (!live) {
    await new Promise((resolve) => setTimeout(resolve, REFRESH_MS));
    const cur = await sample();
    for (const line of renderTop({ prev: prev.view, cur: cur.view, seconds: (cur.at - prev.at) / 1000 }, 'nearest', 200, 60, false)) out(line);
    return;
  }
  let order: ClientOrder = 'nearest';
  let last: Samples = { prev: prev.view, cur: prev.view, seconds: 1 };
  let problem: string | null = null;
  const draw = (): void => {
    const { columns, rows } = process.stdout;
    const lines = problem === null ? renderTop(last, order, columns, rows, true) : [`rated top: ${problem}`, '', 'retrying every second · q quits'];
    process.stdout.write(`\x1b[H${lines.map((l) => `${l}\x1b[K`).join('\n')}\x1b[J`);
  };
  process.stdout.write('\x1b[?1049h\x1b[?25l');
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      sample().then((cur) => {
        last = { prev: prev.view, cur: cur.view, seconds: (cur.at - prev.at) / 1000 };
        prev = cur;
        problem = null;
        draw();
      }, (err: unknown) => {
        problem = err instanceof RatedError ? err.message : String(err);
        draw();
      });
    }, REFRESH_MS);
    const finish = (): void => {
      clearInterval(timer);
      process.stdin.setRawMode(false);
      process.stdin.pause();
      process.stdout.write('\x1b[?25h\x1b[?1049l');
      resolve();
    };
    emitKeypressEvents(process.stdin);
    process.stdin.setRawMode(true);
    process.stdin.resume();
    process.stdin.on('keypress', (_text: string | undefined, key: { name?: string; ctrl?: boolean } | undefined) => {
      const name = key?.name ?? '';
      if (name === 'q' || (key?.ctrl === true && name === 'c')) { finish(); return; }
      const next = KEYS[name];
      if (next !== undefined) { order = next; draw(); }
    });
    process.stdout.on('resize', draw);
    draw();
  });
}
