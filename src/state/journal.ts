import {
  closeSync, constants, fchownSync, fstatSync, fsyncSync, lstatSync, mkdirSync, openSync, readdirSync, readSync, renameSync, unlinkSync, writeSync,
} from 'node:fs';
import { randomBytes } from 'node:crypto';
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { parseNetwork, type Network } from '../address.js';
import { SOURCES, type Block, type Source } from '../block.js';
import { RatedError } from '../errors.js';

const VERSION = 1;

/** The largest journal read; a longer one is moved aside (1,000,000 blocks take about 180 MB). */
export const MAX_JOURNAL_BYTES = 400 * 1024 * 1024;

/** A repeat-offence record kept across restarts. */
export interface OffenceRecord {
  readonly count: number;
  readonly lastAt: number;
}

/** What the journal holds. */
export interface JournalState {
  readonly blocks: Block[];
  readonly offences: Array<[string, OffenceRecord]>;
  /** Entries read that no input could have made (not an address rated accepts, an unknown source). */
  readonly rejected?: readonly string[];
}

/** A snapshot as read: its state and the first log generation written after it. */
interface Snapshot extends JournalState {
  readonly log: number;
}

/** The outcome of reading the journal. */
export interface JournalLoad extends JournalState {
  /** Set when the file was unreadable and moved aside. */
  readonly movedAside: string | null;
  readonly error: string | null;
  /** Lines read from the logs after the snapshot. */
  readonly logged?: number;
}

interface StoredBlock {
  ip: string;
  rule: string | null;
  reason: string | null;
  source: Source;
  since: number | null;
  expires: number | null;
  hits: number | null;
}

/** A journal that is there but cannot be used: moved aside, never overwritten. */
class Unusable extends Error {}

/**
 * The journal of blocks under `state.dir`: a snapshot (`blocks.json`) and
 * the changes made since, appended one line each to a log
 * (`blocks-<generation>.log`), so a change costs one short write whatever
 * the number of blocks. A snapshot replaces the file atomically (a new
 * temporary file, fsync, rename) and names the first log generation after
 * it; logs of older generations are then deleted. A crash or a full disk
 * leaves the previous snapshot and every complete log line intact; no file in
 * the directory is ever followed through a symbolic link.
 */
export class Journal {
  readonly path: string;
  /** The log generation changes are appended to now. */
  private gen = 0;
  private appender: { gen: number; file: FileHandle } | null = null;

  constructor(readonly dir: string) {
    this.path = join(dir, 'blocks.json');
  }

  /** The log of one generation. */
  logPath(gen: number): string {
    return join(this.dir, `blocks-${gen}.log`);
  }

  /**
   * Reads the journal; a corrupt, unknown-version, oversized or linked file
   * is treated as empty and, unless `moveAside` is false, moved aside under a
   * name of its own, never over an earlier one.
   */
  load(moveAside = true): JournalLoad {
    const snapshot = this.loadSnapshot(moveAside);
    const merged = new Merge(snapshot.log);
    drain(merged.take(snapshot));
    for (const gen of this.logsAfter(snapshot)) {
      const text = this.readLog(gen, moveAside, merged);
      if (text !== null) drain(merged.apply(gen, text));
    }
    return this.merged(snapshot, merged);
  }

  private loadSnapshot(moveAside: boolean): JournalLoad & { log: number } {
    let text: string;
    try {
      checkStateDir(this.dir);
      text = readJournal(this.path).toString('utf8');
    } catch (err) {
      return { ...this.unread(err, moveAside), log: 0 };
    }
    try {
      return { ...parseJournal(text), movedAside: null, error: null };
    } catch (err) {
      return { ...this.aside(moveAside, (err as Error).message), log: 0 };
    }
  }

  /**
   * The logs to apply on top of a snapshot. Those of a snapshot that could
   * not be used are changes to what is lost: they go aside with it.
   */
  private logsAfter(snapshot: JournalLoad & { log: number }): number[] {
    if (snapshot.error === null) return this.logsFrom(snapshot.log);
    if (snapshot.movedAside !== null) {
      for (const gen of this.logsFrom(0)) {
        try {
          renameSync(this.logPath(gen), asideName(this.logPath(gen)));
        } catch {
          // left in place: a later snapshot deletes it
        }
      }
    }
    return [];
  }

