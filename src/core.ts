import type { Network } from './address.js';
import { DECIDED_HERE } from './block.js';
import { defaultBlockMs, limiterOptions, longestRuleBlockMs } from './config/limits.js';
import type { Config } from './config/schema.js';
import { Blocker, type Backend } from './enforce/index.js';
import { Operator, type DecisionSharing } from './enforce/operator.js';
import { describe } from './errors.js';
import type { Hooks } from './hooks.js';
import type { AllowList } from './limit/allow.js';
import { Limiter } from './limit/limiter.js';
import { RateLimitedLog, type Logger } from './log.js';
import type { Metrics } from './metrics.js';
import { Journal } from './state/journal.js';
import { JournalKeeper } from './state/keeper.js';

/** The parts that count, decide and keep blocks, wired to each other. */
export interface Core {
  readonly blocker: Blocker;
  readonly limiter: Limiter;
  readonly operator: Operator;
  /** Null in a dry run, which keeps no journal. */
  readonly keeper: JournalKeeper | null;
}

export interface CoreOptions {
  readonly config: Config;
  readonly backend: Backend;
  readonly allow: AllowList;
  /** Follows this host's addresses (the daemon): read again before a block, at most once a second, and never blocked. */
  readonly followSelf?: boolean;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly now: () => number;
  /** Block sharing, when configured (it starts after the core). */
  readonly sharing?: () => (DecisionSharing & { count(client: Network, rule: number, at: number): void }) | null;
  /** Called after each change of the blocks. */
  readonly onChange?: () => void;
  /** Appends each change to the journal (the daemon); without it the caller writes it. */
  readonly autosave: boolean;
  /** Programs run on each block and unblock decided here (the daemon, when hooks are configured). */
  readonly hooks?: Hooks | null;
}


/**
 * Builds the limiter, the blocker, the one owner of decisions and the
 * journal's keeper as the daemon runs them; the CLI uses the same parts
 * while the daemon is down, so a decision has one implementation.
 */
export function assemble(o: CoreOptions): Core {
  const c = o.config;
  const isAllowed = o.followSelf
    ? (net: Network): boolean => (core.operator.followOwn(1000), o.allow.has(net))
    : (net: Network): boolean => o.allow.has(net);
  const refusals = new RateLimitedLog(o.log);
  const core: { -readonly [K in keyof Core]: Core[K] } = {} as Core;
  core.blocker = new Blocker({
    backend: o.backend, isAllowed, log: o.log, metrics: o.metrics, now: o.now, systemNow: Date.now,
    onLift: (net) => core.limiter.forget(net),
    onChange: o.onChange,
    record: o.autosave ? { put: (b) => core.keeper?.put(b), lift: (net) => core.keeper?.lift(net) } : undefined,
    reconciledBlockMs: defaultBlockMs(c),
    onEvent: o.hooks ? (event, block) => {
      if (DECIDED_HERE.has(block.source)) o.hooks?.fire(event, block);
    } : undefined,
  });
  core.operator = new Operator({
    blocker: core.blocker, isAllowed, whyAllowed: (net) => o.allow.why(net), ipv6Prefix: c.ipv6Prefix, defaultBlockMs: defaultBlockMs(c),
    forget: (net) => core.limiter.forget(net), sharing: o.sharing, log: o.log,
    refreshSelf: o.followSelf ? (maxAgeMs) => o.allow.refreshSelf(maxAgeMs) : undefined,
  });
  core.limiter = new Limiter({
    ...limiterOptions(c), allow: o.allow, now: o.now,
    isBlocked: (client) => core.blocker.has(client),
    onCount: c.redis && o.sharing ? (client, rule, at) => o.sharing?.()?.count(client, rule, at) : undefined,
    onOffence: o.autosave ? (key, offence) => core.keeper?.offence(key, offence) : undefined,
    onVerdict: (v) => {
      const refused = core.operator.convict(v);
      if (refused) refusals.warn('block refused', { ip: v.client.text, err: describe(refused) }, 'block refused');
    },
  });
  core.keeper = o.backend.kind === 'dry-run' ? null : new JournalKeeper({
    journal: new Journal(c.state.dir), blocks: core.blocker, offences: core.limiter,
    isAllowed: (net) => o.allow.has(net), longestRuleBlockMs: longestRuleBlockMs(c), now: o.now, log: o.log,
    // Without kernel timeouts (iptables) an expired entry's rule is still there.
    dropExpired: o.backend.expiresInKernel ? undefined : (net) => o.backend.delete(net),
    onError: () => o.metrics.errors.inc('journal'),
  });
  return core;
}
