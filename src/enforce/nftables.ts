import { parseNetwork, type Network } from '../address.js';
import { RatedError } from '../errors.js';
import {
  applyBisecting, QueuedBackend, timeoutSeconds,
  type Backend, type CommitResult, type DroppedTotals, type KernelEntry, type Op, type StructureCheck,
} from './backend.js';
import { NftSession, SESSION_MAX_BYTES, SessionUnavailable } from './nft-session.js';
import { CommandError, type CommandResult, type Runner } from '../run-command.js';

/** Where our nftables objects live. */
export interface NftOptions {
  readonly table: string;
  readonly hook: 'input' | 'forward' | 'prerouting';
  readonly priority: number;
  /** IPv6 clients are blocked as networks of this length, held in set v6 by their network address. */
  readonly ipv6Prefix: number;
  /** Size of each set (`firewall.maxBlocks`). */
  readonly maxBlocks: number;
}

export const CHAIN = 'block';
/** How nft reports a delete of an absent element (userspace check for interval sets, ENOENT from the kernel). */
const ABSENT = /element does not exist|No such file or directory/;

/**
 * Our sets (SPEC §5). Almost every block is a single IPv4 address or an IPv6
 * client network of `ipv6Prefix`, and those live in hash sets, whose element
 * commands cost the same at 1,000,000 elements as at none. Only other
 * networks go to the interval sets, which nft 1.0.6 reads whole before any
 * element command on any set: they must stay small.
 */
export const SETS = ['v4', 'v6', 'v4net', 'v6net'] as const;
export type SetName = (typeof SETS)[number];
const INTERVAL: ReadonlySet<SetName> = new Set(['v4net', 'v6net']);

/** The set that holds a block of `net`. */
export function setOf(o: Pick<NftOptions, 'ipv6Prefix'>, net: Network): SetName {
  if (net.family === 4) return net.prefix === 32 ? 'v4' : 'v4net';
  return net.prefix === o.ipv6Prefix ? 'v6' : 'v6net';
}

/** The mask of an IPv6 prefix length in nft's notation: 64 → `ffff:ffff:ffff:ffff::`. */
export function ipv6Mask(prefix: number): string {
  const groups: string[] = [];
  for (let i = 0; i < 8; i++) {
    const bits = Math.max(0, Math.min(16, prefix - 16 * i));
    groups.push(((0xffff << (16 - bits)) & 0xffff).toString(16));
  }
  // Compress the trailing zero groups, as nft writes it.
  const last = groups.findLastIndex((g) => g !== '0');
  if (last === 7) return groups.join(':');
  return `${groups.slice(0, last + 1).join(':')}::`;
}

type Json = Record<string, unknown>;

/**
 * Our structure without set elements. nft 1.0.6 reads every element of an
 * interval set into its cache for `list tables` or `list table -t` (1.5–1.7 s
 * with 100,000 elements); a terse `list ruleset` does not (under 10 ms).
 */
const LIST_STRUCTURE = ['-j', '-t', 'list', 'ruleset', 'inet'];

// Rendering is pure: every batch is a JSON document for `nft -j -f -`. JSON
// input cannot be turned into extra commands by a crafted string, and every
// address in it was produced by the validator.

/** An element's value: an address (a v6 client network by its first address), or a prefix in an interval set. */
function elementValue(set: SetName, net: Network): unknown {
  const slash = net.text.indexOf('/');
  if (slash < 0) return net.text;
  if (!INTERVAL.has(set)) return net.text.slice(0, slash);
  return { prefix: { addr: net.text.slice(0, slash), len: net.prefix } };
}

function element(o: NftOptions, set: SetName, elem: unknown[]): Json {
  return { element: { family: 'inet', table: o.table, name: set, elem } };
}

/** A kernel element with its remaining time, for the move from the older layout. */
export interface Carried {
  readonly net: Network;
  readonly timeoutMs: number;
}