  /** The generations of the logs on disk from `first` on, oldest first. */
  private logsFrom(first: number): number[] {
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch {
      return [];
    }
    const gens: number[] = [];
    for (const name of names) {
      const m = /^blocks-(\d{1,15})\.log$/.exec(name);
      if (m && Number(m[1]) >= first) gens.push(Number(m[1]));
    }
    return gens.sort((a, b) => a - b);
  }

  /** A log's text, or null when it cannot be used (then moved aside and said in `merge.errors`). */
  private readLog(gen: number, moveAside: boolean, merge: Merge): Buffer | null {
    try {
      return readJournal(this.logPath(gen));
    } catch (err) {
      return this.logUnread(gen, err, moveAside, merge);
    }
  }

  private async readLogAsync(gen: number, moveAside: boolean, merge: Merge): Promise<Buffer | null> {
    try {
      return await readJournalAsync(this.logPath(gen));
    } catch (err) {
      return this.logUnread(gen, err, moveAside, merge);
    }
  }

  private logUnread(gen: number, err: unknown, moveAside: boolean, merge: Merge): null {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    const path = this.logPath(gen);
    if (!(err instanceof Unusable) && code !== 'ELOOP') {
      throw new RatedError('STATE_FAILED', `state.dir: cannot read ${path}: ${(err as Error).message}`, { cause: err });
    }
    merge.errors.push(code === 'ELOOP' ? `${path} is a symbolic link, which is never followed` : (err as Error).message);
    if (moveAside) {
      try {
        renameSync(path, asideName(path));
      } catch {
        // left in place; it is skipped again next time
      }
    }
    return null;
  }

  /**
   * The state the snapshot and its logs make together; appends go on in the
   * newest log, or in a new one when that one ends in a torn line (a write
   * cut short by a crash or a full disk).
   */
  private merged(snapshot: JournalLoad & { log: number }, merge: Merge): JournalLoad {
    this.gen = Math.max(snapshot.log, merge.lastGen + (merge.torn ? 1 : 0));
    return {
      blocks: [...merge.blocks.values()],
      offences: [...merge.offences],
      // A log that cannot be read costs its own lines, never the rest.
      rejected: [...(snapshot.rejected ?? []), ...merge.rejected, ...merge.errors],
      movedAside: snapshot.movedAside,
      error: snapshot.error,
      logged: merge.lines,
    };
  }

  /**
   * Appends change lines (`blockLine`, `liftLine`, `offenceLine`) to the
   * current log; `sync` makes them durable. Throws the file system's error.
   * One call at a time.
   */
  async append(text: string): Promise<void> {
    if (this.appender?.gen !== this.gen) {
      await this.closeLog();
      const gen = this.gen;
      const file = await open(this.logPath(gen), LOG_FLAGS, 0o640);
      try {
        const st = await file.stat();
        if (!st.isFile()) throw new RatedError('STATE_FAILED', `state.dir: ${this.logPath(gen)} is not a regular file`);
        const dir = checkStateDir(this.dir);
        if (process.getuid?.() === 0 && (dir.uid !== 0 || dir.gid !== 0) && st.uid === 0) await file.chown(dir.uid, dir.gid);
      } catch (err) {
        await file.close();
        throw err;
      }
      this.appender = { gen, file };
    }
    await this.appender.file.writeFile(text, 'utf8');
  }

  /** Makes what was appended so far durable (fdatasync). */
  async sync(): Promise<void> {
    const a = this.appender;
    try {
      await a?.file.datasync();
    } catch (err) {
      // A log closed meanwhile was replaced by a snapshot that holds its lines.
      if (this.appender === a) throw err;
    }
  }

  /** Closes the log being appended to. */
  async closeLog(): Promise<void> {
    const a = this.appender;
    this.appender = null;
    await a?.file.close().catch(() => undefined);
  }

  /** Deletes the logs a snapshot made of generation `gen` holds. */
  private dropLogsBefore(gen: number): void {
    for (const old of this.logsFrom(0)) {
      if (old >= gen) break;
      try {
        unlinkSync(this.logPath(old));
      } catch {
        // gone already, or left for the next snapshot
      }
    }
  }

