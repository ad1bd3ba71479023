import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import type { Namespace } from './netns.js';
import { waitFor, type WaitForOptions } from './wait-for.js';

/** The checkout's root, where `bin/rated` and `dist/` live. */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** The launcher users run; it loads dist/cli/main.js, so the tests need a build first. */
export const BIN = fileURLToPath(new URL('../../bin/rated', import.meta.url));
export const MAIN_JS = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));

/** One pino line of the daemon's stdout; a line that is not JSON is kept as `{ msg, unparsed: true }`. */
export interface LogLine {
  readonly level?: number;
  readonly msg?: string;
  readonly unparsed?: true;
  readonly [field: string]: unknown;
}

/** What a CLI call did. */
export interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** How the daemon ended: exit code or signal, and how long it took after stop() sent SIGTERM. */
export interface RatedExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  /** Milliseconds from SIGTERM to exit; null when the process had exited before stop(). */
  readonly ms: number | null;
  /** True when it did not stop in time and was killed with SIGKILL. */
  readonly killed: boolean;
}

export interface RatedOptions {
  readonly namespace: Namespace;
  /** Configuration file, passed as `-c`; without it rated searches as usual (and may run on its embedded defaults). */
  readonly config?: string;
  /** Control socket, passed as `--socket` (and to `cli()`). */
  readonly socket?: string;
  /** More arguments for `rated run`, e.g. `--dry-run`. */
  readonly args?: readonly string[];
  /** A command that runs node inside the namespace, e.g. `setpriv --reuid=65534 ...`. */
  readonly wrap?: readonly string[];
  /** How long to wait for the `rated started` line (default 15 s). */
  readonly startTimeoutMs?: number;
  /**
   * Wait for the reconcile with the kernel that runs behind the receivers
   * too, and add its fields (adopted, restored, reconcileMs) to `started`
   * (default true).
   */
  readonly waitReconciled?: boolean;
}

/** A daemon started by `startRated`; `stop()` must be called in an after hook. */
export interface Rated {
  readonly pid: number;
  /** Every stdout line so far, parsed. */
  readonly lines: readonly LogLine[];
  /** The `rated started …` line. */
  readonly started: LogLine;
  /** Resolves when the process has exited. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** True once the process has exited. */
  hasExited(): boolean;
  /** stdout and stderr so far as text, for failure messages (last `max` lines). */
  output(max?: number): string;
  /** Polls the collected lines until one satisfies `match`. */
  waitForLine(match: (line: LogLine) => boolean, options?: WaitForOptions): Promise<LogLine>;
  /** Runs `rated ARGS -c CONFIG --socket SOCKET` in the same namespace. */
  cli(args: readonly string[], options?: CliOptions): Promise<CliResult>;
  /** SIGTERM, then SIGKILL after `graceMs` (default 8 s); idempotent. */
  stop(graceMs?: number): Promise<RatedExit>;
}

export interface CliOptions {
  /** A command that runs node, e.g. `setpriv ...`. */
  readonly wrap?: readonly string[];
  /** Killed after this long (default 20 s). */
  readonly timeoutMs?: number;
  /** Extra environment variables. */
  readonly env?: Readonly<Record<string, string>>;
  /** What the command reads on stdin (default nothing). */
  readonly input?: string;
}

