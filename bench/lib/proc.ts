import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { setTimeout as delay } from 'node:timers/promises';
import type { Namespace } from '../../test/helpers/netns.js';
import { waitFor } from '../../test/helpers/wait-for.js';

/** Resident memory of a process, from /proc/PID/status. */
export interface Memory {
  /** Resident set size now, in MB. */
  readonly rssMB: number;
  /** The highest resident set size so far, in MB. */
  readonly peakMB: number;
}

/** A process the benchmark started; it is stopped by its PID only. */
export interface Proc {
  readonly name: string;
  readonly pid: number;
  /** Where its stdout and stderr go. */
  readonly logFile: string;
  hasExited(): boolean;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** The last `lines` lines it printed. */
  output(lines?: number): string;
  memory(): Memory | null;
  /** Polls its output until `pattern` appears; throws with the output when it exits first or times out. */
  waitForOutput(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** `signal` (SIGTERM by default), then SIGKILL for it and its descendants after `graceMs`. Idempotent. */
  stop(options?: { signal?: NodeJS.Signals; graceMs?: number }): Promise<void>;
}

export interface SpawnOptions {
  readonly name: string;
  /** Runs the command in this namespace (`ip netns exec`, which execs, so the PID is the command's). */
  readonly namespace: Namespace | null;
  /** Pins the process to these CPUs (`taskset -c`), or leaves it to the scheduler when null. */
  readonly cpus: string | null;
  readonly logFile: string;
  readonly cwd?: string;
  readonly env?: Readonly<Record<string, string>>;
}

/** Processes started and not yet seen to exit, killed if the benchmark itself is stopped. */
const live = new Map<number, () => void>();

/** Kills, synchronously, every process the benchmark started that is still running, and their children. */
export function killAllStarted(): void {
  for (const kill of [...live.values()]) kill();
  live.clear();
}

/** Starts `argv` with stdout and stderr in a file, so a chatty process never waits on a pipe we read. */
export function spawnProc(argv: readonly string[], options: SpawnOptions): Proc {
  const prefix = [
    ...(options.namespace ? ['ip', 'netns', 'exec', options.namespace.name] : []),
    ...(options.cpus !== null ? ['taskset', '-c', options.cpus] : []),
  ];
  const [cmd, ...args] = [...prefix, ...argv];
  if (cmd === undefined) throw new Error('spawnProc: empty command');
  const fd = openSync(options.logFile, 'a');
  const child = spawn(cmd, args, {
    cwd: options.cwd,
    env: { ...process.env, ...options.env },
    stdio: ['ignore', fd, fd],
  });
  closeSync(fd);
  const state: { exit: { code: number | null; signal: NodeJS.Signals | null } | null } = { exit: null };
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      state.exit = { code, signal };
      resolve(state.exit);
    });
    child.once('error', (err) => {
      state.exit = { code: null, signal: null };
      process.stderr.write(`${options.name}: cannot start ${cmd}: ${err.message}\n`);
      resolve(state.exit);
    });
  });
  const pid = child.pid ?? -1;
  if (pid > 0) {
    live.set(pid, () => {
      for (const p of [pid, ...descendants(pid)]) {
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    });
    void exited.then(() => live.delete(pid));
  }
  const output = (lines = 40): string => {
    try {
      return readFileSync(options.logFile, 'utf8').split('\n').slice(-lines - 1).join('\n');
    } catch {
      return '';
    }
  };
  let stopping: Promise<void> | null = null;
  return {
    name: options.name,
    pid,
    logFile: options.logFile,
    exited,
    hasExited: () => state.exit !== null,
    output,
    memory: () => readMemory(pid),
    async waitForOutput(pattern, timeoutMs = 15_000) {
      try {
        await waitFor(() => state.exit !== null || pattern.test(output(400)), { timeoutMs, intervalMs: 20, what: `${options.name} to print ${pattern}` });
      } catch (err) {
        throw new Error(`${(err as Error).message}\n--- ${options.name} output ---\n${output()}`, { cause: err });
      }
      if (state.exit !== null) throw new Error(`${options.name} exited (${JSON.stringify(state.exit)}) before printing ${pattern}\n--- output ---\n${output()}`);
      return output(400).split('\n').find((l) => pattern.test(l)) ?? '';
    },
    stop({ signal = 'SIGTERM', graceMs = 8000 } = {}) {
      stopping ??= (async () => {
        if (state.exit !== null || pid < 0) return;
        const family = descendants(pid);
        child.kill(signal);
        const done = await Promise.race([exited.then(() => true), delay(graceMs, false, { ref: false })]);
        for (const p of [...family, ...descendants(pid)]) {
          try {
            process.kill(p, 'SIGKILL');
          } catch {
            // already gone
          }
        }
        if (!done) {
          child.kill('SIGKILL');
          await exited;
        }
      })();
      return stopping;
    },
  };
}

/** Every process below `pid`, found through /proc before any of them is signalled. */
export function descendants(pid: number): number[] {
  const out: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const p = queue.shift() as number;
    let children: number[] = [];
    try {
      children = readFileSync(`/proc/${p}/task/${p}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    } catch {
      // gone, or no children
    }
    for (const c of children) {
      out.push(c);
      queue.push(c);
    }
  }
  return out;
}

/** VmRSS and VmHWM of a process, in MB; null when it is gone. */
export function readMemory(pid: number): Memory | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
    return { rssMB: kb('VmRSS') / 1024, peakMB: kb('VmHWM') / 1024 };
  } catch {
    return null;
  }
}
