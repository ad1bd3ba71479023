import { watch, type FSWatcher } from 'node:fs';
import { open, stat, type FileHandle } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { describe } from '../errors.js';
import { RateLimitedLog, type Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { HitSink } from './hit.js';
import { LineIntake, LineParser, LineSplitter } from './line.js';

export interface FileReceiverOptions {
  /** Access logs to follow. */
  readonly paths: readonly string[];
  readonly sink: HitSink;
  readonly metrics: Metrics;
  readonly log: Logger;
  /** How often every file is checked even when no change is notified. @default 250 */
  readonly pollMs?: number;
  /** A file renamed away is read until it has been quiet this long. @default 5000 */
  readonly drainMs?: number;
}

/** What `status` shows of one followed file. */
export interface FileStatus {
  readonly path: string;
  /** `following` an open file, `waiting` for it to exist, `error` (see `error`). */
  readonly state: 'following' | 'waiting' | 'error';
  /** Bytes read of the current file. */
  readonly position: number | null;
  /** Rotated-away files still being read to their end. */
  readonly draining: number;
  readonly error: string | null;
}

const RECEIVER = 'files';
const CHUNK = 256 * 1024;
/** Most bytes read from one file per poll; the next poll follows at once, so other files get their turn. */
const MAX_PER_POLL = 8 * 1024 * 1024;
/** Bytes before the read position remembered to notice a copytruncate the file has grown back over. */
const FINGERPRINT = 64;
/** Rotated-away files kept open at most; the oldest is closed first. */
const MAX_DRAINING = 4;

/** One open file being read. */
interface Reader {
  readonly fh: FileHandle;
  readonly dev: number;
  readonly ino: number;
  position: number;
  readonly splitter: LineSplitter;
  /** The bytes just before `position`, to tell a rewritten file from a grown one. */
  fingerprint: Buffer | null;
  size: number;
  mtimeMs: number;
  /** Opened at the end of a file whose last line was incomplete: drop the rest of that line. */
  skipFirst: boolean;
  /** When the file last grew (performance clock), for draining. */
  grewAt: number;
}

/**
 * Follows nginx access logs like `tail -F` (SPEC §4 Files): from the end at
 * start; a file that does not exist yet is waited for and read from its
 * start; after a rename the old file is read until it has been quiet for
 * `drainMs` (nginx writes to it until it reopens its logs) while the new one
 * is read from its start; after a copytruncate (the size shrinks, or the
 * bytes before our position change) the file is read again from 0. Partial
 * last lines wait for their newline. fs.watch on the directory makes this
 * prompt; polling makes it certain.
 */
export class FileReceiver {
  private readonly followers: Follower[];
  private readonly pollMs: number;
  private timer: NodeJS.Timeout | null = null;

  constructor(options: FileReceiverOptions) {
    const intake = new LineIntake({
      receiver: RECEIVER,
      parser: new LineParser(),
      sink: options.sink,
      metrics: options.metrics,
      log: options.log,
    });
    const warn = new RateLimitedLog(options.log, 60_000);
    this.followers = options.paths.map((p) => new Follower(resolve(p), intake, options, warn));
    this.pollMs = options.pollMs ?? 250;
  }

  /** Opens every file that exists (at its end) and starts following; never throws for a missing file. */
  async start(): Promise<void> {
    await Promise.all(this.followers.map((f) => f.start()));
    this.timer = setInterval(() => {
      for (const f of this.followers) f.kick();
    }, this.pollMs);
    this.timer.unref();
  }

  /** The followed paths, for the start-up line. */
  get paths(): string[] {
    return this.followers.map((f) => f.path);
  }

  status(): FileStatus[] {
    return this.followers.map((f) => f.status());
  }

  /** Resolves once every file has been read up to its current end (tests, shutdown). */
  async settle(): Promise<void> {
    await Promise.all(this.followers.map((f) => f.pollNow()));
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await Promise.all(this.followers.map((f) => f.close()));
  }
}

class Follower {
  private current: Reader | null = null;
  private readonly draining: Reader[] = [];
  private watcher: FSWatcher | null = null;
  private polling: Promise<void> | null = null;
  private again = false;
  private closed = false;
  private state: FileStatus['state'] = 'waiting';
  private error: string | null = null;
  private readonly drainMs: number;
  private readonly name: string;

  constructor(
    readonly path: string,
    private readonly intake: LineIntake,
    private readonly options: FileReceiverOptions,
    private readonly warn: RateLimitedLog,
  ) {
    this.drainMs = options.drainMs ?? 5000;
    this.name = basename(path);
  }

  async start(): Promise<void> {
    try {
      this.current = await this.openReader(true);
      if (this.current) this.state = 'following';
    } catch (err) {
      this.failed(err, 'open');
    }
    if (this.current === null && this.state === 'waiting') {
      this.options.log.info({ path: this.path }, 'access log does not exist yet; waiting for it');
    }
    this.watchDirectory();
  }

  status(): FileStatus {
    return { path: this.path, state: this.state, position: this.current?.position ?? null, draining: this.draining.length, error: this.error };
  }

  /** Schedules a poll; one more follows a poll in progress, so no notification is lost. */
  kick(): void {
    if (this.closed) return;
    if (this.polling) {
      this.again = true;
      return;
    }
    this.polling = this.pollLoop().finally(() => {
      this.polling = null;
    });
  }

  /** Polls now and resolves when the file has been read to its current end. */
  async pollNow(): Promise<void> {
    while (this.polling) await this.polling;
    this.kick();
    // kick() started a poll; the loop above cannot know.
    await (this.polling as Promise<void> | null);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.watcher?.close();
    this.watcher = null;
    await this.polling;
    for (const r of [...this.draining, ...(this.current ? [this.current] : [])]) await r.fh.close().catch(() => undefined);
    this.draining.length = 0;
    this.current = null;
  }

  private async pollLoop(): Promise<void> {
    do {
      this.again = false;
      try {
        if (await this.poll()) this.again = true;
      } catch (err) {
        this.options.metrics.errors.inc(RECEIVER);
        this.warn.error(`files:poll:${this.path}`, { path: this.path, err: describe(err) }, 'reading an access log failed');
      }
      // A poll that stopped at MAX_PER_POLL continues on the next turn of the event loop.
      if (this.again) await new Promise((r) => setImmediate(r));
    } while (this.again && !this.closed);
  }

  /** One round: drain rotated files, follow the path. Returns true when data is left to read. */
  private async poll(): Promise<boolean> {
    let more = false;
    const now = performance.now();
    for (const r of [...this.draining]) {
      if (await this.read(r)) more = true;
      else if (now - r.grewAt >= this.drainMs) await this.retire(r);
    }

    let st: { dev: number; ino: number } | null = null;
    try {
      st = await stat(this.path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        this.failed(err, 'stat');
        return more;
      }
    }
    const cur = this.current;
    if (cur && st && st.dev === cur.dev && st.ino === cur.ino) {
      this.state = 'following';
      this.error = null;
      return (await this.read(cur)) || more;
    }
    if (cur) {
      // Renamed away or deleted: read it to its end now and keep reading while nginx still writes to it.
      this.current = null;
      this.options.metrics.rotations.inc('rename');
      this.options.log.info({ path: this.path }, st ? 'access log rotated (renamed); reading the old file to its end' : 'access log moved away; waiting for a new one');
      if (await this.read(cur)) more = true;
      this.draining.push(cur);
      if (this.draining.length > MAX_DRAINING) await this.retire(this.draining[0] as Reader);
    }
    if (!st) {
      this.state = 'waiting';
      return more;
    }
    // A file renamed back to our path is the one we were reading.
    const back = this.draining.findIndex((r) => r.dev === st.dev && r.ino === st.ino);
    if (back >= 0) {
      this.current = this.draining.splice(back, 1)[0] ?? null;
    } else {
      try {
        this.current = await this.openReader(false);
      } catch (err) {
        this.failed(err, 'open');
        return more;
      }
    }
    if (!this.current) return more;
    this.state = 'following';
    this.error = null;
    return (await this.read(this.current)) || more;
  }

  /**
   * Opens the path: at its end when following starts (what was there before
   * rated is history), else at its start (a new file holds only new lines).
   * Null when it does not exist.
   */
  private async openReader(atEnd: boolean): Promise<Reader | null> {
    let fh: FileHandle;
    try {
      fh = await open(this.path, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new Error(`${this.path} is not a regular file`);
      let position = 0;
      let skipFirst = false;
      if (atEnd && st.size > 0) {
        position = st.size;
        const last = Buffer.alloc(1);
        await fh.read(last, 0, 1, st.size - 1);
        skipFirst = last[0] !== 10;
      }
      const reader: Reader = {
        fh, dev: st.dev, ino: st.ino, position, fingerprint: null, size: st.size, mtimeMs: st.mtimeMs, skipFirst, grewAt: performance.now(),
        splitter: new LineSplitter((line) => {
          if (reader.skipFirst) {
            reader.skipFirst = false;
            return;
          }
          this.intake.line(line, this.name);
        }),
      };
      reader.fingerprint = await this.fingerprintOf(reader);
      return reader;
    } catch (err) {
      await fh.close().catch(() => undefined);
      throw err;
    }
  }

  /** Reads what was appended since the last read; true when it stopped at MAX_PER_POLL with more to read. */
  private async read(r: Reader): Promise<boolean> {
    const st = await r.fh.stat();
    if (st.size < r.position || ((st.size !== r.size || st.mtimeMs !== r.mtimeMs) && !(await this.sameBytes(r)))) {
      // copytruncate: the lines we had not read yet are gone with the old content; start again at 0.
      this.options.metrics.rotations.inc('truncate');
      this.options.log.info({ path: this.path, at: r.position, size: st.size }, 'access log truncated (copytruncate); reading it from the start');
      const partial = r.splitter.flush();
      if (partial !== null && !r.skipFirst) this.intake.reject('partial-line', partial, this.name);
      r.skipFirst = false;
      r.position = 0;
      r.fingerprint = null;
    }
    r.size = st.size;
    r.mtimeMs = st.mtimeMs;
    const buffer = Buffer.allocUnsafe(CHUNK);
    let total = 0;
    while (total < MAX_PER_POLL) {
      const { bytesRead } = await r.fh.read(buffer, 0, CHUNK, r.position);
      if (bytesRead === 0) break;
      r.position += bytesRead;
      total += bytesRead;
      r.splitter.push(bytesRead === CHUNK ? buffer : buffer.subarray(0, bytesRead));
    }
    if (total > 0) {
      r.grewAt = performance.now();
      r.fingerprint = await this.fingerprintOf(r);
    }
    return total >= MAX_PER_POLL;
  }

  /** True when the bytes before the read position are still the ones we read there. */
  private async sameBytes(r: Reader): Promise<boolean> {
    if (r.fingerprint === null) return true;
    const now = await this.fingerprintOf(r);
    return now !== null && now.equals(r.fingerprint);
  }

  private async fingerprintOf(r: Reader): Promise<Buffer | null> {
    const n = Math.min(FINGERPRINT, r.position);
    if (n === 0) return null;
    const b = Buffer.alloc(n);
    const { bytesRead } = await r.fh.read(b, 0, n, r.position - n);
    return b.subarray(0, bytesRead);
  }

  /** Closes a rotated-away file; a partial last line in it can never be completed. */
  private async retire(r: Reader): Promise<void> {
    const i = this.draining.indexOf(r);
    if (i >= 0) this.draining.splice(i, 1);
    const partial = r.splitter.flush();
    if (partial !== null && !r.skipFirst) this.intake.reject('partial-line', partial, this.name);
    await r.fh.close().catch(() => undefined);
  }

  private failed(err: unknown, what: string): void {
    this.state = 'error';
    this.error = `${what}: ${describe(err)}`;
    this.options.metrics.errors.inc(RECEIVER);
    this.warn.error(`files:${what}:${this.path}`, { path: this.path, err: describe(err) }, 'cannot follow access log; retrying');
  }

  /** Watches the directory (a watch on the file itself would not see it replaced); polling covers its absence. */
  private watchDirectory(): void {
    try {
      this.watcher = watch(dirname(this.path), { persistent: false }, (_event, filename) => {
        if (filename === null || filename === this.name) this.kick();
      });
      this.watcher.on('error', () => {
        this.watcher?.close();
        this.watcher = null;
      });
    } catch {
      // No directory yet, or no inotify watches left: polling alone.
    }
  }
}
