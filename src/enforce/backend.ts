import type { Network } from '../address.js';
import type { DroppedTotals } from '../metrics.js';

export type BackendKind = 'nftables' | 'ipset' | 'iptables' | 'dry-run';

/** An element read back from the kernel. */
export interface KernelEntry {
  readonly net: Network;
  /** Wall-clock time the kernel lifts it, or null when it has no timeout. */
  readonly expiresAt: number | null;
  /** What it dropped, when the set counts per element. */
  readonly dropped?: { readonly packets: number; readonly bytes: number } | null;
}

/** What a commit did: how many queued changes reached the kernel and which were refused. */
export interface CommitResult {
  readonly applied: number;
  readonly failed: ReadonlyArray<{ readonly net: Network; readonly op: 'add' | 'delete'; readonly error: string }>;
}

/** The state of our own firewall structure. */
export interface StructureCheck {
  /** True when our table, sets and chain are all present as configured. */
  readonly intact: boolean;
  /** Packets dropped by our rules, when the backend counts them. */
  readonly droppedPackets: number | null;
  /** Packets and bytes dropped by our rules, per family, when the backend counts them. */
  readonly dropped?: DroppedTotals | null;
}

export type { DroppedTotals } from '../metrics.js';

/**
 * A firewall backend. `add` and `delete` only queue; `commit` applies the
 * queue in as few transactions as the tool allows. Every address it receives
 * was produced by the validator in address.ts.
 */
export interface Backend {
  readonly kind: BackendKind;
  /** True when the kernel lifts a block at its timeout by itself (sets with timeouts). */
  readonly expiresInKernel: boolean;
  /** The longest timeout the kernel accepts, when it has a limit; a longer block is renewed before it runs out. */
  readonly maxTimeoutMs?: number;
  /**
   * Above this many elements, reading them back (`list`) costs more than a
   * check or a request may spend (nft 1.0.6 takes 80–110 s for 1,000,000):
   * the blocker then trusts its own blocks and the results of its writes.
   */
  readonly readLimit: number;
  /** Above this many blocks every change grows slower (one rule per block): the blocker says so, once. */
  readonly advisedMax?: number;
  /** Throws a RatedError (FIREWALL_UNUSABLE) saying why this backend cannot work here. */
  probe(): Promise<void>;
  /** Creates our table, sets and chain when missing, moving an older layout; idempotent. */
  ensure(): Promise<void>;
  /** How many elements the last `ensure` moved from an older layout of ours, if it moved one. */
  readonly moved?: number | null;
  /** Reports whether our structure is still in place. */
  check(): Promise<StructureCheck>;
  /** Queues a block for `timeoutMs`; `replace` when the element may already be present (its timeout is then renewed). */
  add(net: Network, timeoutMs: number, replace: boolean): void;
  /** Queues the removal of a block; removing an absent element is not an error. */
  delete(net: Network): void;
  /** Number of queued changes. */
  pending(): number;
  /** Applies the queue; a refused element never takes the rest of the batch with it. */
  commit(): Promise<CommitResult>;
  /** Reads our elements back from the kernel. */
  list(): Promise<KernelEntry[]>;
  /**
   * Removes every element we manage, keeps the structure, at a cost that does
   * not grow with the number of elements; returns how many there were, or
   * null when that cannot be known as cheaply.
   */
  flush(): Promise<number | null>;
  /** Ends what the backend keeps running between changes (a long-lived nft); the next change starts it again. */
  close?(): void;
}

/** One queued change. */
export interface Op {
  readonly kind: 'add' | 'delete';
  readonly net: Network;
  readonly timeoutMs: number;
  readonly replace: boolean;
}

/** A queue of changes in which the last change to an element wins. */
export class OpQueue {
  private readonly ops = new Map<string, Op>();

  add(net: Network, timeoutMs: number, replace: boolean): void {
    const previous = this.ops.get(net.text);
    // An add after a queued delete may find the element still present.
    const mayExist = replace || previous?.kind === 'delete' || previous?.replace === true;
    this.ops.set(net.text, { kind: 'add', net, timeoutMs, replace: mayExist });
  }

  delete(net: Network): void {
    this.ops.set(net.text, { kind: 'delete', net, timeoutMs: 0, replace: false });
  }

  get size(): number {
    return this.ops.size;
  }

  /** Takes every queued change out of the queue. */
  drain(): Op[] {
    const out = [...this.ops.values()];
    this.ops.clear();
    return out;
  }
}

/**
 * What every backend shares: `add` and `delete` only queue (the last change
 * to an element wins), `commit` takes the whole queue and hands it to the
 * backend's `apply`.
 */
export abstract class QueuedBackend {
  private readonly queue = new OpQueue();

  add(net: Network, timeoutMs: number, replace: boolean): void {
    this.queue.add(net, timeoutMs, replace);
  }

  delete(net: Network): void {
    this.queue.delete(net);
  }

  pending(): number {
    return this.queue.size;
  }

  commit(): Promise<CommitResult> {
    return this.apply(this.queue.drain());
  }

  /** Applies the changes taken from the queue, in as few transactions as the tool allows. */
  protected abstract apply(ops: Op[]): Promise<CommitResult>;
}

/**
 * Applies `ops` with `apply`; when a batch is refused, splits it in halves
 * until the refused elements are isolated, so one bad element never costs the
 * others their place in the kernel.
 */
export async function applyBisecting(
  ops: readonly Op[],
  apply: (batch: readonly Op[]) => Promise<string | null>,
): Promise<CommitResult> {
  if (ops.length === 0) return { applied: 0, failed: [] };
  const error = await apply(ops);
  if (error === null) return { applied: ops.length, failed: [] };
  if (ops.length === 1) {
    const op = ops[0] as Op;
    return { applied: 0, failed: [{ net: op.net, op: op.kind, error }] };
  }
  const mid = Math.ceil(ops.length / 2);
  const left = await applyBisecting(ops.slice(0, mid), apply);
  const right = await applyBisecting(ops.slice(mid), apply);
  return { applied: left.applied + right.applied, failed: [...left.failed, ...right.failed] };
}

/** Kernel timeouts are whole seconds; round up so a block never ends early. */
export function timeoutSeconds(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000));
}