  /**
   * Reads the journal like `load`, without holding the event loop: the file
   * is read asynchronously and its blocks, one per line, are parsed a slice
   * at a time (1,000,000 blocks take seconds; the receivers answer meanwhile).
   * A journal in one line (as written before) is parsed in one go.
   */
  async loadAsync(moveAside = true): Promise<JournalLoad> {
    const snapshot = await this.loadSnapshotAsync(moveAside);
    const merged = new Merge(snapshot.log);
    for (const _ of merged.take(snapshot)) await new Promise<void>((resolve) => setImmediate(resolve));
    for (const gen of this.logsAfter(snapshot)) {
      const text = await this.readLogAsync(gen, moveAside, merged);
      if (text === null) continue;
      for (const _ of merged.apply(gen, text)) await new Promise<void>((resolve) => setImmediate(resolve));
    }
    return this.merged(snapshot, merged);
  }

  private async loadSnapshotAsync(moveAside: boolean): Promise<JournalLoad & { log: number }> {
    let text: Buffer;
    try {
      checkStateDir(this.dir);
      text = await readJournalAsync(this.path);
    } catch (err) {
      return { ...this.unread(err, moveAside), log: 0 };
    }
    try {
      return { ...(await parseJournalLines(text)), movedAside: null, error: null };
    } catch (err) {
      return { ...this.aside(moveAside, (err as Error).message), log: 0 };
    }
  }

