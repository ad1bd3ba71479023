import { steadyClock } from '../clock.js';
import type { Config } from '../config/schema.js';
import { assemble } from '../core.js';
import { createRunner, selectBackend, type Backend, type Blocker } from '../enforce/index.js';
import type { Operator } from '../enforce/operator.js';
import { RatedError } from '../errors.js';
import { AllowList } from '../limit/allow.js';
import { createLogger } from '../log.js';
import { Metrics } from '../metrics.js';

/**
 * Acts on the blocks while the daemon is down, with the daemon's own parts:
 * the journal and (when `readKernel`) the kernel's elements are adopted as
 * the daemon would adopt them, `act` decides through the same Operator, the
 * kernel is changed first and the journal written after, so that the next
 * start neither puts back what was lifted nor forgets what is still in force.
 * A journal the daemon would move aside is left where it is, untouched.
 */
export async function offline<T>(config: Config, readKernel: boolean, act: (op: Operator, parts: { blocker: Blocker; allow: AllowList }) => Promise<T>): Promise<T> {
  const backend = await kernelOf(config);
  const allow = AllowList.fromConfig([...config.allow], config.allowSelf);
  const seen = { changed: false };
  const { blocker, operator, keeper } = assemble({
    config, backend, allow, log: createLogger('silent'), now: steadyClock(), autosave: false,
    metrics: new Metrics({ activeBlocks: () => blocker.size, trackedClients: () => 0 }),
    onChange: () => (seen.changed = true),
  });
  keeper?.restore(false);
  if (readKernel) {
    for (const e of await backend.list()) {
      blocker.adopt({ net: e.net, rule: null, reason: null, source: 'reconciled', since: null, expires: e.expiresAt, hits: null });
    }
  }
  const result = await act(operator, { blocker, allow });
  await blocker.close();
  backend.close?.();
  if (blocker.needsRepair) {
    // The kernel still holds what it refused: the journal keeps it too.
    throw new RatedError('FIREWALL_FAILED', `the firewall refused the change: ${blocker.lastErrors.at(-1)?.error ?? 'unknown error'}`);
  }
  if (seen.changed && keeper?.usable) keeper.write();
  return result;
}

/** The configured firewall backend, for reading what the kernel holds. */
export function kernelOf(config: Config): Promise<Backend> {
  return selectBackend(config.firewall, createRunner(), false, config.ipv6Prefix);
}
