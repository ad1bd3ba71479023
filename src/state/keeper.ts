import { mkdirSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { neverAClient, type Network } from '../address.js';
import { tooWide, WIDEST, type Block } from '../block.js';
import { formatSpan, MAX_DURATION_MS } from '../duration.js';
import { describe } from '../errors.js';
import type { Logger } from '../log.js';
import {
  blockLine, checkStateDir, liftLine, offenceLine, type Journal, type JournalLoad, type OffenceRecord,
} from './journal.js';
import { StateLock } from './lock.js';

/** Where restored blocks go and saved ones come from (the Blocker). */
export interface BlockLedger {
  adopt(block: Block): void;
  /** Every block, in no particular order (a snapshot needs none: sorting 1,000,000 would hold the event loop). */
  all(): Block[];
  readonly size: number;
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

/** Log lines after which a snapshot is due, at least; more when there are more blocks (each snapshot then costs more). */
const LOG_LINES_PER_SNAPSHOT = 20_000;
/**
 * Appends are made durable (fdatasync) at most this often: at once after a
 * quiet second, once a second through a storm. Only a power loss or a kernel
 * crash can lose what is written and not yet synced, and that loses the
 * kernel's blocks too.
 */
const SYNC_EVERY_MS = 1000;

/**
 * Keeps the journal in step with the blocks: restores it at start (SPEC §7),
 * appends each change as it is made (one write for the changes of one turn
 * of the event loop), and writes a snapshot in the background once the log
 * holds as many lines as there are blocks, so a change costs the same with
 * 10 blocks or 1,000,000. A failing disk never stops protection: blocks stay
 * in memory and in the kernel, the failure is said once and a snapshot
 * retried.
 */
export class JournalKeeper {
  private timer: NodeJS.Timeout | null = null;
  private failing = false;
  /** Change lines not yet written. */
  private pending: string[] = [];
  private flushing: Promise<void> | null = null;
  private flushQueued = false;
  /** Lines in the logs since the last snapshot began. */
  private logged = 0;
  /** Restored blocks and offences are already in the journal: not written again. */
  private adopting = false;
  private syncTimer: NodeJS.Timeout | null = null;
  private lastSync = Number.NEGATIVE_INFINITY;
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

  /**
   * Writes what is pending, after any write in flight, and lets go of the
   * lock; a stop never waits for a snapshot (the logs are read at start),
   * unless writing has been failing, when one last snapshot is tried.
   */
  async close(): Promise<void> {
    this.cancel();
    await this.saving;
    await this.flush();
    if (this.syncTimer) clearTimeout(this.syncTimer);
    this.syncTimer = null;
    await this.o.journal.sync().catch(() => undefined);
    await this.o.journal.closeLog();
    if (this.failing) this.saveNow();
    this.cancel();
    this.held?.release();
    this.held = null;
  }

  /** A block made or changed. */
  put(block: Block): void {
    this.note(blockLine(block));
  }

  /** A block lifted, for any cause. */
  lift(net: Network): void {
    this.note(liftLine(net));
  }

  /** A client's offence history changed, or forgotten (null). */
  offence(key: string, o: OffenceRecord | null): void {
    this.note(offenceLine(key, o));
  }

  private note(line: string): void {
    // While writing fails, the snapshot being retried will hold the change.
    if (this.adopting || !this.usable || this.failing) return;
    this.pending.push(`${line}\n`);
    // Changes made while the journal is being read are written once it has been.
    if (this.restored && !this.flushQueued) {
      this.flushQueued = true;
      setImmediate(() => {
        this.flushQueued = false;
        void this.flush();
      });
    }
  }

  /** Writes the pending lines, one write at a time; resolves when none is left. */
  private flush(): Promise<void> {
    if (this.flushing) return this.flushing;
    const run = (async () => {
      // Started in a later microtask, so `flushing` is set before it can be cleared.
      await Promise.resolve();
      try {
        while (this.pending.length > 0 && !this.failing) {
          const lines = this.pending;
          this.pending = [];
          this.logged += lines.length;
          await this.o.journal.append(lines.join(''));
          this.syncSoon();
        }
      } catch (err) {
        this.pending = [];
        await this.o.journal.closeLog();
        this.failed(err);
      } finally {
        this.flushing = null;
      }
      if (!this.failing && this.logged > Math.max(LOG_LINES_PER_SNAPSHOT, this.o.blocks.size)) this.schedule();
    })();
    this.flushing = run;
    return run;
  }

  /** Syncs what was appended: now when the last sync is a second old, else when it will be. */
  private syncSoon(): void {
    if (this.syncTimer) return;
    const wait = Math.max(0, this.lastSync + SYNC_EVERY_MS - performance.now());
    this.syncTimer = setTimeout(() => {
      this.syncTimer = null;
      this.lastSync = performance.now();
      this.o.journal.sync().catch((err: unknown) => this.failed(err));
    }, wait);
    this.syncTimer.unref();
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
      this.adopting = true;
      try {
        this.o.blocks.adopt(block);
      } finally {
        this.adopting = false;
      }
      t.adopted++;
    }
  }

  private finish(loaded: JournalLoad, t: Tally): RestoreSummary {
    if (t.invalid.length > 0) {
      this.o.onError?.();
      this.o.log.warn({ skipped: t.invalid.length, entries: t.invalid.slice(0, 5) }, 'journal entries that no input could have made were skipped; the rest is kept');
    }
    this.adopting = true;
    try {
      this.o.offences.importOffences(loaded.offences);
    } finally {
      this.adopting = false;
    }
    // From now on a write holds every block: before, it would have held only those read so far.
    this.restored = true;
    this.logged = loaded.logged ?? 0;
    // Decisions made while the journal was read, and a snapshot when the logs have grown long.
    void this.flush();
    // A journal moved aside is replaced by a good one at once.
    if (loaded.movedAside !== null) this.schedule();
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

  /** Asks for a snapshot soon; it is written in the background (`saveAsync`). */
  schedule(): void {
    if (this.timer) return;
    this.later(200);
  }

  /** Writes a snapshot now, in this turn of the event loop (the CLI); on failure says so once and retries. */
  saveNow(): void {
    this.cancel();
    try {
      this.write();
      this.saved();
    } catch (err) {
      this.failed(err);
    }
  }

  /** Writes a snapshot now; throws the file system's error. */
  write(): void {
    if (!this.restored) return;
    this.logged = 0;
    this.o.journal.save({ blocks: this.o.blocks.all(), offences: this.o.offences.exportOffences() });
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
    this.logged = 0;
    this.saving = this.o.journal.saveAsync({ blocks: this.o.blocks.all(), offences: this.o.offences.exportOffences() })
      .then(() => this.saved(), (err: unknown) => this.failed(err))
      .finally(() => {
        this.saving = null;
        if (this.again) {
          this.again = false;
          this.schedule();
        }
      });
  }

  private saved(): void {
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
