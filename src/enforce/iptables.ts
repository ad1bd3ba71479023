import { parseNetwork, type Family, type Network } from '../address.js';
import { RatedError } from '../errors.js';
import {
  applyBisecting, QueuedBackend,
  type Backend, type CommitResult, type KernelEntry, type Op, type StructureCheck,
} from './backend.js';
import type { Runner } from '../run-command.js';
import {
  anchorOf, ensureRule, FAMILIES, firstLine, listTable, netArg, probeTool, splitCounters, TOOLS, WAIT, xt, type Anchor,
} from './xtables.js';

/** Where our iptables objects live. */
export interface IptablesOptions {
  /** Our chain's name, in the table of the hook (filter for input and forward, raw for prerouting). */
  readonly table: string;
  readonly hook: 'input' | 'forward' | 'prerouting';
}

const WHO = 'iptables';

/** The rule that sends packets from the anchor chain to ours. */
export function jumpRule(chain: string): string[] {
  return ['-j', chain];
}

/** A change to our chain, as a line of an iptables-restore script. */
export interface RuleChange {
  readonly op: Op;
  readonly line: string;
}

/**
 * Turns a batch into rule changes for one family, given how many DROP rules
 * each network already has in our chain: an add of a present network and a
 * delete of an absent one change nothing (iptables would add a duplicate, or
 * refuse the whole batch); a delete removes every copy. Pure.
 */
export function planChanges(chain: string, ops: readonly Op[], present: ReadonlyMap<string, number>): { changes: RuleChange[]; noops: Op[] } {
  const changes: RuleChange[] = [];
  const noops: Op[] = [];
  for (const op of ops) {
    const copies = present.get(op.net.text) ?? 0;
    if (op.kind === 'add') {
      if (copies > 0) noops.push(op);
      else changes.push({ op, line: `-A ${chain} -s ${op.net.text} -j DROP` });
    } else if (copies === 0) {
      noops.push(op);
    } else {
      for (let i = 0; i < copies; i++) changes.push({ op, line: `-D ${chain} -s ${op.net.text} -j DROP` });
    }
  }
  return { changes, noops };
}

/** Renders one `iptables-restore --noflush` script; it names no chain, so no chain is flushed or created. */
export function renderScript(table: string, lines: readonly string[]): string {
  return `*${table}\n${lines.map((l) => `${l}\n`).join('')}COMMIT\n`;
}

/** Reads the DROP rules of our chain out of `iptables -S` lines: network text → number of copies. */
export function parseRules(lines: readonly string[], chain: string, family: Family): Map<string, { net: Network; copies: number }> {
  const out = new Map<string, { net: Network; copies: number }>();
  const prefix = `-A ${chain} -s `;
  for (const raw of lines) {
    const line = splitCounters(raw).rule;
    if (!line.startsWith(prefix)) continue;
    const m = /^(\S+) -j DROP$/.exec(line.slice(prefix.length));
    const net = m ? parseNetwork(m[1] ?? '') : null;
    if (!net || net.family !== family) continue;
    const entry = out.get(net.text);
    if (entry) entry.copies++;
    else out.set(net.text, { net, copies: 1 });
  }
  return out;
}

/**
 * The iptables backend, for hosts without nftables or ipset: a chain named
 * `<table>` in iptables and ip6tables, jumped to from the hook's chain, with
 * one DROP rule per block. The kernel knows no expiry here: rated deletes the
 * rules when blocks end, so a rule outlives a dead daemon until it runs
 * again. Every packet walks the chain, O(blocks): the slow fallback.
 */
export class IptablesBackend extends QueuedBackend implements Backend {
  readonly kind = 'iptables' as const;
  readonly readLimit = Number.POSITIVE_INFINITY;
  /** One rule per block, matched one after another by every packet: past this, use nftables or ipset. */
  readonly advisedMax = 1000;
  readonly expiresInKernel = false;
  private readonly anchor: Anchor;
  private readonly chain: string;

  constructor(private readonly run: Runner, options: IptablesOptions) {
    super();
    this.anchor = anchorOf(options.hook);
    this.chain = options.table;
  }

  async probe(): Promise<void> {
    for (const family of FAMILIES) {
      await probeTool(this.run, WHO, TOOLS[family].cmd, [WAIT, '-t', this.anchor.table, '-S', this.anchor.chain]);
      await probeTool(this.run, WHO, TOOLS[family].restore, ['--version']);
    }
  }

