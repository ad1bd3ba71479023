import { parseNetwork, type Network } from '../address.js';
import { RatedError } from '../errors.js';
import {
  applyBisecting, OpQueue, timeoutSeconds,
  type Backend, type CommitResult, type KernelEntry, type Op, type StructureCheck,
} from './backend.js';
import { CommandError, type Runner } from './run-command.js';

/** Where our nftables objects live. */
export interface NftOptions {
  readonly table: string;
  readonly hook: 'input' | 'forward' | 'prerouting';
  readonly priority: number;
}

export const CHAIN = 'block';
/** How nft reports a delete of an absent element (userspace check for interval sets, ENOENT from the kernel). */
const ABSENT = /element does not exist|No such file or directory/;
const SETS = { 4: 'v4', 6: 'v6' } as const;

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

function elementValue(net: Network): unknown {
  const full = net.family === 4 ? 32 : 128;
  if (net.prefix === full) return net.text;
  const slash = net.text.indexOf('/');
  return { prefix: { addr: net.text.slice(0, slash), len: net.prefix } };
}

function element(o: NftOptions, family: 4 | 6, elem: unknown[]): Json {
  return { element: { family: 'inet', table: o.table, name: SETS[family], elem } };
}

/** Renders our table, sets, chain and rules; applying it twice changes nothing. */
export function renderStructure(o: NftOptions, recreateChain: boolean): Json {
  const table = { family: 'inet', table: o.table };
  const chain = { ...table, name: CHAIN };
  const rule = (protocol: 'ip' | 'ip6', set: string): Json => ({
    add: { rule: { ...table, chain: CHAIN, expr: [
      { match: { op: '==', left: { payload: { protocol, field: 'saddr' } }, right: `@${set}` } },
      { counter: null },
      { drop: null },
    ] } },
  });
  const commands: Json[] = [
    { add: { table: { family: 'inet', name: o.table } } },
    { add: { set: { ...table, name: SETS[4], type: 'ipv4_addr', flags: ['interval', 'timeout'] } } },
    { add: { set: { ...table, name: SETS[6], type: 'ipv6_addr', flags: ['interval', 'timeout'] } } },
  ];
  if (recreateChain) commands.push({ add: { chain } }, { flush: { chain } }, { delete: { chain } });
  commands.push(
    { add: { chain: { ...chain, type: 'filter', hook: o.hook, prio: o.priority, policy: 'accept' } } },
    { flush: { chain } },
    rule('ip', SETS[4]),
    rule('ip6', SETS[6]),
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
export function renderOps(o: NftOptions, ops: readonly Op[]): Json {
  // One delete and one add command per set, deletes first: an add may
  // overlap an element deleted in the same batch (a /24 lifted, an address
  // inside it blocked), and nft parses one command of 100,000 elements in
  // half the time of 100,000 commands.
  const deletes: Record<4 | 6, unknown[]> = { 4: [], 6: [] };
  const adds: Record<4 | 6, unknown[]> = { 4: [], 6: [] };
  for (const op of ops) {
    const value = elementValue(op.net);
    if (op.kind === 'delete' || op.replace) deletes[op.net.family].push(value);
    if (op.kind === 'add') adds[op.net.family].push({ elem: { val: value, timeout: timeoutSeconds(op.timeoutMs) } });
  }
  const commands: Json[] = [];
  for (const family of [4, 6] as const) {
    if (deletes[family].length > 0) commands.push({ delete: element(o, family, deletes[family]) });
  }
  for (const family of [4, 6] as const) {
    if (adds[family].length > 0) commands.push({ add: element(o, family, adds[family]) });
  }
  return { nftables: commands };
}

/** Reads the elements of one set out of `nft -j list set` output. */
export function parseSetListing(json: string, now: number): KernelEntry[] {
  const doc = JSON.parse(json) as { nftables?: Json[] };
  const out: KernelEntry[] = [];
  for (const item of doc.nftables ?? []) {
    const set = item.set as { elem?: unknown[] } | undefined;
    for (const raw of set?.elem ?? []) {
      const e = (raw as Json).elem as Json | undefined;
      const val = e ? e.val : raw;
      const net = parseElementValue(val);
      if (!net) continue;
      const expires = typeof e?.expires === 'number' ? e.expires : null;
      out.push({ net, expiresAt: expires === null ? null : now + expires * 1000 });
    }
  }
  return out;
}

function parseElementValue(val: unknown): Network | null {
  if (typeof val === 'string') return parseNetwork(val);
  const prefix = (val as { prefix?: { addr?: unknown; len?: unknown } } | null)?.prefix;
  if (prefix && typeof prefix.addr === 'string' && typeof prefix.len === 'number') {
    return parseNetwork(`${prefix.addr}/${prefix.len}`);
  }
  return null;
}

/** The nftables backend: table `inet <table>`, interval sets with timeouts, one chain. */
export class NftablesBackend implements Backend {
  readonly kind = 'nftables' as const;
  readonly expiresInKernel = true;
  private readonly queue = new OpQueue();

  constructor(private readonly run: Runner, private readonly options: NftOptions) {}

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
    await this.nft(renderStructure(this.options, recreate), 'creating our table');
  }

  async check(): Promise<StructureCheck> {
    const current = await this.readTable();
    if (current === null) return { intact: false, droppedPackets: null };
    return { intact: this.structureMatches(current), droppedPackets: countDrops(current) };
  }

  add(net: Network, timeoutMs: number, replace: boolean): void {
    this.queue.add(net, timeoutMs, replace);
  }

  delete(net: Network): void {
    this.queue.delete(net);
  }

  pending(): number {
    return this.queue.size;
  }

  async commit(): Promise<CommitResult> {
    const ops = this.queue.drain();
    const apply = async (batch: readonly Op[]): Promise<string | null> => {
      const result = await this.run('nft', ['-j', '-f', '-'], JSON.stringify(renderOps(this.options, batch)));
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

  async list(): Promise<KernelEntry[]> {
    const out: KernelEntry[] = [];
    for (const set of Object.values(SETS)) {
      const now = Date.now();
      const result = await this.run('nft', ['-j', 'list', 'set', 'inet', this.options.table, set]);
      if (result.exitCode !== 0) {
        if (/No such file or directory/.test(result.stderr)) continue;
        throw new RatedError('FIREWALL_FAILED', `nftables: cannot list set ${set}: ${firstLine(result.stderr)}`);
      }
      out.push(...parseSetListing(result.stdout, now));
    }
    return out;
  }

  /**
   * Empties our sets with one `flush set` each, in one transaction: constant
   * cost, where listing the elements first would take as long as the sets
   * are large (minutes at 1,000,000). So the count is not known here (null).
   */
  async flush(): Promise<number | null> {
    if (await this.readTable() === null) return 0;
    const table = { family: 'inet', table: this.options.table };
    await this.nft({ nftables: Object.values(SETS).map((name) => ({ flush: { set: { ...table, name } } })) }, 'flushing our sets');
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
      const o = body as Json | undefined;
      return kind === 'table' ? o?.name === this.options.table : o?.table === this.options.table && o?.family === 'inet';
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
    return sets.has(SETS[4]) && sets.has(SETS[6]) && chain !== undefined
      && chain.hook === this.options.hook && chain.prio === this.options.priority && rules === 2;
  }
}

function countDrops(items: Json[]): number {
  let packets = 0;
  for (const item of items) {
    const rule = item.rule as { chain?: string; expr?: Json[] } | undefined;
    if (rule?.chain !== CHAIN) continue;
    for (const e of rule.expr ?? []) {
      const counter = e.counter as { packets?: number } | undefined;
      if (counter?.packets) packets += counter.packets;
    }
  }
  return packets;
}

/** nft reports a full set as ENFILE, which reads like a process limit: say what it means. */
function explain(error: string): string {
  return /Too many open files in system/.test(error) ? `${error} (our set is full: it was given a size limit)` : error;
}

function firstLine(text: string): string {
  return (text.split('\n').find((l) => l.trim() !== '') ?? '').trim();
}
