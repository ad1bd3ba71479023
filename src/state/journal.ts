import {
  closeSync, constants, fchownSync, fstatSync, fsyncSync, lstatSync, mkdirSync, openSync, readSync, renameSync, unlinkSync, writeSync,
} from 'node:fs';
import { randomBytes } from 'node:crypto';
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { parseNetwork } from '../address.js';
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

/** The outcome of reading the journal. */
export interface JournalLoad extends JournalState {
  /** Set when the file was unreadable and moved aside. */
  readonly movedAside: string | null;
  readonly error: string | null;
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
 * The journal of blocks under `state.dir`. Every write replaces the file
 * atomically (a new temporary file, fsync, rename), so a crash or a full disk
 * leaves the previous version intact; no file in the directory is ever
 * followed through a symbolic link.
 */
export class Journal {
  readonly path: string;

  constructor(readonly dir: string) {
    this.path = join(dir, 'blocks.json');
  }

  /**
   * Reads the journal; a corrupt, unknown-version, oversized or linked file
   * is treated as empty and, unless `moveAside` is false, moved aside under a
   * name of its own, never over an earlier one.
   */
  load(moveAside = true): JournalLoad {
    let text: string;
    try {
      checkStateDir(this.dir);
      text = readJournal(this.path);
    } catch (err) {
      return this.unread(err, moveAside);
    }
    try {
      return { ...parseJournal(text), movedAside: null, error: null };
    } catch (err) {
      return this.aside(moveAside, (err as Error).message);
    }
  }

  /**
   * Reads the journal like `load`, without holding the event loop: the file
   * is read asynchronously and its blocks, one per line, are parsed a slice
   * at a time (1,000,000 blocks take seconds; the receivers answer meanwhile).
   * A journal in one line (as written before) is parsed in one go.
   */
  async loadAsync(moveAside = true): Promise<JournalLoad> {
    let text: string;
    try {
      checkStateDir(this.dir);
      text = await readJournalAsync(this.path);
    } catch (err) {
      return this.unread(err, moveAside);
    }
    try {
      return { ...(await parseJournalLines(text)), movedAside: null, error: null };
    } catch (err) {
      return this.aside(moveAside, (err as Error).message);
    }
  }

