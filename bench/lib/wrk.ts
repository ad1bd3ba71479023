import { execa } from 'execa';
import { fileURLToPath } from 'node:url';
import type { Namespace } from '../../test/helpers/netns.js';

/** The wrk scripts in bench/lua/. */
export const LUA = {
  /** Sends `GET /` with a header (BENCH_HEADER) rotating over BENCH_ADDRESSES addresses. */
  rotate: fileURLToPath(new URL('../lua/rotate.lua', import.meta.url)),
  /** Sends every address BENCH_PASSES times, prints "done" after the last answer, then only allow-listed filler. */
  storm: fileURLToPath(new URL('../lua/storm.lua', import.meta.url)),
};

export interface WrkOptions {
  readonly namespace: Namespace;
  readonly url: string;
  readonly seconds: number;
  readonly connections?: number;
  readonly threads?: number;
  readonly script?: string;
  readonly env?: Readonly<Record<string, string>>;
  readonly cpus: string | null;
}

/** What one wrk run reported. */
export interface WrkResult {
  readonly requests: number;
  readonly seconds: number;
  /** Requests per second, as wrk computes it (requests ÷ measured time). */
  readonly rps: number;
  /** Connect, read, write and timeout errors added up. */
  readonly socketErrors: number;
  readonly non2xx: number;
  readonly latencyAvgMs: number | null;
  readonly latencyP99Ms: number | null;
  readonly raw: string;
}

/** Runs wrk (64 keep-alive connections, one thread by default) and parses its report. */
export async function runWrk(o: WrkOptions): Promise<WrkResult> {
  const argv = [
    'ip', 'netns', 'exec', o.namespace.name,
    ...(o.cpus !== null ? ['taskset', '-c', o.cpus] : []),
    'wrk', '-t', String(o.threads ?? 1), '-c', String(o.connections ?? 64), '-d', `${o.seconds}s`,
    '--timeout', '5s', '--latency',
    ...(o.script ? ['-s', o.script] : []),
    o.url,
  ];
  const [cmd, ...args] = argv as [string, ...string[]];
  const r = await execa(cmd, args, {
    reject: false,
    input: '',
    env: { ...o.env },
    extendEnv: true,
    timeout: (o.seconds + 30) * 1000,
    killSignal: 'SIGKILL',
  });
  if (r.exitCode !== 0) throw new Error(`wrk ${o.url} failed (${r.exitCode ?? r.signal ?? 'killed'}): ${r.stderr.trim() || r.stdout.trim()}`);
  return parseWrk(r.stdout);
}

/** Reads wrk's text report. */
export function parseWrk(raw: string): WrkResult {
  const m = /(\d+) requests in ([\d.]+)(us|ms|s|m)\b/.exec(raw);
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(raw);
  if (!m || !rps) throw new Error(`cannot read wrk's report:\n${raw}`);
  const scale = { us: 1e-6, ms: 1e-3, s: 1, m: 60 }[m[3] as 'us' | 'ms' | 's' | 'm'];
  const errors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(raw);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(raw);
  return {
    requests: Number(m[1]),
    seconds: Number(m[2]) * scale,
    rps: Number(rps[1]),
    socketErrors: errors ? errors.slice(1).map(Number).reduce((a, b) => a + b, 0) : 0,
    non2xx: non2xx ? Number(non2xx[1]) : 0,
    latencyAvgMs: duration(/Latency\s+([\d.]+\w+)/.exec(raw)?.[1]),
    latencyP99Ms: duration(/^\s+99%\s+([\d.]+\w+)/m.exec(raw)?.[1]),
    raw,
  };
}

/** A wrk duration ("812.00us", "2.34ms", "1.02s") in milliseconds. */
function duration(text: string | undefined): number | null {
  const m = text ? /^([\d.]+)(us|ms|s|m)$/.exec(text) : null;
  if (!m) return null;
  return Number(m[1]) * { us: 1e-3, ms: 1, s: 1e3, m: 6e4 }[m[2] as 'us' | 'ms' | 's' | 'm'];
}