/**
 * Renders our table, sets, chain and rules; applying it twice changes
 * nothing. `carry` moves an older layout (interval sets v4 and v6 holding
 * everything) to this one in the same transaction: the old sets go, the new
 * ones come with every element and its remaining time, and the rules are
 * replaced, so no packet from a blocked address passes at any moment.
 */
export function renderStructure(o: NftOptions, recreateChain: boolean, carry: readonly Carried[] | null = null): Json {
  const table = { family: 'inet', table: o.table };
  const chain = { ...table, name: CHAIN };
  const source = (protocol: 'ip' | 'ip6', set: SetName): unknown => {
    const saddr = { payload: { protocol, field: 'saddr' } };
    return set === 'v6' ? { '&': [saddr, ipv6Mask(o.ipv6Prefix)] } : saddr;
  };
  const rule = (protocol: 'ip' | 'ip6', set: SetName): Json => ({
    add: { rule: { ...table, chain: CHAIN, expr: [
      { match: { op: '==', left: source(protocol, set), right: `@${set}` } },
      { counter: null },
      { drop: null },
    ] } },
  });
  const set = (name: SetName): Json => ({
    add: { set: {
      ...table, name, type: name.startsWith('v4') ? 'ipv4_addr' : 'ipv6_addr',
      flags: INTERVAL.has(name) ? ['interval', 'timeout'] : ['timeout'], size: o.maxBlocks, stmt: [{ counter: null }],
      ...(INTERVAL.has(name) ? {} : { 'gc-interval': GC_INTERVAL_S }),
    } },
  });
  const commands: Json[] = [{ add: { table: { family: 'inet', name: o.table } } }];
  if (carry !== null) {
    // The chain's rules name the old sets: the chain goes first (made first
    // where it is missing, so the delete cannot fail), then the sets; both
    // come back below, within the same transaction.
    commands.push({ add: { chain } }, { flush: { chain } }, { delete: { chain } });
    for (const name of ['v4', 'v6'] as const) commands.push({ delete: { set: { ...table, name } } });
  }
  commands.push(...SETS.map(set));
  if (carry !== null && carry.length > 0) commands.push(...renderOps(o, carry.map((c) => ({ kind: 'add', net: c.net, timeoutMs: c.timeoutMs, replace: false }))).nftables);
  if (recreateChain) commands.push({ add: { chain } }, { flush: { chain } }, { delete: { chain } });
  commands.push(
    { add: { chain: { ...chain, type: 'filter', hook: o.hook, prio: o.priority, policy: 'accept' } } },
    { flush: { chain } },
    rule('ip', 'v4'),
    rule('ip', 'v4net'),
    rule('ip6', 'v6'),
    rule('ip6', 'v6net'),
  );
  return { nftables: commands };
}

/**
 * Renders a batch of changes. A renewal (an add of an element that may
 * already be present) is delete + add in one transaction, so its timeout is
 * renewed on every kernel. No placeholder add precedes a delete: nft 1.0.6
 * keeps a re-added existing element twice in its interval cache, and the
 * copy left after the delete makes an overlapping add in the same batch
 * fail ("interval overlaps"). A delete or renewal of an element that is
 * already gone is handled in `commit` instead.
 */
