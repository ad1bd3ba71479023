/**
 * Finding and reading the configuration file, without validating it: what
 * `loadConfig` builds on, and all that the CLI needs to find the control
 * socket (the schema's library alone takes longer to load than a command
 * takes to answer).
 */
import { closeSync, fstatSync, openSync, readFileSync } from 'node:fs';
import { parseDocument } from 'yaml';
import { configError } from '../errors.js';

export const DEFAULT_PATH = '/etc/rated/rated.yml';
export const EMBEDDED = 'embedded defaults';
/** `control.socket` when the configuration names none. */
export const DEFAULT_SOCKET = '/run/rated/rated.sock';

/** The configuration's text and where it came from (`--config`, `$RATED_CONFIG`, /etc/rated/rated.yml), or null for the embedded defaults. */
export function configText(explicit?: string, env: NodeJS.ProcessEnv = process.env): { text: string; source: string } | null {
  const chosen = explicit ?? (env.RATED_CONFIG || undefined);
  if (chosen !== undefined) {
    const text = readTrusted(chosen, false);
    if (text === null) throw configError(chosen, 'no such file');
    return { text, source: chosen };
  }
  const text = readTrusted(DEFAULT_PATH, true);
  return text === null ? null : { text, source: DEFAULT_PATH };
}

/**
 * Reads a configuration file that only a trusted user can have written, as
 * sshd does: refused when every user may write it, or when it belongs to
 * someone other than root or the user running rated. Null when it does not
 * exist and may be missing.
 */
function readTrusted(path: string, optional: boolean): string | null {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      if (optional) return null;
      throw configError(path, 'no such file');
    }
    throw configError(path, `cannot read: ${(err as Error).message}`);
  }
  try {
    const st = fstatSync(fd);
    const uid = process.getuid?.() ?? 0;
    if (st.isFile() && (st.mode & 0o002) !== 0) {
      throw configError(path, `every user may write this file (mode ${(st.mode & 0o777).toString(8)}), so anyone could change what rated blocks: chmod o-w ${path}`);
    }
    if (st.isFile() && st.uid !== 0 && st.uid !== uid) {
      throw configError(path, `owned by uid ${st.uid}, neither root nor the user running rated (${uid}): chown root ${path}`);
    }
    return readFileSync(fd, 'utf8');
  } catch (err) {
    if ((err as { code?: unknown }).code === 'CONFIG') throw err;
    throw configError(path, `cannot read: ${(err as Error).message}`);
  } finally {
    closeSync(fd);
  }
}

/** YAML text as plain data; errors name the file and line. */
export function readYaml(text: string, file: string): unknown {
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: false });
  const yamlError = doc.errors[0];
  if (yamlError) {
    const line = yamlError.linePos?.[0]?.line;
    throw configError(file, `invalid YAML${line ? ` at line ${line}` : ''}: ${yamlError.message.split('\n')[0] ?? ''}`);
  }
  try {
    // Resolving aliases can fail on a document built to exhaust memory ("billion laughs").
    return doc.toJS({ maxAliasCount: 100 }) ?? {};
  } catch (err) {
    throw configError(file, `invalid YAML: ${(err as Error).message.split('\n')[0] ?? ''}`);
  }
}

/**
 * The control socket the configuration names, read without validating the
 * rest: a configuration the daemon would refuse is reported by the command's
 * own path once no daemon answers.
 */
export function configuredSocket(explicit?: string, env: NodeJS.ProcessEnv = process.env): string {
  const found = configText(explicit, env);
  if (found === null) return DEFAULT_SOCKET;
  const raw = readYaml(found.text, found.source) as { control?: { socket?: unknown } } | null;
  const socket = raw?.control?.socket;
  return typeof socket === 'string' && socket !== '' ? socket : DEFAULT_SOCKET;
}
