import { fstatSync, closeSync, openSync, readFileSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { parseDocument } from 'yaml';
import type { z } from 'zod';
import { isLoopback } from '../address.js';
import { limiterRules } from './limits.js';
import { configError } from '../errors.js';
import { compileRules } from '../limit/rules.js';
import { compilePattern } from '../receive/line.js';
import { configSchema, type Config } from './schema.js';

/** Where the configuration came from: a file path, or the embedded defaults. */
export interface LoadedConfig {
  readonly config: Config;
  readonly source: string;
}

export const DEFAULT_PATH = '/etc/rated/rated.yml';
export const EMBEDDED = 'embedded defaults';

/** Finds and loads the configuration: `--config`, `$RATED_CONFIG`, /etc/rated/rated.yml, else the embedded defaults. */
export function loadConfig(explicit?: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  const chosen = explicit ?? (env.RATED_CONFIG || undefined);
  if (chosen !== undefined) return { config: readConfigFile(chosen, false), source: chosen };
  const text = readTrusted(DEFAULT_PATH, true);
  if (text === null) return { config: parseConfig({}), source: EMBEDDED };
  return { config: parseConfigText(text, DEFAULT_PATH), source: DEFAULT_PATH };
}

function readConfigFile(path: string, optional: boolean): Config {
  const text = readTrusted(path, optional);
  if (text === null) throw configError(path, 'no such file');
  return parseConfigText(text, path);
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

/** Parses YAML text into a validated configuration; errors name the file, line and key. */
export function parseConfigText(text: string, file: string): Config {
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: false });
  const yamlError = doc.errors[0];
  if (yamlError) {
    const line = yamlError.linePos?.[0]?.line;
    throw configError(file, `invalid YAML${line ? ` at line ${line}` : ''}: ${yamlError.message.split('\n')[0] ?? ''}`);
  }
  let raw: unknown;
  try {
    // Resolving aliases can fail on a document built to exhaust memory ("billion laughs").
    raw = doc.toJS({ maxAliasCount: 100 }) ?? {};
  } catch (err) {
    throw configError(file, `invalid YAML: ${(err as Error).message.split('\n')[0] ?? ''}`);
  }
  return parseConfig(raw);
}

/** Validates a plain object against the schema, adds the checks the schema cannot express, and freezes it. */
export function parseConfig(raw: unknown): Config {
  // The content of a file that is no configuration (say /etc/shadow) is never repeated in an error.
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw configError('', `expected a mapping of keys (receivers, rules, …) at the top level, got ${Array.isArray(raw) ? 'a list' : `a ${typeof raw}`}: is this rated's configuration file?`);
  }
  // zod leaves issue.input out unless asked; the messages show what was received.
  const result = configSchema.safeParse(raw, { reportInput: true });
  if (!result.success) {
    // An unknown key is usually a misspelt one: name it before the missing key it causes.
    const issues = result.error.issues;
    const issue = issues.find((i) => i.code === 'unrecognized_keys') ?? issues[0];
    if (issue) throw configError(formatPath(issuePath(issue)), issueMessage(issue));
    throw configError('', 'invalid configuration');
  }
  const config = result.data;
  crossCheck(config);
  return deepFreeze(config);
}

function crossCheck(config: Config): void {
  const http = config.receivers.http;
  if (http && http.socket === null && !isLoopback(http.address) && http.token === null) {
    throw configError('receivers.http.token', `required when receivers.http.address (${http.address}) is not a loopback address`);
  }
  const udp = config.receivers.udp;
  if (udp && !isLoopback(udp.address)) {
    throw configError('receivers.udp.address', `must be a loopback address: UDP carries no token and its source can be forged, got ${JSON.stringify(udp.address)}`);
  }
  if (udp?.pattern) {
    try {
      compilePattern(udp.pattern);
    } catch (err) {
      throw configError('receivers.udp.pattern', (err as Error).message);
    }
  }
  config.receivers.files.forEach((path, i) => {
    if (!isAbsolute(path)) throw configError(`receivers.files[${i}]`, `expected an absolute path, got ${JSON.stringify(path)}`);
  });
  try {
    compileRules(limiterRules(config));
  } catch (err) {
    throw configError('rules', (err as Error).message);
  }
  if (config.redis?.prefix === '') throw configError('redis.prefix', 'must not be empty');
}


function issuePath(issue: z.core.$ZodIssue): PropertyKey[] {
  if (issue.code === 'unrecognized_keys' && issue.keys.length > 0) return [...issue.path, issue.keys[0] ?? ''];
  return issue.path;
}

function issueMessage(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case 'unrecognized_keys':
      return 'unknown key';
    case 'invalid_type':
      return `expected ${issue.expected}, got ${describeReceived(issue.input)}`;
    case 'invalid_value':
      return `expected one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}, got ${describeReceived(issue.input)}`;
    case 'invalid_union': {
      const inner = issue.errors.flat()[0];
      return inner && inner.code !== 'invalid_type' ? inner.message : `${issue.message}, got ${describeReceived(issue.input)}`;
    }
    default:
      return issue.message;
  }
}

function describeReceived(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  // A short preview: an error message never carries a long value in full.
  if (typeof value === 'string' && value.length > 40) return `${JSON.stringify(value.slice(0, 40))}… (${value.length} characters)`;
  return JSON.stringify(value);
}

/** Formats a key path the way the configuration file reads: `rules[0].window`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const raw of path) {
    if (typeof raw === 'number') {
      out += `[${raw}]`;
      continue;
    }
    // A key is shown only when it could be a key: a file that is no
    // configuration (say /etc/shadow) has its lines read as keys.
    const text = String(raw);
    const part = /^[\x21-\x7e]{1,64}$/.test(text) && !/[:$]/.test(text) ? text : `<a key of ${text.length} characters, not shown>`;
    out += out ? `.${part}` : part;
  }
  return out;
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
