import { lstatSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, isAbsolute, join } from 'node:path';
import { RatedError } from '../errors.js';

/**
 * The control socket of a dry run by an ordinary user, who may not create
 * the configured one under /run: `$XDG_RUNTIME_DIR/rated.sock`, else
 * `<tmpdir>/rated-<uid>/rated.sock`. Null for root, who always uses the
 * configured socket.
 */
export function userSocketPath(): string | null {
  const uid = process.getuid?.();
  if (uid === undefined || uid === 0) return null;
  const runtime = process.env.XDG_RUNTIME_DIR;
  if (runtime && isAbsolute(runtime)) return join(runtime, 'rated.sock');
  return join(tmpdir(), `rated-${uid}`, 'rated.sock');
}

/**
 * Creates the directory of `socket` (mode 0700) and checks that it is ours:
 * a directory, not a link, owned by this user, writable by nobody else.
 * Under a shared temp directory another user could have made it first.
 */
export function preparePrivateDir(socket: string): void {
  const dir = dirname(socket);
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new RatedError('BIND_FAILED', `cannot create ${dir} for the control socket: ${(err as NodeJS.ErrnoException).code ?? String(err)}; give --socket PATH`, { cause: err });
  }
  const st = lstatSync(dir);
  if (!st.isDirectory() || st.uid !== process.getuid?.() || (st.mode & 0o022) !== 0) {
    throw new RatedError('BIND_FAILED', `${dir} is not a private directory of this user; remove it or give --socket PATH`);
  }
}

/** True when an error, or its cause, is a refused permission (EACCES, EPERM, EROFS). */
export function isPermissionError(err: unknown): boolean {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') return true;
  }
  return false;
}
