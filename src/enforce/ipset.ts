import { parseNetwork, type Family, type Network } from '../address.js';
import { RatedError } from '../errors.js';
import {
  applyBisecting, QueuedBackend, timeoutSeconds,
  type Backend, type CommitResult, type KernelEntry, type Op, type StructureCheck,
} from './backend.js';
import type { Runner } from '../run-command.js';
import {
  anchorOf, ensureRule, FAMILIES, firstLine, listTable, netArg, probeTool, splitCounters, TOOLS, WAIT, type Anchor,
} from './xtables.js';

/** Where our ipset objects live. */
export interface IpsetOptions {
  /** Name prefix: the sets are `<table>-v4` and `<table>-v6`. */
  readonly table: string;
  readonly hook: 'input' | 'forward' | 'prerouting';
  /** `maxelem` of each set we create. */
  readonly maxElements?: number;
}

/** The size of each set: an upper bound only, ipset allocates as elements arrive. */
export const MAX_ELEMENTS = 1_048_576;
/** The initial hash size; the kernel grows it as the set fills. */
export const HASH_SIZE = 1024;
/** The longest element timeout ipset accepts, in seconds (about 24.8 days). */
export const MAX_TIMEOUT_S = 2_147_483;

const WHO = 'ipset';
const FULL = /Hash is full|maximal number of elements/i;

/** The name of our set for one family. */
export function setName(table: string, family: Family): string {
  return `${table}-v${family}`;
}

/** The arguments of `ipset create` for one of our sets. */
export function createArgs(o: IpsetOptions, family: Family): string[] {
  return ['create', setName(o.table, family), 'hash:net', 'family', family === 4 ? 'inet' : 'inet6',
    'hashsize', String(HASH_SIZE), 'maxelem', String(o.maxElements ?? MAX_ELEMENTS), 'timeout', '0', '-exist'];
}

/** The iptables rule that drops sources found in one of our sets. */
export function matchRule(table: string, family: Family): string[] {
  return ['-m', 'set', '--match-set', setName(table, family), 'src', '-j', 'DROP'];
}

/** A kernel timeout for `ms`: whole seconds, rounded up, within ipset's range. */
export function ipsetTimeout(ms: number): number {
  return Math.min(timeoutSeconds(ms), MAX_TIMEOUT_S);
}

// Rendering is pure: a batch is one `ipset -exist restore` script, one line per
// change, built only from validated network text and integers. Deletes come
// first so that they make room before the adds. With -exist an add of a
// present element replaces its timeout and a delete of an absent one is a
// no-op, so running a script again is harmless.

/** Renders a batch; every op must have passed `netArg`. */
export function renderOps(table: string, ops: readonly Op[]): string {
  return ops.map((op) => {
    const set = setName(table, op.net.family);
    return op.kind === 'delete'
      ? `del ${set} ${op.net.text}\n`
      : `add ${set} ${op.net.text} timeout ${ipsetTimeout(op.timeoutMs)}\n`;
  }).join('');
}

/** Deletes first, then adds, each in queue order. */
export function orderOps(ops: readonly Op[]): Op[] {
  return [...ops.filter((op) => op.kind === 'delete'), ...ops.filter((op) => op.kind === 'add')];
}

/** Reads the elements of one set out of `ipset list SET -output save`. */
export function parseSave(text: string, set: string, family: Family, now: number): KernelEntry[] {
  const out: KernelEntry[] = [];
  for (const line of text.split('\n')) {
    const m = /^add (\S+) (\S+)(.*)$/.exec(line.trim());
    if (!m || m[1] !== set) continue;
    const net = parseNetwork(m[2] ?? '');
    if (!net || net.family !== family) continue;
    const seconds = Number(/ timeout (\d+)(?: |$)/.exec(m[3] ?? '')?.[1] ?? 0);
    out.push({ net, expiresAt: seconds > 0 ? now + seconds * 1000 : null });
  }
  return out;
}

/** What `ipset list -terse SET` says about a set: its type and header fields. */
export interface SetHeader {
  readonly type: string;
  readonly family: string | null;
  readonly maxelem: number | null;
  readonly timeout: boolean;
  /** Number of entries, as the header reports it. */
  readonly entries: number | null;
}