export function renderOps(o: NftOptions, ops: readonly Op[]): { nftables: Json[] } {
  // One delete and one add command per set, deletes first: an add may
  // overlap an element deleted in the same batch (a /24 lifted, an address
  // inside it blocked), and nft parses one command of 100,000 elements in
  // half the time of 100,000 commands.
  // A renewal is a delete and an add (an add of an element already there
  // keeps its old timeout). In the hash sets it is preceded by an add that
  // makes sure the element is there, so the delete cannot fail when the
  // kernel has just expired it: a failed delete would fail the whole batch
  // and cost a split of it. Interval sets keep the plain pair: an early add
  // there could overlap an element this batch deletes.
  const ensures = new Map<SetName, unknown[]>();
  const deletes = new Map<SetName, unknown[]>();
  const adds = new Map<SetName, unknown[]>();
  const into = (m: Map<SetName, unknown[]>, set: SetName, value: unknown): void => {
    const list = m.get(set);
    if (list) list.push(value);
    else m.set(set, [value]);
  };
  for (const op of ops) {
    const set = setOf(o, op.net);
    const value = elementValue(set, op.net);
    if (op.kind === 'add' && op.replace && (set === 'v4' || set === 'v6')) into(ensures, set, { elem: { val: value, timeout: 1 } });
    if (op.kind === 'delete' || op.replace) into(deletes, set, value);
    if (op.kind === 'add') into(adds, set, { elem: { val: value, timeout: timeoutSeconds(op.timeoutMs) } });
  }
  const commands: Json[] = [];
  for (const set of SETS) {
    const list = ensures.get(set);
    if (list) commands.push({ add: element(o, set, list) });
  }
  for (const set of SETS) {
    const list = deletes.get(set);
    if (list) commands.push({ delete: element(o, set, list) });
  }
  for (const set of SETS) {
    const list = adds.get(set);
    if (list) commands.push({ add: element(o, set, list) });
  }
  return { nftables: commands };
}

/**
 * Reads the elements of one set out of `nft -j list set` output. Elements of
 * v6 are client networks written by their first address; `ipv6Prefix` gives
 * them back their length.
 */
export function parseSetListing(json: string, now: number, ipv6Prefix: number | null = null): KernelEntry[] {
  const doc = JSON.parse(json) as { nftables?: Json[] };
  const out: KernelEntry[] = [];
  for (const item of doc.nftables ?? []) {
    const set = item.set as { name?: string; elem?: unknown[] } | undefined;
    const length = set?.name === 'v6' ? ipv6Prefix : null;
    for (const raw of set?.elem ?? []) {
      const e = (raw as Json).elem as Json | undefined;
      const val = e ? e.val : raw;
      const net = parseElementValue(val, length);
      if (!net) continue;
      const expires = typeof e?.expires === 'number' ? e.expires : null;
      const counter = e?.counter as { packets?: unknown; bytes?: unknown } | undefined;
      const dropped = typeof counter?.packets === 'number' && typeof counter.bytes === 'number' ? { packets: counter.packets, bytes: counter.bytes } : null;
      out.push({ net, expiresAt: expires === null ? null : now + expires * 1000, dropped });
    }
  }
  return out;
}

function parseElementValue(val: unknown, length: number | null): Network | null {
  if (typeof val === 'string') return parseNetwork(length === null ? val : `${val}/${length}`);
  const prefix = (val as { prefix?: { addr?: unknown; len?: unknown } } | null)?.prefix;
  if (prefix && typeof prefix.addr === 'string' && typeof prefix.len === 'number') {
    return parseNetwork(`${prefix.addr}/${prefix.len}`);
  }
  return null;
}

/**
 * How often the kernel walks a hash set to free its expired elements. By
 * default it does so every second, and at 1,000,000 elements each walk holds
 * a CPU for 70–80 ms (measured: every process on that CPU stalls that long,
 * every 1.1 s). Expired elements never match in between; they only take
 * their memory, and their place in `size`, up to 30 s longer.
 */
const GC_INTERVAL_S = 30;

/** The nftables backend: table `inet <table>`, hash sets v4/v6 with timeouts and counters, interval sets for other networks, one chain. */
export class NftablesBackend extends QueuedBackend implements Backend {
  readonly kind = 'nftables' as const;
  readonly expiresInKernel = true;
  /** Listing a hash set takes 1 s at 100,000 elements and grows faster than the set (HARDENING §6). */
  readonly readLimit = 100_000;

  /** Small changes go through one long-lived nft; none when the runner cannot start one. */
  private readonly session: NftSession | null;

  constructor(private readonly run: Runner, private readonly options: NftOptions) {
    super();
    const start = run.start;
    // HOME names no directory: nft's interactive mode would write its history file there on exit.
    this.session = start ? new NftSession(() => start('nft', ['-j', '-i'], { HOME: '/dev/null' })) : null;
  }