  /**
   * `save` without holding the event loop: the text is made a slice of
   * blocks at a time and written asynchronously (1,000,000 blocks are about
   * 130 MB), so receivers keep answering while it is written.
   */
  async saveAsync(state: JournalState): Promise<void> {
    mkdirSync(this.dir, { recursive: true, mode: 0o750 });
    const dir = checkStateDir(this.dir);
    const tmp = this.tempName();
    let file: FileHandle | null = null;
    try {
      file = await open(tmp, TEMP_FLAGS, 0o640);
      if (process.getuid?.() === 0 && (dir.uid !== 0 || dir.gid !== 0)) await file.chown(dir.uid, dir.gid);
      for (const chunk of render(state)) {
        // writeFile writes every byte, or throws (ENOSPC).
        await file.writeFile(chunk, 'utf8');
        await new Promise<void>((resolve) => setImmediate(resolve));
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
    mkdirSync(this.dir, { recursive: true, mode: 0o750 });
    const dir = checkStateDir(this.dir);
    const text = [...render(state)].join('');
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
    const bad = `${this.path}.bad-${new Date().toISOString().replace(/[-:.]/g, '')}-${randomBytes(3).toString('hex')}`;
    try {
      // rename(2) moves a link itself, never its target.
      renameSync(this.path, bad);
      return { blocks: [], offences: [], movedAside: bad, error };
    } catch {
      return { blocks: [], offences: [], movedAside: null, error };
    }
  }
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
function readJournal(path: string): string {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    const buf = Buffer.allocUnsafe(journalSize(path, fstatSync(fd)));
    let off = 0;
    while (off < buf.length) {
      const n = readSync(fd, buf, off, buf.length - off, null);
      if (n === 0) break;
      off += n;
    }
    return buf.toString('utf8', 0, off);
  } finally {
    closeSync(fd);
  }
}

/** `readJournal` without holding the event loop while the file is read. */
async function readJournalAsync(path: string): Promise<string> {
  const file = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    const buf = Buffer.allocUnsafe(journalSize(path, await file.stat()));
    let off = 0;
    while (off < buf.length) {
      const { bytesRead } = await file.read(buf, off, Math.min(4 << 20, buf.length - off), null);
      if (bytesRead === 0) break;
      off += bytesRead;
    }
    return buf.toString('utf8', 0, off);
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
export function parseJournal(text: string): JournalState {
  const doc = JSON.parse(text) as { version?: unknown; blocks?: unknown; offences?: unknown };
  if (doc.version !== VERSION) throw new Error(`unknown journal version ${JSON.stringify(doc.version)}`);
  if (!Array.isArray(doc.blocks)) throw new Error('journal has no block list');
  const blocks: Block[] = [];
  const rejected: string[] = [];
  for (const raw of doc.blocks) readEntry(raw, blocks, rejected);
  return { blocks, offences: readOffences(doc.offences), rejected };
}

/** One stored block, read as what it may be (any JSON at all), into `blocks` or, refused, into `rejected`. */
function readEntry(value: unknown, blocks: Block[], rejected: string[]): void {
  const raw = value as Partial<StoredBlock> | null;
  const ip = raw?.ip;
  const net = typeof ip === 'string' ? parseNetwork(ip) : null;
  if (!raw || !net || raw.source === undefined || !SOURCES.has(raw.source)) {
    rejected.push(`${typeof ip === 'string' ? JSON.stringify(ip.slice(0, 64)) : 'an entry'}: ${net ? 'an unknown source' : 'no address rated accepts'}`);
    return;
  }
  blocks.push({
    net,
    rule: typeof raw.rule === 'string' ? raw.rule : null,
    reason: typeof raw.reason === 'string' ? raw.reason : null,
    source: raw.source,
    since: typeof raw.since === 'number' ? raw.since : null,
    expires: typeof raw.expires === 'number' ? raw.expires : null,
    hits: typeof raw.hits === 'number' ? raw.hits : null,
  });
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

/**
 * The journal's text in pieces: one JSON document with one block per line,
 * which any JSON reader reads and loadAsync() reads a line at a time; a piece
 * holds SLICE blocks.
 */
function* render(state: JournalState): Generator<string> {
  const head = `{"version":${VERSION},"savedAt":${JSON.stringify(new Date().toISOString())},"blocks":[`;
  let piece = head;
  for (let i = 0; i < state.blocks.length; i++) {
    const b = state.blocks[i] as Block;
    piece += `${i === 0 ? '\n' : ',\n'}${JSON.stringify({
      ip: b.net.text, rule: b.rule, reason: b.reason, source: b.source, since: b.since, expires: b.expires, hits: b.hits,
    } satisfies StoredBlock)}`;
    if ((i + 1) % SLICE === 0) {
      yield piece;
      piece = '';
    }
  }
  yield `${piece}${state.blocks.length > 0 ? '\n' : ''}],"offences":${JSON.stringify(state.offences)}}\n`;
}

/** Blocks parsed between two pauses for the event loop. */
const SLICE = 20_000;

/**
 * Parses journal text as `save` writes it — a head line, one block per line,
 * a tail line — pausing for the event loop every SLICE blocks; anything else
 * (a journal in one line) goes to `parseJournal`. Throws on anything
 * unexpected, as `parseJournal` does: nothing of a damaged journal is used.
 */
async function parseJournalLines(text: string): Promise<JournalState> {
  const first = text.indexOf('\n');
  const head = first < 0 ? '' : text.slice(0, first);
  if (!head.endsWith('"blocks":[')) return parseJournal(text);
  const { version } = JSON.parse(`${head}]}`) as { version?: unknown };
  if (version !== VERSION) throw new Error(`unknown journal version ${JSON.stringify(version)}`);
  const blocks: Block[] = [];
  const rejected: string[] = [];
  let at = first + 1;
  let n = 0;
  for (;;) {
    const end = text.indexOf('\n', at);
    const line = end < 0 ? text.slice(at) : text.slice(at, end);
    if (!line.startsWith('{')) {
      // The tail: `],"offences":[…]}`.
      const tail = JSON.parse(`{"blocks":[${line}`) as { offences?: unknown };
      if (end >= 0 && text.slice(end + 1).trim() !== '') throw new Error('journal continues after its end');
      return { blocks, offences: readOffences(tail.offences), rejected };
    }
    readEntry(JSON.parse(line.endsWith(',') ? line.slice(0, -1) : line), blocks, rejected);
    if (end < 0) throw new Error('journal ends inside its block list');
    at = end + 1;
    if (++n % SLICE === 0) await new Promise<void>((resolve) => setImmediate(resolve));
  }
}
