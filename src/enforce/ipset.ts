import { parseNetwork, type Family, type Network } from '../address.js';
import { RatedError } from '../errors.js';
import {
  applyBisecting, QueuedBackend, timeoutSeconds,
  type Backend, type CommitResult, type KernelEntry, type Op, type StructureCheck,
} from './backend.js';
import type { Runner } from '../run-command.js';
import {
  anchorOf, ensureRule, FAMILIES, firstLine, listTable, netArg, probeTool, splitCounters, TOOLS, WAIT, xt, type Anchor,
} from './xtables.js';

/** Where our ipset objects live. */
export interface IpsetOptions {
  /** Name prefix: the sets are `<table>-v4` and `<table>-v6`. */
  readonly table: string;
  readonly hook: 'input' | 'forward' | 'prerouting';
  /** `maxelem` of each set we create. */
  readonly maxElements?: number;
  /** IPv6 clients are blocked as networks of this length: they go to set v6, other IPv6 networks to v6net. @default 64 */
  readonly ipv6Prefix?: number;
}

/**
 * Our four sets (SPEC §5): single IPv4 addresses (almost every block) in a
 * `hash:ip`, IPv6 clients (networks of one length) in a `hash:net`, and the
 * other networks in two small `hash:net` sets.
 */
export type SetKind = 'v4' | 'v6' | 'v4net' | 'v6net';
export const KINDS: readonly SetKind[] = ['v4net', 'v6net', 'v4', 'v6'];

/** The family of a set kind. */
export function familyOf(kind: SetKind): Family {
  return kind === 'v4' || kind === 'v4net' ? 4 : 6;
}

/** The ipset type of a set kind. */
export function typeOf(kind: SetKind): 'hash:ip' | 'hash:net' {
  return kind === 'v4' ? 'hash:ip' : 'hash:net';
}

/** The set that holds a block. */
export function kindOf(net: Network, ipv6Prefix = 64): SetKind {
  if (net.family === 4) return net.prefix === 32 ? 'v4' : 'v4net';
  return net.prefix === ipv6Prefix ? 'v6' : 'v6net';
}

/** The size of each set: an upper bound only, ipset allocates as elements arrive. */
export const MAX_ELEMENTS = 1_048_576;
/** The initial hash size; the kernel grows it as the set fills. */
export const HASH_SIZE = 1024;
/** The longest element timeout ipset accepts, in seconds (about 24.8 days). */
export const MAX_TIMEOUT_S = 2_147_483;

const WHO = 'ipset';
const FULL = /Hash is full|maximal number of elements/i;

/** The name of one of our sets. */
export function setName(table: string, kind: SetKind): string {
  return `${table}-${kind}`;
}

/** The arguments of `ipset create` for one of our sets: timeouts and per-element counters. */
export function createArgs(o: IpsetOptions, kind: SetKind): string[] {
  return ['create', setName(o.table, kind), typeOf(kind), 'family', familyOf(kind) === 4 ? 'inet' : 'inet6',
    'hashsize', String(HASH_SIZE), 'maxelem', String(o.maxElements ?? MAX_ELEMENTS), 'timeout', '0', 'counters', '-exist'];
}

