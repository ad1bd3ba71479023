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
    try {
      const result = await execa(cmd ?? file, rest, {
        input: input ?? '',
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
    }
  };
}
