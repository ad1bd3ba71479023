import { clientKey, contains, neverAClient, type Network } from '../address.js';
import { parseBlockDuration, parseBlockTarget, viewBlock, type BatchResult, type Block, type BlockView, type ManualBlock } from '../block.js';
import { RatedError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Verdict } from '../limit/limiter.js';
import type { BlockOutcome, BlockRequest, Blocker } from './blocker.js';

/** Tells other nodes of a decision (Redis block sharing), when there are any. */
export interface DecisionSharing {
  published(block: Block | undefined): void;
  unblocked(net: Network): void;
  flushed(): void;
}

/** An address as rated writes it, or as given when it is not one. */
function canonical(ip: string): string {
  try {
    return parseBlockTarget(ip).text;
  } catch {
    return ip;
  }
}

/** The reason a manual block was refused, for counting. */
function refusalOf(err: RatedError): string {
  if (err.code === 'USAGE') return /--for/.test(err.message) ? 'bad duration' : 'invalid';
  if (/allow-listed \(allowSelf /.test(err.message)) return 'own address';
  if (/allow-listed/.test(err.message)) return 'allow-listed';
  return 'never a client';
}

export interface OperatorOptions {
  readonly blocker: Blocker;
  /** Allow-listed now (the daemon reads this host's addresses again first). */
  readonly isAllowed: (net: Network) => boolean;
  /** Which allow entry holds a network (`allow 10.0.0.0/8`, `allowSelf …`), for saying why a block is refused. */
  readonly whyAllowed?: (net: Network) => string | null;
  readonly ipv6Prefix: number;
  /** A manual block's duration without `--for`. */
  readonly defaultBlockMs: number;
  /** Forgets a client's counters and offence history (the limiter). */
  readonly forget: (net: Network) => void;
  /** Block sharing, when configured; read at each decision, since it starts after the blocker. */
  readonly sharing?: () => DecisionSharing | null;
  /** Reads this host's addresses again unless the last read is younger than `maxAgeMs`; returns those new (allowSelf). */
  readonly refreshSelf?: (maxAgeMs: number) => readonly Network[];
  readonly log: Logger;
}

/**
 * The one owner of block, unblock and flush decisions, whoever asks: a rule's
 * verdict, an operator through the control API, or the CLI while the daemon
 * is down. Each decision reaches the kernel before the answer is given.
 */
export class Operator {
  constructor(private readonly o: OperatorOptions) {}

  private get sharing(): DecisionSharing | null {
    return this.o.sharing?.() ?? null;
  }

  /** Enforces a rule's verdict; a refused one (allow list, never a client) is returned, not thrown. */
  convict(v: Verdict): Error | null {
    try {
      const outcome = this.o.blocker.block({
        net: v.client, durationMs: v.blockMs, source: 'rule', rule: v.rule,
        reason: v.reason, hits: v.hits, windowMs: v.windowMs,
      });
      if (outcome !== 'unchanged') this.sharing?.published(this.o.blocker.get(v.client));
      return null;
    } catch (err) {
      return err as Error;
    }
  }

  /** A manual block (`rated block`, POST /blocks). */
  async block(input: ManualBlock): Promise<{ block: BlockView; outcome: BlockOutcome }> {
    const req = this.manual(input, 'manual');
    const outcome = this.o.blocker.block(req);
    if (outcome !== 'unchanged') this.sharing?.published(this.o.blocker.get(req.net));
    // This block in the kernel, not every block a storm keeps deciding.
    await this.o.blocker.committed();
    const block = this.o.blocker.get(req.net);
    if (!block) throw new RatedError('FIREWALL_FAILED', `${req.net.text} could not be blocked`);
    return { block: viewBlock(block), outcome };
  }

  /**
   * Many manual blocks at once (`rated import`, `rated migrate`, POST
   * /blocks/batch), each judged like `rated block`; one wait for the kernel
   * at the end. Refusals are counted by reason with a few examples, not
   * thrown. With `dryRun` nothing changes and the counts say what would.
   */
  async blockMany(inputs: readonly ManualBlock[], source: 'manual' | 'migrated', dryRun = false): Promise<BatchResult> {
    const result: BatchResult = { added: 0, extended: 0, unchanged: 0, refused: {}, examples: [], refusedIps: [] };
    for (const input of inputs) {
      let outcome: BlockOutcome;
      try {
        const req = this.manual(input, source);
        if (dryRun) {
          const special = neverAClient(req.net);
          if (special !== null) throw new RatedError('REFUSED', `${req.net.text} is ${special}, never a remote client, and is never blocked`);
          const existing = this.o.blocker.get(req.net);
          outcome = !existing ? 'added' : existing.expires === null || existing.expires >= Date.now() + req.durationMs ? 'unchanged' : 'extended';
        } else {
          outcome = this.o.blocker.block(req);
          if (outcome !== 'unchanged') this.sharing?.published(this.o.blocker.get(req.net));
        }
      } catch (err) {
        if (!(err instanceof RatedError) || (err.code !== 'REFUSED' && err.code !== 'USAGE')) throw err;
        const why = refusalOf(err);
        result.refused[why] = (result.refused[why] ?? 0) + 1;
        if (result.examples.length < 5) result.examples.push(err.message);
        result.refusedIps.push(canonical(input.ip));
        continue;
      }
      result[outcome]++;
    }
    if (!dryRun) await this.o.blocker.committed();
    if (!dryRun && this.o.blocker.needsRepair) {
      throw new RatedError('FIREWALL_FAILED', `the firewall refused part of the batch: ${this.o.blocker.lastErrors.at(-1)?.error ?? 'unknown error'}; it is retried`);
    }
    return result;
  }

  /** Judges a manual block: its target, the allow list, its duration and reason. */
  private manual(input: ManualBlock, source: 'manual' | 'migrated'): BlockRequest {
    const net = parseBlockTarget(input.ip);
    if (this.o.isAllowed(net)) {
      throw new RatedError('REFUSED', `${net.text} is allow-listed (${this.o.whyAllowed?.(net) ?? 'allow, allowSelf'}) and is never blocked`);
    }
    const durationMs = input.for === undefined ? this.o.defaultBlockMs : parseBlockDuration(input.for);
    const reason = input.reason === undefined ? source : input.reason.slice(0, 200);
    return { net, durationMs, source, rule: null, reason, hits: null };
  }

  /**
   * Lifts the block of `ip` and forgets the client's counters. An IPv6
   * address stands for its client's network, which is what rules block.
   * Returns the lifted block, or null when there was none.
   */
  async unblock(ip: string): Promise<BlockView | null> {
    const net = parseBlockTarget(ip);
    const blocker = this.o.blocker;
    let lifted = blocker.unblock(net);
    const client = net.prefix === (net.family === 4 ? 32 : 128) ? clientKey(net, this.o.ipv6Prefix) : net;
    if (!lifted && client !== net) lifted = blocker.unblock(client);
    this.o.forget(net);
    const sharing = this.sharing;
    if (sharing) {
      // Lift it on every node, also where it is held as the client's IPv6 network.
      const nets = new Map([[net.text, net]]);
      const held = lifted?.net ?? client;
      nets.set(held.text, held);
      for (const n of nets.values()) sharing.unblocked(n);
    }
    await blocker.committed();
    return lifted ? viewBlock(lifted) : null;
  }

  /** Lifts every block; returns how many there were. Blocks are forgotten only once the kernel let them go. */
  async flush(): Promise<number> {
    const n = await this.o.blocker.flush();
    this.sharing?.flushed();
    return n;
  }

  /**
   * Reads this host's addresses again unless the last read is younger than
   * `maxAgeMs`; blocks that hold a new one are lifted once the caller (maybe
   * a block decision) is done.
   */
  followOwn(maxAgeMs: number): void {
    const added = this.o.refreshSelf?.(maxAgeMs) ?? [];
    if (added.length > 0) queueMicrotask(() => this.liftOwn(added));
  }

  /** Lifts every block that holds one of these addresses of this host, just found on an interface. */
  private liftOwn(added: readonly Network[]): void {
    this.o.log.info({ addresses: added.map((n) => n.text) }, 'new addresses of this host; they are never blocked (allowSelf)');
    for (const b of this.o.blocker.list()) {
      if (!added.some((a) => contains(b.net, a))) continue;
      this.o.log.warn({ ip: b.net.text }, "lifting a block that holds one of this host's own addresses");
      this.o.blocker.unblock(b.net);
      this.sharing?.unblocked(b.net);
    }
  }
}