  async ensure(): Promise<void> {
    for (const family of FAMILIES) {
      const lines = await listTable(this.run, family, this.anchor.table, false, WHO);
      if (!lines.includes(`-N ${this.chain}`)) {
        const result = await xt(this.run, family, this.anchor.table, ['-N', this.chain]);
        if (result.exitCode !== 0) {
          throw new RatedError('FIREWALL_FAILED', `iptables: cannot create chain ${this.chain} with ${TOOLS[family].cmd}: ${firstLine(result.stderr)}`);
        }
      }
      await ensureRule(this.run, family, this.anchor, jumpRule(this.chain), WHO);
    }
  }

  async check(): Promise<StructureCheck> {
    let intact = true;
    const totals = { ipv4: { packets: 0, bytes: 0 }, ipv6: { packets: 0, bytes: 0 } };
    const jump = ['-A', this.anchor.chain, ...jumpRule(this.chain)].join(' ');
    for (const family of FAMILIES) {
      const lines = (await listTable(this.run, family, this.anchor.table, true, WHO)).map(splitCounters);
      if (!lines.some((l) => l.rule === `-N ${this.chain}`) || !lines.some((l) => l.rule === jump)) intact = false;
      const t = totals[family === 4 ? 'ipv4' : 'ipv6'];
      for (const l of lines) {
        if (!l.rule.startsWith(`-A ${this.chain} `) || !l.rule.endsWith(' -j DROP')) continue;
        t.packets += l.packets;
        t.bytes += l.bytes;
      }
    }
    return { intact, droppedPackets: totals.ipv4.packets + totals.ipv6.packets, dropped: totals };
  }

  /**
   * Reads our chain, then applies the changes of each family in one
   * `iptables-restore --noflush` (one transaction: all or nothing). A
   * refused batch is split until the refused changes are isolated.
   */
  protected async apply(ops: Op[]): Promise<CommitResult> {
    const failed: Array<{ net: Network; op: 'add' | 'delete'; error: string }> = [];
    let applied = 0;
    for (const family of FAMILIES) {
      const mine: Op[] = [];
      for (const op of ops) {
        if (op.net.family !== family) continue;
        if (netArg(op.net) === null) failed.push({ net: op.net, op: op.kind, error: `iptables: ${JSON.stringify(op.net.text)} is not a network rated would pass to iptables` });
        else mine.push(op);
      }
      if (mine.length === 0) continue;
      let present: Map<string, number>;
      try {
        present = new Map([...(await this.rules(family)).values()].map((r) => [r.net.text, r.copies]));
      } catch (err) {
        for (const op of mine) failed.push({ net: op.net, op: op.kind, error: (err as Error).message });
        continue;
      }
      const { changes, noops } = planChanges(this.chain, mine, present);
      applied += noops.length;
      // Bisect whole ops: the several lines of one delete stay together.
      const byOp = new Map<Op, string[]>();
      for (const c of changes) byOp.set(c.op, [...(byOp.get(c.op) ?? []), c.line]);
      const result = await applyBisecting([...byOp.keys()], (batch) => this.restore(family, batch.flatMap((op) => byOp.get(op) ?? [])));
      applied += result.applied;
      failed.push(...result.failed);
    }
    return { applied, failed };
  }

  async list(): Promise<KernelEntry[]> {
    const out: KernelEntry[] = [];
    for (const family of FAMILIES) {
      for (const { net } of (await this.rules(family)).values()) out.push({ net, expiresAt: null });
    }
    return out;
  }

  async flush(): Promise<number | null> {
    let count = 0;
    for (const family of FAMILIES) {
      const lines = await listTable(this.run, family, this.anchor.table, false, WHO);
      if (!lines.includes(`-N ${this.chain}`)) continue;
      count += parseRules(lines, this.chain, family).size;
      const result = await xt(this.run, family, this.anchor.table, ['-F', this.chain]);
      if (result.exitCode !== 0) {
        throw new RatedError('FIREWALL_FAILED', `iptables: cannot flush chain ${this.chain} with ${TOOLS[family].cmd}: ${firstLine(result.stderr)}`);
      }
    }
    return count;
  }

  private async rules(family: Family): Promise<Map<string, { net: Network; copies: number }>> {
    return parseRules(await listTable(this.run, family, this.anchor.table, false, WHO), this.chain, family);
  }

  /** Runs one restore script; returns the tool's complaint, or null when it was applied. */
  private async restore(family: Family, lines: readonly string[]): Promise<string | null> {
    if (lines.length === 0) return null;
    const result = await this.run(TOOLS[family].restore, [WAIT, '--noflush'], renderScript(this.anchor.table, lines));
    if (result.exitCode === 0) return null;
    return firstLine(result.stderr) || `${TOOLS[family].restore} exited with ${result.exitCode}`;
  }
}
