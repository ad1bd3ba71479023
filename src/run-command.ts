import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { execa } from 'execa';

/** The result of one firewall command. */
export interface CommandResult {
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a tool (the firewall's, `systemd-notify`): argument array, optional stdin script, never a shell. */
export interface Runner {
  (file: string, args: readonly string[], input?: string): Promise<CommandResult>;
  /**
   * Starts a long-lived tool the same way (prefix, environment, its own
   * process group), its standard streams pipes; `env` adds to the
   * environment. Runners made by tests from a function alone lack it.
   */
  readonly start?: (file: string, args: readonly string[], env?: Readonly<Record<string, string>>) => ChildProcessWithoutNullStreams;
}

/** Thrown when a tool cannot be run at all (missing binary, timeout); carries the tool's name. */
export class CommandError extends Error {
  constructor(readonly file: string, message: string, readonly notFound: boolean, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CommandError';
  }
}

/**
 * Creates the one runner every child process of rated goes through. `prefix` runs every tool through another command (tests
 * use `ip netns exec NAME`); a hung tool is killed, with its process group,
 * after `timeoutMs`, and the runner gives up waiting for it shortly after,
 * even when something it started still holds its output open or it cannot
 * die (stuck in the kernel).
 */
export function createRunner(options: { prefix?: readonly string[]; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Runner {
  const prefix = options.prefix ?? [];
  const timeoutMs = options.timeoutMs ?? 10_000;
  // The tools' messages are matched in English; `env` replaces the inherited environment.
  const environment = (more: Readonly<Record<string, string>> = {}): NodeJS.ProcessEnv => ({ ...(options.env ?? process.env), ...more, LC_ALL: 'C' });
  const start = (file: string, args: readonly string[], env?: Readonly<Record<string, string>>): ChildProcessWithoutNullStreams => {
    const [cmd, ...rest] = [...prefix, file, ...args];
    return spawn(cmd ?? file, rest, { stdio: ['pipe', 'pipe', 'pipe'], detached: true, shell: false, env: environment(env) });
  };
  const run = async (file: string, args: readonly string[], input?: string): Promise<CommandResult> => {
    const [cmd, ...rest] = prefix.length > 0 ? [...prefix, file, ...args] : [file, ...args];
    const stdin = input ? inputFile(input) : null;
    let killer: NodeJS.Timeout | undefined;
    let deadline: NodeJS.Timeout | undefined;
    let timedOut = false;
    try {
      const child = execa(cmd ?? file, rest, {
        // execa's types name only descriptors 0-9; any open descriptor works.
        ...(stdin !== null ? { stdin: stdin as 0 } : { input: '' }),
        reject: false,
        shell: false,
        // Its own process group, so a timeout kills whatever the tool started too.
        detached: true,
        stripFinalNewline: false,
        maxBuffer: 512 * 1024 * 1024,
        env: environment(),
        extendEnv: false,
      });
      const gaveUp = new Promise<null>((resolve) => {
        killer = setTimeout(() => {
          timedOut = true;
          killGroup(child.pid);
          deadline = setTimeout(() => resolve(null), GIVE_UP_AFTER_KILL_MS);
        }, timeoutMs);
      });
      const result = await Promise.race([child, gaveUp]);
      // timedOut is set by the timer above while the race runs.
      // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- written by the killer timer
      if (timedOut || result === null) {
        // Whatever still holds the pipes must not keep this process busy.
        child.stdout.destroy();
        child.stderr.destroy();
        void Promise.resolve(child).catch(() => undefined);
        throw new CommandError(file, `${file} did not finish within ${timeoutMs} ms and was killed`, false);
      }
      if (result.failed && result.exitCode === undefined) {
        const code = (result.cause as NodeJS.ErrnoException | undefined)?.code;
        const notFound = code === 'ENOENT';
        throw new CommandError(file, notFound ? `${file}: command not found` : `${file}: ${result.shortMessage}`, notFound, { cause: result.cause });
      }
      return { exitCode: result.exitCode ?? 1, stdout: result.stdout, stderr: result.stderr };
    } catch (err) {
      if (err instanceof CommandError) throw err;
      throw new CommandError(file, `${file}: ${(err as Error).message}`, false, { cause: err });
    } finally {
      clearTimeout(killer);
      clearTimeout(deadline);
      if (stdin !== null) closeSync(stdin);
    }
  };
  return Object.assign(run, { start });
}

/** How long to wait, after killing a timed-out tool, for it and its pipes to go. */
const GIVE_UP_AFTER_KILL_MS = 1000;

/** SIGKILL to a tool's whole process group; it may be gone already. */
export function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // the group is gone; the tool itself may still be reaped below
  }
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/**
 * Puts a stdin script in an unlinked private file and returns its descriptor,
 * open for reading. A pipe from Node is a socket, and `nft -f -` opens
 * /dev/stdin, which fails on a socket with ENXIO; a regular file works with
 * every tool. Synchronous on purpose: under a flood of notifications each
 * step of an asynchronous version waits its turn behind the receiver, which
 * made writing a batch take seconds.
 */
function inputFile(input: string): number {
  const dir = mkdtempSync(join(tmpdir(), 'rated-'));
  try {
    const path = join(dir, 'input');
    writeFileSync(path, input, { mode: 0o600, flag: 'wx' });
    return openSync(path, 'r');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
