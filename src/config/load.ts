import { isAbsolute } from 'node:path';
import type { z } from 'zod';
import { isLoopback } from '../address.js';
import { limiterRules } from './limits.js';
import { configError } from '../errors.js';
import { compileRules } from '../limit/rules.js';
import { compilePattern } from '../receive/line.js';
import { configText, EMBEDDED, readYaml } from './read.js';
import { configSchema, type Config } from './schema.js';

export { DEFAULT_PATH, EMBEDDED } from './read.js';

/** Where the configuration came from: a file path, or the embedded defaults. */
export interface LoadedConfig {
  readonly config: Config;
  readonly source: string;
}

/** Finds and loads the configuration: `--config`, `$RATED_CONFIG`, /etc/rated/rated.yml, else the embedded defaults. */
export function loadConfig(explicit?: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  const found = configText(explicit, env);
  if (found === null) return { config: parseConfig({}), source: EMBEDDED };
  return { config: parseConfigText(found.text, found.source), source: found.source };
}

/** Parses YAML text into a validated configuration; errors name the file, line and key. */
export function parseConfigText(text: string, file: string): Config {
  return parseConfig(readYaml(text, file));
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
