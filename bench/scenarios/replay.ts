// Replay speed: `rated replay` over a generated combined-format access log,
// against the floor for reading a log in Node (readline, counting lines) on
// the same file in the same run, and against fail2ban-regex when installed.
import { createWriteStream, existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { once } from 'node:events';
import { execa } from 'execa';
import { onPath } from '../../test/helpers/prereq.js';
import { benchAddress, tool, type BenchContext, type Scenario } from '../lib/context.js';
import { interleave, median, spread } from '../lib/interleave.js';
import { BIN, ROOT, writeRatedConfig } from '../lib/rated.js';

const NAME = 'replay';
/** fail2ban-regex reads about 4,400 lines/s, so it gets a slice of the log. */
const FAIL2BAN_LINES = 20_000;
/** fail2ban-regex from PATH, or the command named by $FAIL2BAN_REGEX (e.g. a copy unpacked from the .deb). */
const FAIL2BAN = process.env.FAIL2BAN_REGEX ?? 'fail2ban-regex';
/** What fail2ban's nginx filters look like: the host first, then a request line and a status. */
const FAIL2BAN_REGEX = '^<HOST> \\S+ \\S+ .*"[A-Z]+ \\S+ HTTP/[0-9.]+" \\d+ ';

export const replay: Scenario = {
  name: NAME,
  title: 'Replay: rated replay against reading the same log with readline',
  tools: [],
  root: false,
  async run(ctx) {
    const help = await execa(process.execPath, [BIN, 'replay', '--help'], { reject: false, cwd: ROOT, input: '' });
    if (help.exitCode !== 0) {
      ctx.results.unavailable(NAME, 'rated replay, lines/s', 'this build of rated has no replay command');
      return;
    }
    const lines = ctx.quick ? 200_000 : 1_000_000;
    const log = join(ctx.scratch, 'access.log');
    const t = performance.now();
    const blocked = await generateLog(log, lines);
    ctx.log(`generated ${lines.toLocaleString('en-US')} combined-format lines (${(statSync(log).size / 2 ** 20).toFixed(0)} MB, `
      + `${blocked} clients above 360 requests in 120 s) in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    const dir = join(ctx.scratch, 'replay');
    mkdirSync(dir, { recursive: true });
    const config = writeRatedConfig(dir, { http: null, udp: null, rules: [{ name: 'default', limit: 360, window: '120s', block: '6h' }] });

    const commands: Record<string, string[]> = {
      readline: [tool('count-lines.mjs')],
      rated: [BIN, 'replay', '-c', config, '--json'],
    };
    const outputs = new Map<string, string>();
    const tiny = join(dir, 'one-line.log');
    await execa('head', ['-n', '1', log], { stdout: { file: tiny } });
    const timed = async (key: string, file: string): Promise<number> => {
      const argv = [process.execPath, ...(commands[key] as string[]), file];
      const [cmd, ...args] = (ctx.cpus.server !== null ? ['taskset', '-c', ctx.cpus.server, ...argv] : argv) as [string, ...string[]];
      const t0 = performance.now();
      const r = await execa(cmd, args, { reject: false, cwd: ROOT, input: '', timeout: 300_000, killSignal: 'SIGKILL', maxBuffer: 1024 * 1024 * 1024 });
      const seconds = (performance.now() - t0) / 1000;
      if (r.exitCode !== 0) throw new Error(`${key} failed (${r.exitCode ?? r.signal ?? 'killed'}): ${r.stderr.trim().split('\n').slice(-3).join(' ')}`);
      if (file === log) outputs.set(key, r.stdout);
      return seconds;
    };
    // Start-up is measured on a one-line log and taken off, so the figure is the reading speed.
    const startup = new Map<string, number>();
    for (const key of Object.keys(commands)) startup.set(key, median([await timed(key, tiny), await timed(key, tiny)]));
    const runs = await interleave(Object.keys(commands), ctx.rounds, async (key) => lines / Math.max(1e-3, (await timed(key, log)) - (startup.get(key) ?? 0)));
    const rated = runs.get('rated') as number[];
    const base = runs.get('readline') as number[];
    const decided = countDecisions(outputs.get('rated') ?? '');
    const ms = (key: string): string => `${Math.round(1000 * (startup.get(key) ?? 0))} ms`;
    ctx.results.add(NAME, {
      name: `rated replay, lines/s (${lines.toLocaleString('en-US')} lines)`,
      value: median(rated),
      unit: 'lines/s',
      baseline: { name: 'readline line count', value: median(base), unit: 'lines/s' },
      ratio: 'higher',
      note: [`start-up taken off (rated ${ms('rated')}, readline ${ms('readline')})`, spread(rated),
        decided === null ? '' : `${decided} blocks decided (${blocked} clients sent more than 360 requests in 120 s)`]
        .filter(Boolean).join('; '),
    });
    await fail2ban(ctx, log, median(rated));
  },
};

/** Blocks in `rated replay --json` output, when it is a JSON array or JSON lines. */
function countDecisions(out: string): number | null {
  const text = out.trim();
  if (text === '') return 0;
  try {
    const value: unknown = JSON.parse(text);
    if (Array.isArray(value)) return value.length;
    const blocks = (value as { blocks?: unknown }).blocks;
    if (Array.isArray(blocks)) return blocks.length;
    return null;
  } catch {
    return text.split('\n').filter((l) => l.startsWith('{')).length;
  }
}

async function fail2ban(ctx: BenchContext, log: string, ratedRate: number): Promise<void> {
  const target = { of: 'ratio', op: '>=', bound: 50 } as const;
  if (!(FAIL2BAN.includes('/') ? existsSync(FAIL2BAN) : onPath(FAIL2BAN))) {
    ctx.results.unavailable(NAME, 'rated replay against fail2ban-regex', `${FAIL2BAN} is not installed (apt-get install fail2ban, or set FAIL2BAN_REGEX)`, target);
    return;
  }
  ctx.log(`fail2ban-regex on the first ${FAIL2BAN_LINES.toLocaleString('en-US')} lines`);
  const slice = join(ctx.scratch, 'access-slice.log');
  const tiny = join(ctx.scratch, 'access-one-line.log');
  await execa('head', ['-n', String(FAIL2BAN_LINES), log], { stdout: { file: slice } });
  await execa('head', ['-n', '1', log], { stdout: { file: tiny } });
  const timed = async (file: string): Promise<{ seconds: number; stdout: string; stderr: string; exitCode: number | undefined }> => {
    const t0 = performance.now();
    const r = await execa(FAIL2BAN, [file, FAIL2BAN_REGEX], { reject: false, timeout: 300_000, input: '' });
    return { seconds: (performance.now() - t0) / 1000, stdout: r.stdout, stderr: r.stderr, exitCode: r.exitCode };
  };
  const startup = (await timed(tiny)).seconds;
  const r = await timed(slice);
  if (r.exitCode !== 0) {
    ctx.results.unavailable(NAME, 'rated replay against fail2ban-regex', `fail2ban-regex failed: ${r.stderr.trim().split('\n').pop() ?? ''}`, target);
    return;
  }
  const matched = /Lines: (\d+) lines, \d+ ignored, (\d+) matched/.exec(r.stdout);
  ctx.results.add(NAME, {
    name: 'rated replay against fail2ban-regex',
    value: ratedRate,
    unit: 'lines/s',
    baseline: { name: `fail2ban-regex (${FAIL2BAN_LINES.toLocaleString('en-US')} lines)`, value: FAIL2BAN_LINES / Math.max(1e-3, r.seconds - startup), unit: 'lines/s' },
    ratio: 'higher',
    target,
    note: `start-up (${Math.round(startup * 1000)} ms) taken off${matched ? `; fail2ban-regex matched ${Number(matched[2]).toLocaleString('en-US')} of ${Number(matched[1]).toLocaleString('en-US')} lines` : ''}`,
  });
}

/** A deterministic pseudo-random generator (mulberry32), so every run replays the same log. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const AGENTS = [
  'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0',
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36',
  'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1',
  'curl/7.88.1',
];
const PATHS = ['/', '/index.html', '/login', '/api/items?id=', '/static/app.js', '/search?q=', '/wp-login.php'];

/**
 * Writes `n` combined-format lines at about 280 a second (one hour for a
 * million): 20,000 ordinary clients, and 10 heavy ones that send a fifth of
 * the traffic, fast enough to cross 360 requests in 120 s. Returns how many
 * clients cross that limit.
 */
async function generateLog(path: string, n: number): Promise<number> {
  const rnd = random(7);
  const out = createWriteStream(path);
  const start = Date.UTC(2026, 10, 22, 7, 0, 0);
  // 1,000,000 lines make one hour; fewer lines a shorter log at the same rate.
  const span = Math.round((3_600_000 * n) / 1_000_000);
  const pad = (x: number): string => (x < 10 ? `0${x}` : String(x));
  let chunk: string[] = [];
  let second = -1;
  let stamp = '';
  const heavy = 10;
  for (let i = 0; i < n; i++) {
    const ms = start + Math.floor((i / n) * span);
    const s = Math.floor(ms / 1000);
    if (s !== second) {
      second = s;
      const d = new Date(s * 1000);
      stamp = `${pad(d.getUTCDate())}/${MONTHS[d.getUTCMonth()] ?? 'Jan'}/${d.getUTCFullYear()}:${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} +0000`;
    }
    const client = rnd() < 0.2 ? Math.floor(rnd() * heavy) : heavy + Math.floor(rnd() * 20_000);
    const path = PATHS[Math.floor(rnd() * PATHS.length)] ?? '/';
    const uri = path.endsWith('=') ? `${path}${Math.floor(rnd() * 100_000)}` : path;
    const status = rnd() < 0.95 ? 200 : 404;
    const agent = AGENTS[Math.floor(rnd() * AGENTS.length)] ?? '-';
    chunk.push(`${benchAddress(client)} - - [${stamp}] "GET ${uri} HTTP/1.1" ${status} ${status === 200 ? 612 : 153} "-" "${agent}"\n`);
    if (chunk.length === 10_000) {
      if (!out.write(chunk.join(''))) await once(out, 'drain');
      chunk = [];
    }
  }
  out.end(chunk.join(''));
  await once(out, 'finish');
  // Each heavy client sends 0.2 × n / 10 lines over the span: 667 per 120 s, against a limit of 360.
  return ((0.2 * n) / heavy / span) * 120_000 > 360 ? heavy : 0;
}
