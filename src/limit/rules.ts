import { backtrackingRisk } from '../regex-guard.js';
import type { Hit } from '../receive/hit.js';
import { WindowSpec } from './sliding-window.js';

export type { Hit } from '../receive/hit.js';

/** Which requests a rule counts; every criterion given must match, and `{}` matches every request. */
export interface Match {
  /** `"/prefix"` of the path (query string ignored), or `"~regex"` tested against the whole URI. */
  readonly path?: string;
  /** Request methods, in any case. */
  readonly methods?: readonly string[];
  /** Status codes (`404`) or classes (`"4xx"`). */
  readonly status?: readonly (number | string)[];
  /** Host name, exact and case-insensitive, or `"~regex"` (case-insensitive). */
  readonly host?: string;
}

/** A rate-limit rule: more than `limit` matching requests within `windowMs` block the client for `blockMs`. */
export interface Rule {
  readonly name: string;
  readonly match: Match;
  readonly limit: number;
  readonly windowMs: number;
  readonly blockMs: number;
}

/** A rule with its matchers built once, ready for the hot path. */
export interface CompiledRule {
  readonly name: string;
  readonly limit: number;
  readonly windowMs: number;
  readonly blockMs: number;
  readonly window: WindowSpec;
  /** Path prefix, compared with the URI up to its `?`. */
  readonly pathPrefix: string | null;
  /** Regex tested against the whole URI. */
  readonly pathRegex: RegExp | null;
  /** Upper-cased methods. */
  readonly methods: ReadonlySet<string> | null;
  /** Exact status codes. */
  readonly statuses: ReadonlySet<number> | null;
  /** Status classes: 4 for `"4xx"`. */
  readonly statusClasses: ReadonlySet<number> | null;
  /** Lower-cased host name. */
  readonly host: string | null;
  readonly hostRegex: RegExp | null;
  /** True when the rule has no criterion at all. */
  readonly all: boolean;
}

const STATUS_CODE = /^[1-5]\d\d$/;
const STATUS_CLASS = /^([1-5])xx$/i;

/**
 * Validates the rules and builds their matchers. Throws an Error naming the
 * rule, the criterion and the value when one cannot be used (a bad regex, an
 * empty list, a status that is neither `404` nor `"4xx"`).
 */
export function compileRules(rules: readonly Rule[]): CompiledRule[] {
  return rules.map((rule) => compileRule(rule));
}

function compileRule(rule: Rule): CompiledRule {
  const where = (key: string) => `rule ${JSON.stringify(rule.name)}: ${key}`;
  if (!(Number.isInteger(rule.limit) && rule.limit >= 1)) {
    throw new Error(`${where('limit')}: expected an integer of at least 1, got ${String(rule.limit)}`);
  }
  if (!(Number.isFinite(rule.windowMs) && rule.windowMs > 0)) {
    throw new Error(`${where('window')}: expected a positive duration, got ${String(rule.windowMs)} ms`);
  }
  if (!(Number.isFinite(rule.blockMs) && rule.blockMs > 0)) {
    throw new Error(`${where('block')}: expected a positive duration, got ${String(rule.blockMs)} ms`);
  }
  const m = rule.match;

  let pathPrefix: string | null = null;
  let pathRegex: RegExp | null = null;
  if (m.path !== undefined) {
    if (m.path.startsWith('~')) pathRegex = regex(m.path, '', where('match.path'));
    else if (m.path.startsWith('/')) pathPrefix = m.path;
    else throw new Error(`${where('match.path')}: expected "/prefix" or "~regex", got ${JSON.stringify(m.path)}`);
  }

  let methods: Set<string> | null = null;
  if (m.methods !== undefined) {
    nonEmpty(m.methods, where('match.methods'));
    methods = new Set(m.methods.map((s) => s.toUpperCase()));
  }

  let statuses: Set<number> | null = null;
  let statusClasses: Set<number> | null = null;
  if (m.status !== undefined) {
    nonEmpty(m.status, where('match.status'));
    statuses = new Set();
    statusClasses = new Set();
    for (const s of m.status) {
      const text = String(s);
      const cls = STATUS_CLASS.exec(text);
      if (cls) statusClasses.add(Number(cls[1]));
      else if (STATUS_CODE.test(text)) statuses.add(Number(text));
      else throw new Error(`${where('match.status')}: expected a status like 404 or "4xx", got ${JSON.stringify(s)}`);
    }
  }

  let host: string | null = null;
  let hostRegex: RegExp | null = null;
  if (m.host !== undefined) {
    // Host names are case-insensitive, so host patterns are too.
    if (m.host.startsWith('~')) hostRegex = regex(m.host, 'i', where('match.host'));
    else host = m.host.toLowerCase();
  }

  return {
    name: rule.name,
    limit: rule.limit,
    windowMs: rule.windowMs,
    blockMs: rule.blockMs,
    window: new WindowSpec(rule.windowMs),
    pathPrefix,
    pathRegex,
    methods,
    statuses: statuses?.size ? statuses : null,
    statusClasses: statusClasses?.size ? statusClasses : null,
    host,
    hostRegex,
    all: m.path === undefined && m.methods === undefined && m.status === undefined && m.host === undefined,
  };
}

function regex(pattern: string, flags: string, where: string): RegExp {
  let re: RegExp;
  try {
    re = new RegExp(pattern.slice(1), flags);
  } catch (err) {
    throw new Error(`${where}: invalid regular expression ${JSON.stringify(pattern)}: ${(err as Error).message}`, { cause: err });
  }
  const risk = backtrackingRisk(re.source);
  if (risk !== null) {
    throw new Error(`${where}: ${JSON.stringify(pattern)} has ${risk}, which can take exponential time on a hostile request; write it without one`);
  }
  return re;
}

function nonEmpty(list: readonly unknown[], where: string): void {
  if (list.length === 0) throw new Error(`${where}: expected at least one entry, got an empty list (leave it out to match any)`);
}

/**
 * True when the hit matches every criterion of the rule. A criterion whose
 * field the hit lacks (no status, no host…) does not match.
 */
export function matches(rule: CompiledRule, hit: Hit): boolean {
  if (rule.all) return true;
  if (rule.methods !== null) {
    const m = hit.method;
    if (m === undefined || !(rule.methods.has(m) || rule.methods.has(m.toUpperCase()))) return false;
  }
  if (rule.statuses !== null || rule.statusClasses !== null) {
    const s = hit.status;
    if (s === undefined) return false;
    if (!(rule.statuses?.has(s) || rule.statusClasses?.has(Math.floor(s / 100)))) return false;
  }
  if (rule.host !== null || rule.hostRegex !== null) {
    const h = hit.host;
    if (h === undefined) return false;
    if (rule.host !== null ? h.toLowerCase() !== rule.host : !rule.hostRegex?.test(h)) return false;
  }
  if (rule.pathPrefix !== null || rule.pathRegex !== null) {
    const uri = hit.uri;
    if (uri === undefined) return false;
    if (rule.pathPrefix !== null) {
      // The path is the URI up to its `?`; no slice, this runs for every hit.
      if (!uri.startsWith(rule.pathPrefix)) return false;
      const q = uri.indexOf('?');
      if (q >= 0 && q < rule.pathPrefix.length) return false;
    } else if (!rule.pathRegex?.test(uri)) {
      return false;
    }
  }
  return true;
}