  close(): void {
    this.session?.close();
  }

  async probe(): Promise<void> {
    let result;
    try {
      result = await this.run('nft', LIST_STRUCTURE);
    } catch (err) {
      const why = err instanceof CommandError && err.notFound ? 'nft is not installed' : (err as Error).message;
      throw new RatedError('FIREWALL_UNUSABLE', `nftables: ${why}`);
    }
    if (result.exitCode !== 0) {
      const why = firstLine(result.stderr);
      throw new RatedError('FIREWALL_UNUSABLE', `nftables: ${why || `nft exited with ${result.exitCode}`}${/permitted/i.test(why) ? ' (needs root or CAP_NET_ADMIN)' : ''}`);
    }
  }

  async ensure(): Promise<void> {
    const current = await this.readTable();
    const recreate = current !== null && !this.chainMatches(current);
    if (current !== null && olderLayout(current)) {
      // Every element of the older interval sets moves with its remaining time.
      const now = Date.now();
      const carry: Carried[] = [];
      for (const set of ['v4', 'v6'] as const) {
        for (const e of await this.listSet(set, false)) {
          if (e.expiresAt !== null && e.expiresAt > now) carry.push({ net: e.net, timeoutMs: e.expiresAt - now });
        }
      }
      await this.nft(renderStructure(this.options, recreate, carry), 'moving our sets to the hash-set layout');
      this.moved = carry.length;
      return;
    }
    await this.nft(renderStructure(this.options, recreate), 'creating our table');
  }

  /** Elements moved from the older layout by the last `ensure`, for the start-up log. */
  moved: number | null = null;

  async check(): Promise<StructureCheck> {
    const current = await this.readTable();
    if (current === null) return { intact: false, droppedPackets: null };
    const dropped = countDrops(current);
    return { intact: this.structureMatches(current), droppedPackets: dropped.ipv4.packets + dropped.ipv6.packets, dropped };
  }

  protected async apply(ops: Op[]): Promise<CommitResult> {
    const apply = async (batch: readonly Op[]): Promise<string | null> => {
      const result = await this.change(JSON.stringify(renderOps(this.options, batch)));
      return result.exitCode === 0 ? null : explain(firstLine(result.stderr)) || `nft exited with ${result.exitCode}`;
    };
    return applyBisecting(ops, async (batch) => {
      const error = await apply(batch);
      const op = batch[0];
      if (error === null || batch.length !== 1 || op === undefined || !ABSENT.test(error)) return error;
      // The element is already gone (expired in the kernel): the delete is
      // done, and a renewal becomes a plain add.
      if (op.kind === 'delete') return null;
      return op.replace ? apply([{ ...op, replace: false }]) : error;
    });
  }

  /** Applies one document of changes: a small one through the session, a large one (or any, without a session) in a process. */
  private async change(doc: string): Promise<CommandResult> {
    if (this.session && !this.session.disabled && doc.length <= SESSION_MAX_BYTES) {
      try {
        return await this.session.run(doc);
      } catch (err) {
        if (!(err instanceof SessionUnavailable)) throw err;
      }
    }
    return this.run('nft', ['-j', '-f', '-'], doc);
  }

  async list(): Promise<KernelEntry[]> {
    const out: KernelEntry[] = [];
    for (const set of SETS) out.push(...await this.listSet(set));
    return out;
  }

  /** Reads one set; `hashV6` false reads an older interval set v6, whose elements carry their own length. */
  private async listSet(set: string, hashV6 = true): Promise<KernelEntry[]> {
    const now = Date.now();
    const result = await this.run('nft', ['-j', 'list', 'set', 'inet', this.options.table, set]);
    if (result.exitCode !== 0) {
      if (/No such file or directory/.test(result.stderr)) return [];
      throw new RatedError('FIREWALL_FAILED', `nftables: cannot list set ${set}: ${firstLine(result.stderr)}`);
    }
    return parseSetListing(result.stdout, now, hashV6 ? this.options.ipv6Prefix : null);
  }

