import { mkdirSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { neverAClient, type Network } from '../address.js';
import { tooWide, WIDEST, type Block } from '../block.js';
import { formatSpan, MAX_DURATION_MS } from '../duration.js';
import { describe } from '../errors.js';
import type { Logger } from '../log.js';
import type { Journal, OffenceRecord } from './journal.js';
import { StateLock } from './lock.js';

/** Where restored blocks go and saved ones come from (the Blocker). */
export interface BlockLedger {
  adopt(block: Block): void;
  list(): Block[];
}

/** The repeat-offence history kept with the blocks (the Limiter). */
export interface OffenceBook {
  exportOffences(): Array<[string, OffenceRecord]>;
  importOffences(entries: Iterable<readonly [string, OffenceRecord]>): void;
}

export interface KeeperOptions {
  readonly journal: Journal;
  readonly blocks: BlockLedger;
  readonly offences: OffenceBook;
  /** Allow-listed now: such entries are dropped on restore. */
  readonly isAllowed: (net: Network) => boolean;
  /** Removes an expired entry's kernel rule when the kernel does not expire it by itself (iptables). */
  readonly dropExpired?: (net: Network) => void;
  /** The longest block a rule can make (escalation included); longer rule blocks are no journal's doing. */
  readonly longestRuleBlockMs: number;
  readonly now: () => number;
  readonly log: Logger;
  /** Called for each journal error, for the metrics. */
  readonly onError?: () => void;
}

/** What a restore found. */
export interface RestoreSummary {
  readonly blocks: number;
  readonly expired: number;
  readonly refused: number;
  readonly invalid: number;
}

/**
 * Keeps the journal in step with the blocks: restores it at start (SPEC §7)
 * and writes it after changes, at most as often as a write's cost allows.
 * A failing disk never stops protection: blocks stay in memory and in the
 * kernel, the failure is said once and retried.
 */
export class JournalKeeper {
  private timer: NodeJS.Timeout | null = null;
  private lastSaveMs = 0;
  private failing = false;
  private held: StateLock | null = null;
  /** Nothing is written before the journal was read: a start that failed early must not replace it with nothing. */
  private restored = false;
  /** False when the journal found at restore was unusable and left in place: it is then never overwritten. */
  usable = true;

  constructor(private readonly o: KeeperOptions) {}

  /** Creates the state directory and takes its lock, so that one daemon at a time writes there. */
  lock(): void {
    mkdirSync(this.o.journal.dir, { recursive: true, mode: 0o750 });
    this.held = new StateLock(this.o.journal.dir);
    this.held.acquire();
  }

  /** Writes the journal a last time and lets go of the lock. */
  close(): void {
    this.saveNow();
    this.held?.release();
    this.held = null;
  }

  get path(): string {
    return this.o.journal.path;
  }

  /**
   * Adopts the journal's unexpired blocks and offence history; entries now
   * covered by the allow list are dropped, entries no input could have made
   * are skipped and reported.
   */
  restore(moveAside = true): RestoreSummary {
    const { log } = this.o;
    const loaded = this.o.journal.load(moveAside);
    this.restored = true;
    this.usable = loaded.error === null || loaded.movedAside !== null;
    if (loaded.movedAside) {
      this.o.onError?.();
      log.error({ file: loaded.movedAside, err: loaded.error }, 'journal unreadable; moved it aside and starting from the kernel state');
    }
    const now = this.o.now();
    let adopted = 0;
    let expired = 0;
    let refused = 0;
    const invalid: string[] = [...(loaded.rejected ?? [])];
    for (const block of loaded.blocks) {
      const problem = this.problem(block, now);
      if (problem !== null) invalid.push(`${block.net.text}: ${problem}`);
      else if (block.expires !== null && block.expires <= now) {
        expired++;
        this.o.dropExpired?.(block.net);
      } else if (this.o.isAllowed(block.net)) refused++;
      else {
        this.o.blocks.adopt(block);
        adopted++;
      }
    }
    if (invalid.length > 0) {
      this.o.onError?.();
      log.warn({ skipped: invalid.length, entries: invalid.slice(0, 5) }, 'journal entries that no input could have made were skipped; the rest is kept');
    }
    this.o.offences.importOffences(loaded.offences);
    return { blocks: adopted, expired, refused, invalid: invalid.length };
  }

  /**
   * Why a journal entry could not have been made by any input (the journal is
   * a file someone else may have written), or null when it could.
   */
  private problem(block: Block, now: number): string | null {
    const net = block.net;
    if (tooWide(net)) return `wider than /${WIDEST[net.family]}`;
    const special = neverAClient(net);
    if (special !== null) return `${special}, never a client`;
    if (block.expires === null) return null;
    if (!Number.isSafeInteger(block.expires)) return 'an expiry that is no time';
    // Rule blocks last at most as long as escalation lets them; any block at most as long as a duration can be.
    const longest = block.source === 'rule' || block.source === 'reconciled' ? this.o.longestRuleBlockMs : MAX_DURATION_MS;
    if (block.expires - now > longest + 60_000) return `${formatSpan(block.expires - now)} left, longer than any block (${formatSpan(longest)})`;
    return null;
  }

  /** Asks for a write soon. */
  schedule(): void {
    if (this.timer) return;
    // A write costs O(blocks): during a ban storm, spend at most a twentieth of the time on it.
    // What a crash loses meanwhile is still in the kernel, which the next start adopts.
    this.later(Math.max(200, this.lastSaveMs * 20));
  }

  /** Writes the journal now; on failure keeps running on memory and the kernel, says so once and retries. */
  saveNow(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    const started = performance.now();
    try {
      this.write();
      this.lastSaveMs = performance.now() - started;
      if (this.failing) this.o.log.info({ file: this.path }, 'journal written again');
      this.failing = false;
    } catch (err) {
      this.o.onError?.();
      if (!this.failing) {
        this.o.log.error({ file: this.path, err: describe(err) }, 'cannot write the journal; blocks stay in memory and in the kernel');
      }
      this.failing = true;
      // Retry later: the next change, or this timer.
      this.later(5000);
    }
  }

  /** Writes the journal now; throws the file system's error. */
  write(): void {
    if (!this.restored) return;
    this.o.journal.save({ blocks: this.o.blocks.list(), offences: this.o.offences.exportOffences() });
  }

  private later(ms: number): void {
    this.timer = setTimeout(() => {
      this.timer = null;
      this.saveNow();
    }, ms);
    this.timer.unref();
  }
}