export function parseHeader(text: string): SetHeader | null {
  const type = /^Type: (\S+)/m.exec(text)?.[1];
  const header = /^Header: (.*)$/m.exec(text)?.[1];
  if (!type || header === undefined) return null;
  const field = (name: string): string | null => new RegExp(`(?:^| )${name} (\\S+)`).exec(header)?.[1] ?? null;
  const maxelem = field('maxelem');
  const entries = /^Number of entries: (\d+)/m.exec(text)?.[1];
  return {
    type, family: field('family'), maxelem: maxelem === null ? null : Number(maxelem), timeout: field('timeout') !== null,
    entries: entries === undefined ? null : Number(entries),
  };
}

/**
 * The ipset backend: sets `<table>-v4` and `<table>-v6` (hash:net with
 * timeouts) and one iptables and one ip6tables rule that drop their sources.
 * Every element has a kernel timeout, so blocks end even if rated is dead.
 */
export class IpsetBackend extends QueuedBackend implements Backend {
  readonly kind = 'ipset' as const;
  /** Reading every element back stays cheap (ipset save: 1 s at 1,000,000, streamed). */
  readonly readLimit = Number.POSITIVE_INFINITY;
  readonly expiresInKernel = true;
  readonly maxTimeoutMs = MAX_TIMEOUT_S * 1000;
  private readonly anchor: Anchor;
  /** maxelem of each set as the kernel reports it (a set made elsewhere may differ from ours). */
  private readonly sizes = new Map<Family, number>();

  constructor(private readonly run: Runner, private readonly options: IpsetOptions) {
    super();
    this.anchor = anchorOf(options.hook);
  }

  async probe(): Promise<void> {
    await probeTool(this.run, WHO, 'ipset', ['list', '-name']);
    for (const family of FAMILIES) {
      await probeTool(this.run, WHO, TOOLS[family].cmd, [WAIT, '-t', this.anchor.table, '-S', this.anchor.chain]);
    }
  }

  async ensure(): Promise<void> {
    for (const family of FAMILIES) {
      const header = await this.readHeader(family);
      if (header === null) {
        const result = await this.run('ipset', createArgs(this.options, family));
        if (result.exitCode !== 0) {
          throw new RatedError('FIREWALL_FAILED', `ipset: cannot create set ${setName(this.options.table, family)}: ${firstLine(result.stderr)}`);
        }
        this.sizes.set(family, this.options.maxElements ?? MAX_ELEMENTS);
      } else {
        this.assertUsable(family, header);
      }
    }
    for (const family of FAMILIES) {
      await ensureRule(this.run, family, this.anchor, matchRule(this.options.table, family), WHO);
    }
  }

  async check(): Promise<StructureCheck> {
    let intact = true;
    const totals = { ipv4: { packets: 0, bytes: 0 }, ipv6: { packets: 0, bytes: 0 } };
    for (const family of FAMILIES) {
      const header = await this.readHeader(family);
      if (header === null || !usable(family, header)) intact = false;
      const wanted = ['-A', this.anchor.chain, ...matchRule(this.options.table, family)].join(' ');
      const lines = await listTable(this.run, family, this.anchor.table, true, WHO, this.anchor.chain);
      const rule = lines.map(splitCounters).find((l) => l.rule === wanted);
      if (rule) totals[family === 4 ? 'ipv4' : 'ipv6'] = { packets: rule.packets, bytes: rule.bytes };
      else intact = false;
    }
    return { intact, droppedPackets: totals.ipv4.packets + totals.ipv6.packets, dropped: totals };
  }

