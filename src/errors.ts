import { inspect } from 'node:util';

/** Exit codes of the CLI (SPEC §2). */
export const EXIT = { ok: 0, runtime: 1, usage: 2 } as const;

/** Error codes, each with the exit code it leads to. */
const CODES = {
  CONFIG: EXIT.usage,
  USAGE: EXIT.usage,
  TOO_LARGE: EXIT.usage,
  FIREWALL_UNUSABLE: EXIT.runtime,
  FIREWALL_FAILED: EXIT.runtime,
  BIND_FAILED: EXIT.runtime,
  DAEMON_UNREACHABLE: EXIT.runtime,
  ALREADY_RUNNING: EXIT.runtime,
  REFUSED: EXIT.runtime,
  NOT_FOUND: EXIT.runtime,
  STATE_FAILED: EXIT.runtime,
} as const;

export type ErrorCode = keyof typeof CODES;

/** The base error of rated: a stable code, a one-line message, an exit code. */
export class RatedError extends Error {
  readonly code: ErrorCode;
  readonly exitCode: number;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'RatedError';
    this.code = code;
    this.exitCode = CODES[code];
  }
}

/** A configuration error: names the key path, what was expected and what was received. */
export function configError(path: string, message: string): RatedError {
  return new RatedError('CONFIG', path ? `${path}: ${message}` : message);
}

/**
 * The first line of an error's message followed by those of its causes
 * (`cannot write the journal: ENOSPC: no space left on device`), each said
 * once, for logs and one-line CLI output.
 */
export function describe(err: unknown): string {
  const parts: string[] = [];
  const seen = new Set<unknown>();
  let e: unknown = err;
  while (e !== undefined && e !== null && !seen.has(e) && parts.length < 5) {
    seen.add(e);
    const line = (e instanceof Error ? (e.message || e.name) : typeof e === 'string' ? e : inspect(e, { depth: 1, breakLength: Infinity })).split('\n')[0]?.trim() ?? '';
    if (line !== '' && !parts.some((p) => p.includes(line))) parts.push(line);
    e = e instanceof Error ? e.cause : undefined;
  }
  return parts.join(': ');
}