  /**
   * Empties our sets with one `flush set` each, in one transaction: constant
   * cost, where listing the elements first would take as long as the sets
   * are large (minutes at 1,000,000). So the count is not known here (null).
   */
  async flush(): Promise<number | null> {
    if (await this.readTable() === null) return 0;
    const table = { family: 'inet', table: this.options.table };
    await this.nft({ nftables: SETS.map((name) => ({ flush: { set: { ...table, name } } })) }, 'flushing our sets');
    return null;
  }

  private async nft(doc: Json, what: string): Promise<void> {
    const result = await this.run('nft', ['-j', '-f', '-'], JSON.stringify(doc));
    if (result.exitCode !== 0) {
      throw new RatedError('FIREWALL_FAILED', `nftables: ${what} failed: ${firstLine(result.stderr) || `exit ${result.exitCode}`}`);
    }
  }

  private async readTable(): Promise<Json[] | null> {
    const result = await this.run('nft', LIST_STRUCTURE);
    if (result.exitCode !== 0) {
      throw new RatedError('FIREWALL_FAILED', `nftables: cannot read table ${this.options.table}: ${firstLine(result.stderr)}`);
    }
    const items = (JSON.parse(result.stdout) as { nftables?: Json[] }).nftables ?? [];
    const ours = items.filter((item) => {
      const [kind, body] = Object.entries(item)[0] ?? [];
      if (body === undefined) return false;
      const o = body as Json;
      return kind === 'table' ? o.name === this.options.table : o.table === this.options.table && o.family === 'inet';
    });
    return ours.some((item) => 'table' in item) ? ours : null;
  }

  private chainMatches(items: Json[]): boolean {
    const chain = items.map((i) => i.chain as Json | undefined).find((c) => c?.name === CHAIN);
    return chain === undefined || (chain.hook === this.options.hook && chain.prio === this.options.priority);
  }

  private structureMatches(items: Json[]): boolean {
    const sets = new Set(items.map((i) => (i.set as Json | undefined)?.name).filter(Boolean));
    const chain = items.map((i) => i.chain as Json | undefined).find((c) => c?.name === CHAIN);
    const rules = items.filter((i) => (i.rule as Json | undefined)?.chain === CHAIN).length;
    return SETS.every((s) => sets.has(s)) && !olderLayout(items) && chain !== undefined
      && chain.hook === this.options.hook && chain.prio === this.options.priority && rules === SETS.length;
  }
}

/** True when sets v4 or v6 are interval sets: the layout before hash sets. */
function olderLayout(items: Json[]): boolean {
  return items.some((i) => {
    const set = i.set as { name?: string; flags?: unknown } | undefined;
    return (set?.name === 'v4' || set?.name === 'v6') && Array.isArray(set.flags) && set.flags.includes('interval');
  });
}

/** The totals of our rules' counters, per family: what every block together dropped. */
function countDrops(items: Json[]): DroppedTotals {
  const totals = { ipv4: { packets: 0, bytes: 0 }, ipv6: { packets: 0, bytes: 0 } };
  for (const item of items) {
    const rule = item.rule as { chain?: string; expr?: Json[] } | undefined;
    if (rule?.chain !== CHAIN) continue;
    const t = JSON.stringify(rule.expr ?? []).includes('"protocol":"ip6"') ? totals.ipv6 : totals.ipv4;
    for (const e of rule.expr ?? []) {
      const counter = e.counter as { packets?: number; bytes?: number } | undefined;
      t.packets += counter?.packets ?? 0;
      t.bytes += counter?.bytes ?? 0;
    }
  }
  return totals;
}

/** nft reports a full set as ENFILE, which reads like a process limit: say what it means. */
function explain(error: string): string {
  return /Too many open files in system/.test(error) ? `${error} (our set is full: it was given a size limit)` : error;
}

function firstLine(text: string): string {
  return (text.split('\n').find((l) => l.trim() !== '') ?? '').trim();
}