  /**
   * One `ipset restore` for the batch. ipset names the line it refused;
   * that change is reported and the rest runs again (harmless with -exist),
   * so each refusal costs one more run. A full set refuses every new
   * element after it at once.
   */
  protected async apply(queued: Op[]): Promise<CommitResult> {
    const ops = orderOps(queued);
    const failed: Array<{ net: Network; op: 'add' | 'delete'; error: string }> = [];
    const refuse = (op: Op, error: string): void => {
      failed.push({ net: op.net, op: op.kind, error });
    };
    let batch: Op[] = [];
    for (const op of ops) {
      if (netArg(op.net) === null) refuse(op, `ipset: ${JSON.stringify(op.net.text)} is not a network rated would pass to ipset`);
      else batch.push(op);
    }
    while (batch.length > 0) {
      const error = await this.restore(batch);
      if (error === null) break;
      const line = Number(/Error in line (\d+)/.exec(error)?.[1] ?? 0);
      const bad = batch[line - 1];
      if (bad === undefined) {
        // No line named: split the batch until the refused changes are isolated.
        const rest = await applyBisecting(batch, (part) => this.restore(part));
        failed.push(...rest.failed);
        break;
      }
      if (FULL.test(error) && bad.kind === 'add') {
        const set = setName(this.options.table, bad.net.family);
        const message = `ipset: set ${set} is full (maxelem ${this.sizes.get(bad.net.family) ?? this.options.maxElements ?? MAX_ELEMENTS}); ${error}`;
        // Renewals of present elements still succeed in a full set; new ones cannot.
        const refused = new Set(batch.slice(line - 1).filter((op) => op === bad || (op.kind === 'add' && !op.replace && op.net.family === bad.net.family)));
        for (const op of refused) refuse(op, message);
        batch = batch.filter((op) => !refused.has(op));
      } else {
        refuse(bad, error);
        batch = batch.filter((op) => op !== bad);
      }
    }
    return { applied: ops.length - failed.length, failed };
  }

  async list(): Promise<KernelEntry[]> {
    const out: KernelEntry[] = [];
    for (const family of FAMILIES) {
      const set = setName(this.options.table, family);
      const now = Date.now();
      const result = await this.run('ipset', ['list', set, '-output', 'save']);
      if (result.exitCode !== 0) {
        if (/does not exist/.test(result.stderr)) continue;
        throw new RatedError('FIREWALL_FAILED', `ipset: cannot list set ${set}: ${firstLine(result.stderr)}`);
      }
      out.push(...parseSave(result.stdout, set, family, now));
    }
    return out;
  }

  async flush(): Promise<number | null> {
    // The header counts the entries; reading them all would cost as much as the set is large.
    let count = 0;
    for (const family of FAMILIES) {
      const header = await this.readHeader(family);
      if (header === null) continue;
      count += header.entries ?? 0;
      const set = setName(this.options.table, family);
      const result = await this.run('ipset', ['flush', set]);
      if (result.exitCode !== 0) throw new RatedError('FIREWALL_FAILED', `ipset: cannot flush set ${set}: ${firstLine(result.stderr)}`);
    }
    return count;
  }

  /** Runs one restore script; returns ipset's complaint, or null when every line was applied. */
  private async restore(batch: readonly Op[]): Promise<string | null> {
    const result = await this.run('ipset', ['-exist', 'restore'], renderOps(this.options.table, batch));
    if (result.exitCode === 0) return null;
    return firstLine(result.stderr).replace(/^ipset v[\d.]+: /, '') || `ipset exited with ${result.exitCode}`;
  }

  private async readHeader(family: Family): Promise<SetHeader | null> {
    const set = setName(this.options.table, family);
    const result = await this.run('ipset', ['list', '-terse', set]);
    if (result.exitCode !== 0) {
      if (/does not exist/.test(result.stderr)) return null;
      throw new RatedError('FIREWALL_FAILED', `ipset: cannot read set ${set}: ${firstLine(result.stderr)}`);
    }
    return parseHeader(result.stdout);
  }

  /** A set of our name made by someone else is used only if it can do the job; it is never changed. */
  private assertUsable(family: Family, header: SetHeader): void {
    const set = setName(this.options.table, family);
    if (!usable(family, header)) {
      throw new RatedError('FIREWALL_FAILED',
        `ipset: set ${set} exists as ${header.type} family ${header.family ?? '?'}${header.timeout ? '' : ' without timeout'}; ` +
        `rated needs hash:net family ${family === 4 ? 'inet' : 'inet6'} with timeout: remove that set or choose another firewall.table`);
    }
    if (header.maxelem !== null) this.sizes.set(family, header.maxelem);
  }
}

function usable(family: Family, header: SetHeader): boolean {
  return header.type === 'hash:net' && header.family === (family === 4 ? 'inet' : 'inet6') && header.timeout;
}