  /**
   * `save` without holding the event loop: the text is made a slice of
   * blocks at a time and written asynchronously (1,000,000 blocks are about
   * 130 MB), so receivers keep answering while it is written.
   */
  async saveAsync(state: JournalState): Promise<void> {
    // Changes from now on go to the next log: the snapshot holds every one before.
    const log = ++this.gen;
    mkdirSync(this.dir, { recursive: true, mode: 0o750 });
    const dir = checkStateDir(this.dir);
    const tmp = this.tempName();
    let file: FileHandle | null = null;
    try {
      file = await open(tmp, TEMP_FLAGS, 0o640);
      if (process.getuid?.() === 0 && (dir.uid !== 0 || dir.gid !== 0)) await file.chown(dir.uid, dir.gid);
      for (const chunk of render(state, log)) {
        // writeFile writes every byte, or throws (ENOSPC); the event loop runs while it does.
        await file.writeFile(chunk, 'utf8');
      }
      await file.sync();
      await file.close();
      file = null;
      await rename(tmp, this.path);
      const dirFile = await open(this.dir, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
      try {
        await dirFile.sync();
      } finally {
        await dirFile.close();
      }
      this.dropLogsBefore(log);
    } catch (err) {
      await file?.close();
      await unlink(tmp).catch(() => undefined);
      throw err;
    }
  }

  /**
   * A fresh name for the next version, created exclusively (TEMP_FLAGS) and
   * never through a link: whoever owns the directory cannot aim a write, or
   * the chown, at another file.
   */
  private tempName(): string {
    return `${this.path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  }

  /** Writes the journal atomically; throws the file system's error (ENOSPC, EROFS) to the caller. */
  save(state: JournalState): void {
    const log = ++this.gen;
    mkdirSync(this.dir, { recursive: true, mode: 0o750 });
    const dir = checkStateDir(this.dir);
    const text = [...render(state, log)].join('');
    const tmp = this.tempName();
    let fd: number | null = null;
    try {
      fd = openSync(tmp, TEMP_FLAGS, 0o640);
      // Root writing (the CLI while the daemon is down) gives the new file to
      // the directory's owner, so a daemon running as its own user can still
      // replace it; the descriptor is the file just created, never a path.
      if (process.getuid?.() === 0 && (dir.uid !== 0 || dir.gid !== 0)) fchownSync(fd, dir.uid, dir.gid);
      writeAll(fd, Buffer.from(text, 'utf8'));
      fsyncSync(fd);
      closeSync(fd);
      fd = null;
      // rename(2) replaces a link at the destination; it never writes through it.
      renameSync(tmp, this.path);
      const dirFd = openSync(this.dir, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
      try {
        fsyncSync(dirFd);
      } finally {
        closeSync(dirFd);
      }
      this.dropLogsBefore(log);
    } catch (err) {
      if (fd !== null) closeSync(fd);
      try {
        unlinkSync(tmp);
      } catch {
        // nothing to clean
      }
      throw err;
    }
  }

  /** What a journal that could not be read amounts to: none (missing), moved aside (unusable), or an error for the caller. */
  private unread(err: unknown, moveAside: boolean): JournalLoad {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { blocks: [], offences: [], movedAside: null, error: null };
    if (err instanceof Unusable) return this.aside(moveAside, err.message);
    if ((err as NodeJS.ErrnoException).code === 'ELOOP') return this.aside(moveAside, `${this.path} is a symbolic link, which is never followed`);
    if (err instanceof RatedError) throw err;
    throw new RatedError('STATE_FAILED', `state.dir: cannot read ${this.path}: ${(err as Error).message}`, { cause: err });
  }

  private aside(moveAside: boolean, error: string): JournalLoad {
    if (!moveAside) return { blocks: [], offences: [], movedAside: null, error };
    const bad = asideName(this.path);
    try {
      // rename(2) moves a link itself, never its target.
      renameSync(this.path, bad);
      return { blocks: [], offences: [], movedAside: bad, error };
    } catch {
      return { blocks: [], offences: [], movedAside: null, error };
    }
  }
}

/** A name of its own for a file moved aside, never that of an earlier one. */
function asideName(path: string): string {
  return `${path}.bad-${new Date().toISOString().replace(/[-:.]/g, '')}-${randomBytes(3).toString('hex')}`;
}

/**
 * The state directory must be a real directory that only its owner can
 * write: anyone else could plant links or files that root then writes
 * through. Returns its owner.
 */
export function checkStateDir(dir: string): { uid: number; gid: number } {
  let st;
  try {
    st = lstatSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
    throw err;
  }
  if (st.isSymbolicLink()) {
    throw new RatedError('STATE_FAILED', `state.dir: ${dir} is a symbolic link; give the real directory (links there are never followed)`);
  }
  if (!st.isDirectory()) throw new RatedError('STATE_FAILED', `state.dir: ${dir} is not a directory`);
  if ((st.mode & 0o022) !== 0) {
    throw new RatedError('STATE_FAILED', `state.dir: ${dir} is writable by others than its owner (mode ${(st.mode & 0o7777).toString(8)}); run chmod go-w ${dir}`);
  }
  return { uid: st.uid, gid: st.gid };
}

/** The size of the file opened as the journal; throws Unusable for what is not a file, or larger than a journal can be. */
function journalSize(path: string, st: { isFile(): boolean; size: number }): number {
  if (!st.isFile()) throw new Unusable(`${path} is not a regular file`);
  if (st.size > MAX_JOURNAL_BYTES) {
    throw new Unusable(`${path} holds ${Math.round(st.size / 1048576)} MB, more than any journal (${MAX_JOURNAL_BYTES / 1048576} MB)`);
  }
  return st.size;
}

/** Reads the journal without following a link, and refuses one larger than a journal can be. */
function readJournal(path: string): Buffer {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    const buf = Buffer.allocUnsafe(journalSize(path, fstatSync(fd)));
    let off = 0;
    while (off < buf.length) {
      const n = readSync(fd, buf, off, buf.length - off, null);
      if (n === 0) break;
      off += n;
    }
    return buf.subarray(0, off);
  } finally {
    closeSync(fd);
  }
}

/**
 * `readJournal` without holding the event loop while the file is read. The
 * bytes are decoded a line at a time as they are parsed: decoding 130 MB
 * (1,000,000 blocks) into one string would hold the event loop 0.6 s.
 */
async function readJournalAsync(path: string): Promise<Buffer> {
  const file = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    const buf = Buffer.allocUnsafe(journalSize(path, await file.stat()));
    let off = 0;
    while (off < buf.length) {
      const { bytesRead } = await file.read(buf, off, Math.min(4 << 20, buf.length - off), null);
      if (bytesRead === 0) break;
      off += bytesRead;
    }
    return buf.subarray(0, off);
  } finally {
    await file.close();
  }
}

/**
 * Writes every byte: on a nearly full disk write(2) may take only part of the
 * buffer without an error, and the rest then fails with ENOSPC.
 */
function writeAll(fd: number, data: Buffer): void {
  let offset = 0;
  while (offset < data.length) offset += writeSync(fd, data, offset, data.length - offset);
}

/** Parses and validates journal text; throws on anything unexpected. */
export function parseJournal(text: string): Snapshot {
  const doc = JSON.parse(text) as { version?: unknown; blocks?: unknown; offences?: unknown; log?: unknown };
  if (doc.version !== VERSION) throw new Error(`unknown journal version ${JSON.stringify(doc.version)}`);
  if (!Array.isArray(doc.blocks)) throw new Error('journal has no block list');
  const blocks: Block[] = [];
  const rejected: string[] = [];
  for (const raw of doc.blocks) readEntry(raw, blocks, rejected);
  return { blocks, offences: readOffences(doc.offences), rejected, log: logOf(doc.log) };
}

/** The log generation a snapshot names; 0 for one written before logs were kept. */
function logOf(value: unknown): number {
  return Number.isSafeInteger(value) && (value as number) >= 0 ? value as number : 0;
}

/** One stored block, read as what it may be (any JSON at all), into `blocks` or, refused, into `rejected`. */
function readEntry(value: unknown, blocks: Block[], rejected: string[]): void {
  const block = toBlock(value, rejected);
  if (block) blocks.push(block);
}

function toBlock(value: unknown, rejected: string[]): Block | null {
  const raw = value as Partial<StoredBlock> | null;
  const ip = raw?.ip;
  const net = typeof ip === 'string' ? parseNetwork(ip) : null;
  if (!raw || !net || raw.source === undefined || !SOURCES.has(raw.source)) {
    rejected.push(`${typeof ip === 'string' ? JSON.stringify(ip.slice(0, 64)) : 'an entry'}: ${net ? 'an unknown source' : 'no address rated accepts'}`);
    return null;
  }
  return {
    net,
    rule: typeof raw.rule === 'string' ? raw.rule : null,
    reason: typeof raw.reason === 'string' ? raw.reason : null,
    source: raw.source,
    since: typeof raw.since === 'number' ? raw.since : null,
    expires: typeof raw.expires === 'number' ? raw.expires : null,
    hits: typeof raw.hits === 'number' ? raw.hits : null,
  };
}

function readOffences(value: unknown): Array<[string, OffenceRecord]> {
  const offences: Array<[string, OffenceRecord]> = [];
  if (!Array.isArray(value)) return offences;
  for (const entry of value as unknown[]) {
    if (!Array.isArray(entry) || typeof entry[0] !== 'string') continue;
    const o = entry[1] as { count?: unknown; lastAt?: unknown } | null;
    if (typeof o?.count === 'number' && typeof o.lastAt === 'number') offences.push([entry[0], { count: o.count, lastAt: o.lastAt }]);
  }
  return offences;
}

const TEMP_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
/** A log is opened for appending, never through a link, and never waits on what is not a file (a FIFO planted there). */
const LOG_FLAGS = constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK;

/** A block as stored, one JSON object: a snapshot's line, and a log's line for a block made or changed. */
export function blockLine(b: Block): string {
  return JSON.stringify({
    ip: b.net.text, rule: b.rule, reason: b.reason, source: b.source, since: b.since, expires: b.expires, hits: b.hits,
  } satisfies StoredBlock);
}

/** A log's line for a block lifted. */
export function liftLine(net: Network): string {
  return `{"lift":${JSON.stringify(net.text)}}`;
}

/** A log's line for an offence history changed, or forgotten (null). */
export function offenceLine(key: string, o: OffenceRecord | null): string {
  return JSON.stringify(o === null ? { offence: key } : { offence: key, count: o.count, lastAt: o.lastAt });
}

/**
 * A snapshot with its logs applied on top, line by line. Every line states a
 * whole block or offence (never a difference), so a line applied twice, or to
 * a snapshot that already holds it, changes nothing.
 */
class Merge {
  readonly blocks = new Map<string, Block>();
  readonly offences = new Map<string, OffenceRecord>();
  readonly rejected: string[] = [];
  readonly errors: string[] = [];
  lastGen = 0;
  lines = 0;
  /** The newest log read ends in a line cut short. */
  torn = false;

  constructor(snapshotLog: number) {
    this.lastGen = snapshotLog;
  }

  /** Takes the snapshot's blocks and offences; yields every SLICE blocks. */
  *take(snapshot: JournalState): Generator<void> {
    let n = 0;
    for (const b of snapshot.blocks) {
      this.blocks.set(b.net.text, b);
      if (++n % SLICE === 0) yield;
    }
    for (const [key, o] of snapshot.offences) this.offences.set(key, o);
  }

  /** Applies one log's bytes; yields every SLICE lines so a caller may let the event loop run. */
  *apply(gen: number, text: Buffer): Generator<void> {
    this.lastGen = gen;
    this.torn = text.length > 0 && text[text.length - 1] !== NEWLINE;
    let at = 0;
    let n = 0;
    for (;;) {
      const end = text.indexOf(NEWLINE, at);
      // The last line without its end: a write cut short, which never counts.
      if (end < 0) return;
      const line = text.toString('utf8', at, end);
      at = end + 1;
      if (line !== '') this.line(line, gen);
      this.lines++;
      if (++n % SLICE === 0) yield;
    }
  }

  private line(line: string, gen: number): void {
    let raw: unknown;
    try {
      raw = JSON.parse(line);
    } catch {
      this.rejected.push(`a damaged line in blocks-${gen}.log`);
      return;
    }
    const r = raw as { lift?: unknown; offence?: unknown; count?: unknown; lastAt?: unknown } | null;
    if (r !== null && typeof r === 'object' && 'lift' in r) {
      const net = typeof r.lift === 'string' ? parseNetwork(r.lift) : null;
      if (net) this.blocks.delete(net.text);
      else this.rejected.push(`${JSON.stringify(String(r.lift).slice(0, 64))}: no address rated accepts`);
    } else if (r !== null && typeof r === 'object' && 'offence' in r) {
      if (typeof r.offence !== 'string') return;
      if (typeof r.count === 'number' && typeof r.lastAt === 'number') {
        // Re-inserted: the order stays "least recent offence first".
        this.offences.delete(r.offence);
        this.offences.set(r.offence, { count: r.count, lastAt: r.lastAt });
      } else this.offences.delete(r.offence);
    } else {
      const block = toBlock(raw, this.rejected);
      if (block) this.blocks.set(block.net.text, block);
    }
  }
}

/** Runs a generator to its end. */
function drain(g: Generator<void>): void {
  for (const _ of g) { /* no pause */ }
}

/**
 * The journal's text in pieces: one JSON document with one block per line,
 * which any JSON reader reads and loadAsync() reads a line at a time. A piece
 * is about PIECE_CHARS long: each is made in well under a millisecond, and is
 * garbage the young generation collects at once (a piece of megabytes would
 * hold the event loop for tens of milliseconds, and would stay in the heap
 * until a full collection).
 */
function* render(state: JournalState, log: number): Generator<string> {
  const head = `{"version":${VERSION},"savedAt":${JSON.stringify(new Date().toISOString())},"log":${log},"blocks":[`;
  let piece = head;
  for (let i = 0; i < state.blocks.length; i++) {
    const b = state.blocks[i] as Block;
    piece += `${i === 0 ? '\n' : ',\n'}${blockLine(b)}`;
    if (piece.length >= PIECE_CHARS) {
      yield piece;
      piece = '';
    }
  }
  yield `${piece}${state.blocks.length > 0 ? '\n' : ''}],"offences":${JSON.stringify(state.offences)}}\n`;
}

/** A line's end in the journal's bytes. */
const NEWLINE = 0x0a;
/** Blocks parsed between two pauses for the event loop: about 5 ms of work. */
const SLICE = 2_000;
/** Characters of journal text written at a time while a snapshot is made in the background. */
const PIECE_CHARS = 64 * 1024;

/**
 * Parses journal text as `save` writes it — a head line, one block per line,
 * a tail line — pausing for the event loop every SLICE blocks; anything else
 * (a journal in one line) goes to `parseJournal`. Throws on anything
 * unexpected, as `parseJournal` does: nothing of a damaged journal is used.
 */
async function parseJournalLines(text: Buffer): Promise<Snapshot> {
  const first = text.indexOf(NEWLINE);
  const head = first < 0 ? '' : text.toString('utf8', 0, first);
  if (!head.endsWith('"blocks":[')) return parseJournal(text.toString('utf8'));
  const { version, log } = JSON.parse(`${head}]}`) as { version?: unknown; log?: unknown };
  if (version !== VERSION) throw new Error(`unknown journal version ${JSON.stringify(version)}`);
  const blocks: Block[] = [];
  const rejected: string[] = [];
  let at = first + 1;
  let n = 0;
  for (;;) {
    const end = text.indexOf(NEWLINE, at);
    const line = text.toString('utf8', at, end < 0 ? text.length : end);
    if (!line.startsWith('{')) {
      // The tail: `],"offences":[…]}`.
      const tail = JSON.parse(`{"blocks":[${line}`) as { offences?: unknown };
      if (end >= 0 && text.toString('utf8', end + 1).trim() !== '') throw new Error('journal continues after its end');
      return { blocks, offences: readOffences(tail.offences), rejected, log: logOf(log) };
    }
    readEntry(JSON.parse(line.endsWith(',') ? line.slice(0, -1) : line), blocks, rejected);
    if (end < 0) throw new Error('journal ends inside its block list');
    at = end + 1;
    if (++n % SLICE === 0) await new Promise<void>((resolve) => setImmediate(resolve));
  }
}
