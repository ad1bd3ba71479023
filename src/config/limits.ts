/**
 * What the configuration's rules mean to the rooms that count and block:
 * one mapping, used by the daemon, `replay`, `check-config` and the CLI.
 */
import type { LimiterOptions } from '../limit/limiter.js';
import type { Rule } from '../limit/rules.js';
import type { Config } from './schema.js';

/** How long a block lasts when nothing says otherwise: the first rule's `block` (SPEC §3). */
export const FALLBACK_BLOCK_MS = 21_600_000;

/** The rules as the limiter reads them. */
export function limiterRules(c: Config): Rule[] {
  return c.rules.map((r) => ({ name: r.name, match: r.match, limit: r.limit, windowMs: r.window, blockMs: r.block }));
}

/** Everything of the limiter's options that comes from the configuration. */
export function limiterOptions(c: Config): Pick<LimiterOptions, 'rules' | 'ipv6Prefix' | 'maxClients' | 'escalation'> {
  return {
    rules: limiterRules(c),
    ipv6Prefix: c.ipv6Prefix,
    maxClients: c.tracking.maxClients,
    escalation: { factor: c.escalation.factor, maxMs: c.escalation.max, memoryMs: c.escalation.memory },
  };
}

/** The duration of a manual block without `--for`, and of an adopted rule without kernel expiry. */
export function defaultBlockMs(c: Config): number {
  return c.rules[0]?.block ?? FALLBACK_BLOCK_MS;
}

/** The longest block a rule can make, escalation included. */
export function longestRuleBlockMs(c: Config): number {
  return Math.max(c.escalation.max, ...c.rules.map((r) => r.block));
}