/** Runs `ip netns exec NS [wrap…] node bin/rated ARGS`; never rejects on a non-zero exit. */
export async function ratedCli(ns: Namespace, args: readonly string[], options: CliOptions = {}): Promise<CliResult> {
  const r = await execa('ip', ['netns', 'exec', ns.name, ...(options.wrap ?? []), process.execPath, BIN, ...args], {
    reject: false,
    input: options.input ?? '',
    cwd: ROOT,
    timeout: options.timeoutMs ?? 20_000,
    killSignal: 'SIGKILL',
    env: { NO_COLOR: '1', ...options.env },
    stripFinalNewline: false,
  });
  if (r.timedOut) throw new Error(`rated ${args.join(' ')} did not finish within ${options.timeoutMs ?? 20_000} ms`);
  return { code: r.exitCode ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/**
 * Starts `rated run` as a child process inside the namespace and waits for
 * its `rated started` line. When the daemon exits first, or never says it
 * started, throws with everything it printed.
 */
export async function startRated(options: RatedOptions): Promise<Rated> {
  const ns = options.namespace;
  const socketArgs = options.socket ? ['--socket', options.socket] : [];
  const configArgs = options.config === undefined ? [] : ['-c', options.config];
  const child = spawn('ip', ['netns', 'exec', ns.name, ...(options.wrap ?? []), process.execPath, BIN,
    'run', ...configArgs, ...socketArgs, ...(options.args ?? [])], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: LogLine[] = [];
  const raw: string[] = [];
  createInterface({ input: child.stdout }).on('line', (line) => {
    raw.push(line);
    lines.push(parseLine(line));
  });
  createInterface({ input: child.stderr }).on('line', (line) => {
    raw.push(`[stderr] ${line}`);
  });
  const state: { exit: { code: number | null; signal: NodeJS.Signals | null } | null } = { exit: null };
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    // 'close' waits for stdout and stderr to end, so every line is collected.
    child.once('close', (code, signal) => {
      state.exit = { code, signal };
      resolve(state.exit);
    });
    child.once('error', (err) => {
      raw.push(`[spawn] ${err.message}`);
      state.exit = { code: null, signal: null };
      resolve(state.exit);
    });
  });

  const output = (max = 200): string => raw.slice(-max).join('\n');
  let stopping: Promise<RatedExit> | null = null;
  const stop = (graceMs = 8000): Promise<RatedExit> => {
    stopping ??= (async () => {
      if (state.exit !== null || child.pid === undefined) return { ...(await exited), ms: null, killed: false };
      const t0 = performance.now();
      child.kill('SIGTERM');
      const timer = new Promise<null>((resolve) => {
        setTimeout(() => { resolve(null); }, graceMs).unref();
      });
      const result = await Promise.race([exited, timer]);
      if (result !== null) return { ...result, ms: performance.now() - t0, killed: false };
      child.kill('SIGKILL');
      return { ...(await exited), ms: performance.now() - t0, killed: true };
    })();
    return stopping;
  };

  const timeoutMs = options.startTimeoutMs ?? 15_000;
  const isStarted = (l: LogLine): boolean => typeof l.msg === 'string' && l.msg.startsWith('rated started');
  let failure: string | null = null;
  try {
    // An exit ends the wait at once; it is reported below.
    await waitFor(() => lines.some(isStarted) || state.exit !== null, { timeoutMs, intervalMs: 25, what: 'the "rated started" line' });
  } catch (err) {
    failure = (err as Error).message;
  }
  let started = lines.find(isStarted);
  const isReconciled = (l: LogLine): boolean => l.msg === 'reconciled with the kernel' || l.msg === 'reconcile with the kernel failed; the next check retries';
  if (started && options.waitReconciled !== false) {
    try {
      await waitFor(() => lines.some(isReconciled) || state.exit !== null, { timeoutMs, intervalMs: 25, what: 'the "reconciled with the kernel" line' });
      const reconciled = lines.find(isReconciled);
      if (reconciled) started = { ...reconciled, ...started, ...pick(reconciled) };
    } catch (err) {
      failure = (err as Error).message;
      started = undefined;
    }
  }
  if (!started) {
    if (state.exit === null) await stop();
    else await exited;
    failure ??= `rated exited before it started (${JSON.stringify(state.exit)})`;
    throw new Error(`${failure}\n--- rated output ---\n${output()}`);
  }

  return {
    pid: child.pid ?? -1,
    lines,
    started,
    exited,
    hasExited: () => state.exit !== null,
    output,
    waitForLine: (match, opts) => waitFor(() => lines.find(match), { what: 'a log line', ...opts }),
    cli: (args, opts) => ratedCli(ns, [...args, ...configArgs, ...socketArgs], { ...(options.wrap ? { wrap: options.wrap } : {}), ...opts }),
    stop,
  };
}

function parseLine(line: string): LogLine {
  try {
    const value: unknown = JSON.parse(line);
    if (value && typeof value === 'object' && !Array.isArray(value)) return value as LogLine;
  } catch {
    // not JSON
  }
  return { msg: line, unparsed: true };
}

/** The fields of the reconcile line that `started` carries. */
function pick(l: LogLine): LogLine {
  return { adopted: l.adopted, restored: l.restored, removed: l.removed, reconcileMs: l.reconcileMs };
}
