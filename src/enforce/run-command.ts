import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';

/** The result of one firewall command. */
export interface CommandResult {
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a firewall tool: argument array, optional stdin script, never a shell. */
export type Runner = (file: string, args: readonly string[], input?: string) => Promise<CommandResult>;

/** Thrown when a tool cannot be run at all (missing binary, timeout); carries the tool's name. */
export class CommandError extends Error {
  constructor(readonly file: string, message: string, readonly notFound: boolean, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CommandError';
  }
}

/**
 * Creates a runner. `prefix` runs every tool through another command (tests
 * use `ip netns exec NAME`); a hung tool is killed, with its process group,
 * after `timeoutMs`.
 */
export function createRunner(options: { prefix?: readonly string[]; timeoutMs?: number } = {}): Runner {
  const prefix = options.prefix ?? [];
  const timeoutMs = options.timeoutMs ?? 10_000;
  return async (file, args, input) => {
    const [cmd, ...rest] = prefix.length > 0 ? [...prefix, file, ...args] : [file, ...args];
    const stdin = input ? await inputFile(input) : null;
    try {
      const result = await execa(cmd ?? file, rest, {
        // execa's types name only descriptors 0-9; any open descriptor works.
        ...(stdin ? { stdin: stdin.fd as 0 } : { input: '' }),
        reject: false,
        shell: false,
        timeout: timeoutMs,
        killSignal: 'SIGKILL',
        stripFinalNewline: false,
        maxBuffer: 512 * 1024 * 1024,
        env: { LC_ALL: 'C' },
        extendEnv: true,
      });
      if (result.timedOut) throw new CommandError(file, `${file} did not finish within ${timeoutMs} ms and was killed`, false);
      if (result.failed && result.exitCode === undefined) {
        const code = (result.cause as NodeJS.ErrnoException | undefined)?.code;
        const notFound = code === 'ENOENT';
        throw new CommandError(file, notFound ? `${file}: command not found` : `${file}: ${result.shortMessage}`, notFound, { cause: result.cause });
      }
      return { exitCode: result.exitCode ?? 1, stdout: String(result.stdout), stderr: String(result.stderr) };
    } catch (err) {
      if (err instanceof CommandError) throw err;
      throw new CommandError(file, `${file}: ${(err as Error).message}`, false, { cause: err });
    } finally {
      await stdin?.close();
    }
  };
}

/**
 * Puts a stdin script in an unlinked private file and returns it open for
 * reading. A pipe from Node is a socket, and `nft -f -` opens /dev/stdin,
 * which fails on a socket with ENXIO; a regular file works with every tool.
 */
async function inputFile(input: string) {
  const dir = await mkdtemp(join(tmpdir(), 'rated-'));
  try {
    const path = join(dir, 'input');
    await writeFile(path, input, { mode: 0o600, flag: 'wx' });
    return await open(path, 'r');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