/** The iptables rule that drops sources found in one of our sets. */
export function matchRule(table: string, kind: SetKind): string[] {
  return ['-m', 'set', '--match-set', setName(table, kind), 'src', '-j', 'DROP'];
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
export function renderOps(table: string, ops: readonly Op[], ipv6Prefix = 64): string {
  return ops.map((op) => {
    const set = setName(table, kindOf(op.net, ipv6Prefix));
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
    const rest = m[3] ?? '';
    const seconds = Number(/ timeout (\d+)(?: |$)/.exec(rest)?.[1] ?? 0);
    const counted = / packets (\d+) bytes (\d+)/.exec(rest);
    out.push({
      net, expiresAt: seconds > 0 ? now + seconds * 1000 : null,
      dropped: counted ? { packets: Number(counted[1]), bytes: Number(counted[2]) } : null,
    });
  }
  return out;
}

/** What `ipset list -terse SET` says about a set: its type and header fields. */
export interface SetHeader {
  readonly type: string;
  readonly family: string | null;
  readonly maxelem: number | null;
  readonly timeout: boolean;
  /** Whether its elements count packets and bytes (sets of the older layout do not). */
  readonly counters: boolean;
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
    counters: /(?:^| )counters(?: |$)/.test(header),
    entries: entries === undefined ? null : Number(entries),
  };
}

/**
 * The ipset backend: sets `<table>-v4` (hash:ip), `<table>-v6` (hash:net,
 * IPv6 clients), `<table>-v4net` and `<table>-v6net` (hash:net, other
 * networks), all with timeouts and counters, and one iptables or ip6tables
 * rule each that drops their sources. Every element has a kernel timeout, so
 * blocks end even if rated is dead. A `<table>-v4` of the older layout
 * (hash:net, every IPv4 block) is moved into this one without a moment when
 * a blocked address passes.
 */
export class IpsetBackend extends QueuedBackend implements Backend {
  readonly kind = 'ipset' as const;
  /** Reading every element back stays cheap (ipset save: 1 s at 1,000,000, streamed). */
  readonly readLimit = Number.POSITIVE_INFINITY;
  readonly expiresInKernel = true;
  readonly maxTimeoutMs = MAX_TIMEOUT_S * 1000;
  private readonly anchor: Anchor;
  private readonly ipv6Prefix: number;
  /** maxelem of each set as the kernel reports it (a set made elsewhere may differ from ours). */
  private readonly sizes = new Map<SetKind, number>();

  constructor(private readonly run: Runner, private readonly options: IpsetOptions) {
    super();
    this.anchor = anchorOf(options.hook);
    this.ipv6Prefix = options.ipv6Prefix ?? 64;
  }

  async probe(): Promise<void> {
    await probeTool(this.run, WHO, 'ipset', ['list', '-name']);
    for (const family of FAMILIES) {
      await probeTool(this.run, WHO, TOOLS[family].cmd, [WAIT, '-t', this.anchor.table, '-S', this.anchor.chain]);
    }
  }

  async ensure(): Promise<void> {
    // The network sets first: an older v4 set moves through v4net.
    for (const kind of KINDS) {
      const header = await this.readHeader(kind);
      if (header === null) await this.create(kind);
      else if (kind === 'v4' && olderV4(header)) await this.upgradeV4();
      else this.assertUsable(kind, header);
      await ensureRule(this.run, familyOf(kind), this.anchor, matchRule(this.options.table, kind), WHO);
      // The older layout kept every IPv6 block in v6: the other lengths move to v6net.
      if (kind === 'v6' && header !== null && !header.counters) await this.moveOut('v6', (net) => kindOf(net, this.ipv6Prefix) !== 'v6');
    }
  }

  async check(): Promise<StructureCheck> {
    let intact = true;
    const totals = { ipv4: { packets: 0, bytes: 0 }, ipv6: { packets: 0, bytes: 0 } };
    const lines = new Map<Family, string[]>();
    for (const family of FAMILIES) lines.set(family, await listTable(this.run, family, this.anchor.table, true, WHO, this.anchor.chain));
    for (const kind of KINDS) {
      const header = await this.readHeader(kind);
      if (header === null || !usable(kind, header)) intact = false;
      const wanted = ['-A', this.anchor.chain, ...matchRule(this.options.table, kind)].join(' ');
      const rule = (lines.get(familyOf(kind)) ?? []).map(splitCounters).find((l) => l.rule === wanted);
      if (!rule) { intact = false; continue; }
      const total = totals[familyOf(kind) === 4 ? 'ipv4' : 'ipv6'];
      total.packets += rule.packets;
      total.bytes += rule.bytes;
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
        const kind = kindOf(bad.net, this.ipv6Prefix);
        const set = setName(this.options.table, kind);
        const message = `ipset: set ${set} is full (maxelem ${this.sizes.get(kind) ?? this.options.maxElements ?? MAX_ELEMENTS}); ${error}`;
        // Renewals of present elements still succeed in a full set; new ones cannot.
        const refused = new Set(batch.slice(line - 1).filter((op) => op === bad || (op.kind === 'add' && !op.replace && kindOf(op.net, this.ipv6Prefix) === kind)));
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
    for (const kind of KINDS) out.push(...await this.listSet(kind));
    return out;
  }

  async flush(): Promise<number | null> {
    // The header counts the entries; reading them all would cost as much as the set is large.
    let count = 0;
    for (const kind of KINDS) {
      const header = await this.readHeader(kind);
      if (header === null) continue;
      count += header.entries ?? 0;
      const set = setName(this.options.table, kind);
      const result = await this.run('ipset', ['flush', set]);
      if (result.exitCode !== 0) throw new RatedError('FIREWALL_FAILED', `ipset: cannot flush set ${set}: ${firstLine(result.stderr)}`);
    }
    return count;
  }

  private async listSet(kind: SetKind): Promise<KernelEntry[]> {
    const set = setName(this.options.table, kind);
    const now = Date.now();
    const result = await this.run('ipset', ['list', set, '-output', 'save']);
    if (result.exitCode !== 0) {
      if (/does not exist/.test(result.stderr)) return [];
      throw new RatedError('FIREWALL_FAILED', `ipset: cannot list set ${set}: ${firstLine(result.stderr)}`);
    }
    return parseSave(result.stdout, set, familyOf(kind), now);
  }

  private async create(kind: SetKind): Promise<void> {
    const result = await this.run('ipset', createArgs(this.options, kind));
    if (result.exitCode !== 0) {
      throw new RatedError('FIREWALL_FAILED', `ipset: cannot create set ${setName(this.options.table, kind)}: ${firstLine(result.stderr)}`);
    }
    this.sizes.set(kind, this.options.maxElements ?? MAX_ELEMENTS);
  }

  /** Runs a restore script of our own making; throws what ipset said. */
  private async script(text: string): Promise<void> {
    if (text === '') return;
    const result = await this.run('ipset', ['-exist', 'restore'], text);
    if (result.exitCode !== 0) throw new RatedError('FIREWALL_FAILED', `ipset: ${firstLine(result.stderr)}`);
  }

  /**
   * The older v4 set (hash:net, every IPv4 block) becomes a hash:ip: every
   * element is first copied into v4net, whose rule is in place, with its time
   * left; then v4 is made anew and given back its single addresses, and only
   * then are those taken out of v4net. A blocked address is matched all along.
   */
  private async upgradeV4(): Promise<void> {
    const table = this.options.table;
    const old = await this.listSet('v4');
    const left = secondsLeft(Date.now());
    await this.script(old.map((e) => `add ${setName(table, 'v4net')} ${e.net.text} timeout ${left(e)}\n`).join(''));
    await xt(this.run, 4, this.anchor.table, ['-D', this.anchor.chain, ...matchRule(table, 'v4')]);
    const destroy = await this.run('ipset', ['destroy', setName(table, 'v4')]);
    if (destroy.exitCode !== 0) throw new RatedError('FIREWALL_FAILED', `ipset: cannot replace the older set ${setName(table, 'v4')}: ${firstLine(destroy.stderr)}`);
    await this.create('v4');
    const single = old.filter((e) => e.net.prefix === 32);
    await this.script(single.map((e) => `add ${setName(table, 'v4')} ${e.net.text} timeout ${left(e)}\n`).join(''));
    await ensureRule(this.run, 4, this.anchor, matchRule(table, 'v4'), WHO);
    await this.script(single.map((e) => `del ${setName(table, 'v4net')} ${e.net.text}\n`).join(''));
  }

  /** Moves the elements of `kind` that `out` picks to the set they belong in now, with their time left. */
  private async moveOut(kind: SetKind, out: (net: Network) => boolean): Promise<void> {
    const table = this.options.table;
    const moving = (await this.listSet(kind)).filter((e) => out(e.net));
    if (moving.length === 0) return;
    const left = secondsLeft(Date.now());
    await this.script(moving.map((e) => `add ${setName(table, kindOf(e.net, this.ipv6Prefix))} ${e.net.text} timeout ${left(e)}\n`).join(''));
    await this.script(moving.map((e) => `del ${setName(table, kind)} ${e.net.text}\n`).join(''));
  }

  /** Runs one restore script; returns ipset's complaint, or null when every line was applied. */
  private async restore(batch: readonly Op[]): Promise<string | null> {
    const result = await this.run('ipset', ['-exist', 'restore'], renderOps(this.options.table, batch, this.ipv6Prefix));
    if (result.exitCode === 0) return null;
    return firstLine(result.stderr).replace(/^ipset v[\d.]+: /, '') || `ipset exited with ${result.exitCode}`;
  }

  private async readHeader(kind: SetKind): Promise<SetHeader | null> {
    const set = setName(this.options.table, kind);
    const result = await this.run('ipset', ['list', '-terse', set]);
    if (result.exitCode !== 0) {
      if (/does not exist/.test(result.stderr)) return null;
      throw new RatedError('FIREWALL_FAILED', `ipset: cannot read set ${set}: ${firstLine(result.stderr)}`);
    }
    return parseHeader(result.stdout);
  }

  /** A set of our name made by someone else is used only if it can do the job; it is never changed. */
  private assertUsable(kind: SetKind, header: SetHeader): void {
    const set = setName(this.options.table, kind);
    if (!usable(kind, header)) {
      throw new RatedError('FIREWALL_FAILED',
        `ipset: set ${set} exists as ${header.type} family ${header.family ?? '?'}${header.timeout ? '' : ' without timeout'}; ` +
        `rated needs ${typeOf(kind)} family ${familyOf(kind) === 4 ? 'inet' : 'inet6'} with timeout: remove that set or choose another firewall.table`);
    }
    if (header.maxelem !== null) this.sizes.set(kind, header.maxelem);
  }
}

function usable(kind: SetKind, header: SetHeader): boolean {
  return header.type === typeOf(kind) && header.family === (familyOf(kind) === 4 ? 'inet' : 'inet6') && header.timeout;
}

/** An element's time left as an ipset timeout, in whole seconds (0: it had none, and gets none). */
function secondsLeft(now: number): (e: KernelEntry) => number {
  return (e) => (e.expiresAt === null ? 0 : Math.max(1, Math.ceil((e.expiresAt - now) / 1000)));
}

/** The v4 set of the older layout: a hash:net with timeouts that held every IPv4 block. */
function olderV4(header: SetHeader): boolean {
  return header.type === 'hash:net' && header.family === 'inet' && header.timeout;
}
