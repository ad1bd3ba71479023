import type { Family, Network } from '../address.js';
import { RatedError } from '../errors.js';
import { CommandError, type CommandResult, type Runner } from '../run-command.js';

// What the ipset and iptables backends share: the iptables/ip6tables tools,
// the built-in chain our rules hang from, and the commands that add a rule
// there without touching any other.

/** The iptables table and built-in chain that send packets to our rules. */
export interface Anchor {
  readonly table: 'filter' | 'raw';
  readonly chain: 'INPUT' | 'FORWARD' | 'PREROUTING';
}

/** `firewall.hook` in iptables terms: INPUT or FORWARD of filter, PREROUTING of raw (before conntrack). */
export function anchorOf(hook: 'input' | 'forward' | 'prerouting'): Anchor {
  switch (hook) {
    case 'input':
      return { table: 'filter', chain: 'INPUT' };
    case 'forward':
      return { table: 'filter', chain: 'FORWARD' };
    case 'prerouting':
      return { table: 'raw', chain: 'PREROUTING' };
  }
}

/** The tools of each family. */
export const TOOLS = {
  4: { cmd: 'iptables', restore: 'iptables-restore' },
  6: { cmd: 'ip6tables', restore: 'ip6tables-restore' },
} as const;

export const FAMILIES: readonly Family[] = [4, 6];

/**
 * Waits at most 5 s for the xtables lock that iptables-legacy takes (a bare
 * `-w` waits forever); iptables-nft accepts and ignores it. The `=` form is
 * the one iptables-restore also reads.
 */
export const WAIT = '--wait=5';

/**
 * The text of an address or network for a command line or a restore script.
 * Network.text comes from the validator; this refuses anything else outright,
 * so a line break or a space can never add a command or an option, and a /0
 * (which iptables would turn into a rule without `-s`: drop everything) never
 * reaches a tool.
 */
export function netArg(net: Network): string | null {
  if (!/^[0-9a-f.:]+(\/\d{1,3})?$/.test(net.text) || net.prefix === 0) return null;
  return net.text;
}

/** Runs iptables or ip6tables on one table, with the lock option. */
export function xt(run: Runner, family: Family, table: string, args: readonly string[]): Promise<CommandResult> {
  return run(TOOLS[family].cmd, [WAIT, '-t', table, ...args]);
}

/**
 * The `-S` listing of one table, or of one built-in chain of it; with
 * `counters`, every rule carries `-c PACKETS BYTES`.
 */
export async function listTable(run: Runner, family: Family, table: string, counters: boolean, who: string, chain?: string): Promise<string[]> {
  const result = await xt(run, family, table, [...(counters ? ['-v'] : []), '-S', ...(chain === undefined ? [] : [chain])]);
  if (result.exitCode !== 0) {
    const what = chain === undefined ? `the ${table} table` : `${chain} of the ${table} table`;
    throw new RatedError('FIREWALL_FAILED', `${who}: cannot read ${what} with ${TOOLS[family].cmd}: ${firstLine(result.stderr) || `exit ${result.exitCode}`}`);
  }
  return result.stdout.split('\n').map((l) => l.trim()).filter((l) => l !== '');
}

/** Drops the `-c PACKETS BYTES` of a `-v -S` line and returns the line and its packet count. */
export function splitCounters(line: string): { rule: string; packets: number; bytes: number } {
  const m = / -c (\d+) (\d+)/.exec(line);
  if (!m) return { rule: line, packets: 0, bytes: 0 };
  return { rule: line.slice(0, m.index) + line.slice(m.index + m[0].length), packets: Number(m[1]), bytes: Number(m[2]) };
}

/**
 * Puts `rule` in the anchor chain, first, unless it is already there
 * (`-C`, then `-I CHAIN 1`). Never changes or removes another rule.
 */
export async function ensureRule(run: Runner, family: Family, anchor: Anchor, rule: readonly string[], who: string): Promise<void> {
  const check = await xt(run, family, anchor.table, ['-C', anchor.chain, ...rule]);
  if (check.exitCode === 0) return;
  const insert = await xt(run, family, anchor.table, ['-I', anchor.chain, '1', ...rule]);
  if (insert.exitCode !== 0) {
    throw new RatedError('FIREWALL_FAILED', `${who}: cannot add our rule to ${anchor.chain} with ${TOOLS[family].cmd}: ${firstLine(insert.stderr) || `exit ${insert.exitCode}`}`);
  }
}

/** Throws FIREWALL_UNUSABLE, saying why, unless `file args` runs and succeeds here. */
export async function probeTool(run: Runner, who: string, file: string, args: readonly string[]): Promise<void> {
  let result: CommandResult;
  try {
    result = await run(file, args);
  } catch (err) {
    const why = err instanceof CommandError && err.notFound ? `${file} is not installed` : (err as Error).message;
    throw new RatedError('FIREWALL_UNUSABLE', `${who}: ${why}`);
  }
  if (result.exitCode !== 0) {
    const why = firstLine(result.stderr).replace(/^[\w-]+ v[\d.]+(?: \([^)]*\))?: /, '') || `${file} exited with ${result.exitCode}`;
    const privilege = /permitted|permission denied|must be root/i.test(why) ? ' (needs root or CAP_NET_ADMIN)' : '';
    throw new RatedError('FIREWALL_UNUSABLE', `${who}: ${file === who ? '' : `${file}: `}${why}${privilege}`);
  }
}

export function firstLine(text: string): string {
  return (text.split('\n').find((l) => l.trim() !== '') ?? '').trim();
}
