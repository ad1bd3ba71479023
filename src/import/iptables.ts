/**
 * The 2014 rated's footprint in iptables (`rated migrate iptables`): one
 * `-A INPUT -s ADDR -j DROP` and one `-A OUTPUT -d ADDR -j REJECT` per
 * blocked address, in iptables and ip6tables, legacy or nft. They are read
 * with `*-save`, and removed with one `*-restore --noflush` per tool once
 * their addresses are blocked by rated, so that no address is let through
 * for a moment. Every other rule is left alone.
 */
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { parseBlockTarget } from '../block.js';
import { RatedError } from '../errors.js';
import type { Runner } from '../run-command.js';

/** One save/restore pair: `iptables-nft`, `ip6tables-legacy`, or plain `iptables` where no variant is installed. */
export interface XtablesTool {
  readonly save: string;
  readonly restore: string;
  /** For messages: `iptables (nft)`. */
  readonly name: string;
}

/** A plain per-address DROP/REJECT rule, as `*-save` printed it (without counters). */
export interface PlainRule {
  readonly tool: XtablesTool;
  /** The rule as saved: `-A INPUT -s 192.0.2.7/32 -j DROP`. */
  readonly spec: string;
  /** The canonical address or network it drops. */
  readonly ip: string;
}

/** What the filter tables hold: the plain rules to take over, and the other rules of INPUT/OUTPUT, left alone. */
export interface Footprint {
  readonly rules: PlainRule[];
  readonly leftAlone: Array<{ tool: XtablesTool; spec: string }>;
  /** Tools that could not be read, with why (a variant whose kernel side is absent). */
  readonly unreadable: string[];
}

/**
 * Sorts the rules of one `*-save -t filter` listing: a rule is plain when it
 * is `-A INPUT -s ADDR -j DROP|REJECT [--reject-with X]` or the same in
 * OUTPUT with `-d` — nothing else (no port, interface, module or comment).
 */
export function readSave(text: string, tool: XtablesTool): Footprint {
  const out: Footprint = { rules: [], leftAlone: [], unreadable: [] };
  let table = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('*')) { table = line.slice(1); continue; }
    // Counters aside: `iptables-save -c` prints them first.
    const spec = line.replace(/^\[\d+:\d+\]\s+/, '');
    if (table !== 'filter' || !spec.startsWith('-A ')) continue;
    const words = spec.split(/\s+/);
    const chain = words[1];
    if (chain !== 'INPUT' && chain !== 'OUTPUT') continue;
    const ip = plainTarget(words);
    if (ip === null) out.leftAlone.push({ tool, spec });
    else out.rules.push({ tool, spec: words.join(' '), ip });
  }
  return out;
}

function plainTarget(words: readonly string[]): string | null {
  const [, chain, flag, address, jump, target, ...rest] = words;
  if (flag !== (chain === 'INPUT' ? '-s' : '-d') || address === undefined || jump !== '-j') return null;
  if (target === 'DROP' ? rest.length !== 0 : target !== 'REJECT' || !(rest.length === 0 || (rest.length === 2 && rest[0] === '--reject-with'))) return null;
  try {
    return parseBlockTarget(address).text;
  } catch {
    return null;
  }
}

/** The save/restore tools present: both variants where both are installed, plain ones otherwise. */
export function xtablesTools(onPath: (name: string) => boolean): XtablesTool[] {
  const tools: XtablesTool[] = [];
  for (const base of ['iptables', 'ip6tables']) {
    const variants = ['nft', 'legacy'].filter((v) => onPath(`${base}-${v}-save`) && onPath(`${base}-${v}-restore`));
    if (variants.length > 0) {
      for (const v of variants) tools.push({ save: `${base}-${v}-save`, restore: `${base}-${v}-restore`, name: `${base} (${v})` });
    } else if (onPath(`${base}-save`) && onPath(`${base}-restore`)) {
      tools.push({ save: `${base}-save`, restore: `${base}-restore`, name: base });
    }
  }
  return tools;
}

/** Reads the filter table of every tool. */
export async function readFootprint(run: Runner, tools: readonly XtablesTool[]): Promise<Footprint> {
  if (tools.length === 0) throw new RatedError('FIREWALL_FAILED', 'neither iptables-save nor ip6tables-save is installed: there is nothing to migrate from');
  const all: Footprint = { rules: [], leftAlone: [], unreadable: [] };
  for (const tool of tools) {
    const r = await run(tool.save, ['-t', 'filter']);
    if (r.exitCode !== 0) {
      all.unreadable.push(`${tool.name}: ${(r.stderr.trim().split('\n')[0] ?? '').slice(0, 200) || `exit ${r.exitCode}`}`);
      continue;
    }
    const f = readSave(r.stdout, tool);
    all.rules.push(...f.rules);
    all.leftAlone.push(...f.leftAlone);
  }
  if (all.unreadable.length === tools.length) throw new RatedError('FIREWALL_FAILED', `cannot read the filter table: ${all.unreadable.join('; ')}`);
  return all;
}

/**
 * Removes these rules with one `*-restore --noflush` per tool: all of a
 * tool's rules go in one commit, or none does.
 */
export async function removeRules(run: Runner, rules: readonly PlainRule[]): Promise<void> {
  const byTool = new Map<XtablesTool, string[]>();
  for (const r of rules) {
    let lines = byTool.get(r.tool);
    if (!lines) byTool.set(r.tool, (lines = []));
    lines.push(r.spec.replace(/^-A /, '-D '));
  }
  for (const [tool, lines] of byTool) {
    const res = await run(tool.restore, ['--noflush'], `*filter\n${lines.join('\n')}\nCOMMIT\n`);
    if (res.exitCode !== 0) {
      throw new RatedError('FIREWALL_FAILED', `${tool.restore} --noflush refused to remove the ${lines.length} migrated rules (they are still in place, and rated blocks their addresses too): ${res.stderr.trim().split('\n')[0] ?? ''}`);
    }
  }
}

/** The tools on this PATH. */
export function toolsOnPath(): XtablesTool[] {
  const dirs = (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(delimiter).filter((d) => d !== '');
  return xtablesTools((name) => dirs.some((dir) => {
    try {
      accessSync(join(dir, name), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  }));
}
