import { stringify } from 'yaml';
import type { Config } from '../../config/schema.js';
import { formatDuration } from '../../duration.js';
import { configOf, out, type GlobalArgs } from '../context.js';

/** `rated check-config`: validates and prints the effective configuration (with --quiet, only errors). */
export async function checkConfig(args: GlobalArgs & { quiet?: boolean }): Promise<void> {
  const { config, source } = await configOf(args);
  if (args.quiet === true) return;
  out(`# configuration OK (${source})`);
  out(stringify(display(config)).trimEnd());
}

/** The configuration as a user writes it: durations as text again. */
export function display(c: Config): unknown {
  const d = formatDuration;
  return {
    ...c,
    rules: c.rules.map((r) => ({ ...r, window: d(r.window), block: d(r.block) })),
    escalation: { ...c.escalation, max: d(c.escalation.max), memory: d(c.escalation.memory) },
    firewall: { ...c.firewall, checkInterval: d(c.firewall.checkInterval) },
  };
}
