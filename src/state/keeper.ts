import { mkdirSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { neverAClient, type Network } from '../address.js';
import { tooWide, WIDEST, type Block } from '../block.js';
import { formatSpan, MAX_DURATION_MS } from '../duration.js';
import { describe } from '../errors.js';
import type { Logger } from '../log.js';
import { checkStateDir, type Journal, type JournalLoad, type OffenceRecord } from './journal.js';
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

interface Tally {
  readonly now: number;
  adopted: number;
  expired: number;
  refused: number;
  readonly invalid: string[];
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
  private saving: Promise<void> | null = null;
  private again = false;
  /** Nothing is written before the journal was read: a start that failed early must not replace it with nothing. */
  private restored = false;
  /** False when the journal found at restore was unusable and left in place: it is then never overwritten. */
  usable = true;

  constructor(private readonly o: KeeperOptions) {}

  /** Creates the state directory and takes its lock, so that one daemon at a time writes there. */
  lock(): void {
    mkdirSync(this.o.journal.dir, { recursive: true, mode: 0o750 });
    // A state directory that is a link or writable by others stops the start here (STATE_FAILED).
    checkStateDir(this.o.journal.dir);
    this.held = new StateLock(this.o.journal.dir);
    this.held.acquire();
  }

  /** Writes the journal a last time, after any write in flight, and lets go of the lock. */
  async close(): Promise<void> {
    await this.saving;
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
    const loaded = this.o.journal.load(moveAside);
    const tally = this.begin(loaded);
    for (const block of loaded.blocks) this.take(block, tally);
    return this.finish(loaded, tally);
  }

  /**
   * `restore` without holding the event loop: the daemon's receivers answer
   * while 1,000,000 blocks are read and adopted, a slice at a time.
   */
  async restoreAsync(): Promise<RestoreSummary> {
    const loaded = await this.o.journal.loadAsync();
    const tally = this.begin(loaded);
    let n = 0;
    for (const block of loaded.blocks) {
      this.take(block, tally);
      if (++n % 20_000 === 0) await new Promise<void>((resolve) => setImmediate(resolve));
    }
    return this.finish(loaded, tally);
  }

  private begin(loaded: JournalLoad): Tally {
    this.usable = loaded.error === null || loaded.movedAside !== null;
    if (loaded.movedAside) {
      this.o.onError?.();
      this.o.log.error({ file: loaded.movedAside, err: loaded.error }, 'journal unreadable; moved it aside and starting from the kernel state');
    }
    return { now: this.o.now(), adopted: 0, expired: 0, refused: 0, invalid: [...(loaded.rejected ?? [])] };
  }

  private take(block: Block, t: Tally): void {
    const problem = this.problem(block, t.now);
    if (problem !== null) t.invalid.push(`${block.net.text}: ${problem}`);
    else if (block.expires !== null && block.expires <= t.now) {
      t.expired++;
      this.o.dropExpired?.(block.net);
    } else if (this.o.isAllowed(block.net)) t.refused++;
    else {
      this.o.blocks.adopt(block);
      t.adopted++;
    }
  }

  private finish(loaded: JournalLoad, t: Tally): RestoreSummary {
    if (t.invalid.length > 0) {
      this.o.onError?.();
      this.o.log.warn({ skipped: t.invalid.length, entries: t.invalid.slice(0, 5) }, 'journal entries that no input could have made were skipped; the rest is kept');
    }
    this.o.offences.importOffences(loaded.offences);
    // From now on a write holds every block: before, it would have held only those read so far.
    this.restored = true;
    return { blocks: t.adopted, expired: t.expired, refused: t.refused, invalid: t.invalid.length };
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

  /** Asks for a write soon; it is made in the background (`saveAsync`). */
  schedule(): void {
    if (this.timer) return;
    // A write costs O(blocks): during a ban storm, spend at most a twentieth of the time on it.
    // What a crash loses meanwhile is still in the kernel, which the next start adopts.
    this.later(Math.max(200, this.lastSaveMs * 20));
  }

  /** Writes the journal now, in this turn of the event loop (stop, the CLI); on failure says so once and retries. */
  saveNow(): void {
    this.cancel();
    const started = performance.now();
    try {
      this.write();
      this.saved(performance.now() - started);
    } catch (err) {
      this.failed(err);
    }
  }

  /** Writes the journal now; throws the file system's error. */
  write(): void {
    if (!this.restored) return;
    this.o.journal.save({ blocks: this.o.blocks.list(), offences: this.o.offences.exportOffences() });
  }

  /**
   * Writes the journal without holding the event loop; one write at a time,
   * and a change during one asks for another after it.
   */
  private saveInBackground(): void {
    if (this.saving) {
      this.again = true;
      return;
    }
    if (!this.restored) return;
    const started = performance.now();
    this.saving = this.o.journal.saveAsync({ blocks: this.o.blocks.list(), offences: this.o.offences.exportOffences() })
      .then(() => this.saved(performance.now() - started), (err: unknown) => this.failed(err))
      .finally(() => {
        this.saving = null;
        if (this.again) {
          this.again = false;
          this.schedule();
        }
      });
  }

  private saved(ms: number): void {
    this.lastSaveMs = ms;
    if (this.failing) this.o.log.info({ file: this.path }, 'journal written again');
    this.failing = false;
  }

  private failed(err: unknown): void {
    this.o.onError?.();
    if (!this.failing) {
      this.o.log.error({ file: this.path, err: describe(err) }, 'cannot write the journal; blocks stay in memory and in the kernel');
    }
    this.failing = true;
    // Retry later: the next change, or this timer.
    this.cancel();
    this.later(5000);
  }

  private cancel(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private later(ms: number): void {
    this.timer = setTimeout(() => {
      this.timer = null;
      this.saveInBackground();
    }, ms);
    this.timer.unref();
  }
}
