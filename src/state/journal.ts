import { closeSync, fchownSync, fsyncSync, openSync, statSync, readFileSync, renameSync, unlinkSync, writeSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseNetwork } from '../address.js';
import type { Block, Source } from '../enforce/index.js';
import { RatedError } from '../errors.js';

const VERSION = 1;
const SOURCES = new Set<Source>(['rule', 'manual', 'cluster', 'reconciled']);

/** A repeat-offence record kept across restarts. */
export interface OffenceRecord {
  readonly count: number;
  readonly lastAt: number;
}

/** What the journal holds. */
export interface JournalState {
  readonly blocks: Block[];
  readonly offences: Array<[string, OffenceRecord]>;
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

/**
 * The journal of blocks under `state.dir`. Every write replaces the file
 * atomically (temporary file, fsync, rename), so a crash or a full disk
 * leaves the previous version intact.
 */
export class Journal {
  readonly path: string;

  constructor(readonly dir: string) {
    this.path = join(dir, 'blocks.json');
  }

  /**
   * Reads the journal; a corrupt or unknown-version file is treated as empty
   * and, unless `moveAside` is false, moved to `.bad`.
   */
  load(moveAside = true): JournalLoad {
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { blocks: [], offences: [], movedAside: null, error: null };
      throw new RatedError('FIREWALL_FAILED', `state.dir: cannot read ${this.path}: ${(err as Error).message}`);
    }
    try {
      return { ...parseJournal(text), movedAside: null, error: null };
    } catch (err) {
      if (!moveAside) return { blocks: [], offences: [], movedAside: null, error: (err as Error).message };
      const bad = `${this.path}.bad`;
      try {
        renameSync(this.path, bad);
      } catch {
        // leave it where it is; it is ignored either way
      }
      return { blocks: [], offences: [], movedAside: bad, error: (err as Error).message };
    }
  }

  /** Writes the journal atomically; throws the file system's error (ENOSPC, EROFS) to the caller. */
  save(state: JournalState): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o750 });
    const stored: StoredBlock[] = state.blocks.map((b) => ({
      ip: b.net.text, rule: b.rule, reason: b.reason, source: b.source, since: b.since, expires: b.expires, hits: b.hits,
    }));
    const text = JSON.stringify({ version: VERSION, savedAt: new Date().toISOString(), blocks: stored, offences: state.offences });
    const tmp = `${this.path}.tmp`;
    let fd: number | null = null;
    try {
      fd = openSync(tmp, 'w', 0o640);
      keepDirOwner(fd, this.dir);
      writeAll(fd, Buffer.from(text, 'utf8'));
      fsyncSync(fd);
      closeSync(fd);
      fd = null;
      renameSync(tmp, this.path);
      const dirFd = openSync(this.dir, 'r');
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
}

/**
 * Root writing the journal (the CLI while the daemon is down) gives the file
 * to the directory's owner: a daemon running as its own user must still read
 * and replace it.
 */
function keepDirOwner(fd: number, dir: string): void {
  if (process.getuid?.() !== 0) return;
  const st = statSync(dir);
  if (st.uid !== 0 || st.gid !== 0) fchownSync(fd, st.uid, st.gid);
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
  for (const raw of doc.blocks as StoredBlock[]) {
    const net = typeof raw.ip === 'string' ? parseNetwork(raw.ip) : null;
    if (!net || !SOURCES.has(raw.source)) continue;
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
  const offences: Array<[string, OffenceRecord]> = [];
  if (Array.isArray(doc.offences)) {
    for (const entry of doc.offences as unknown[]) {
      if (!Array.isArray(entry) || typeof entry[0] !== 'string') continue;
      const o = entry[1] as { count?: unknown; lastAt?: unknown };
      if (typeof o.count === 'number' && typeof o.lastAt === 'number') offences.push([entry[0], { count: o.count, lastAt: o.lastAt }]);
    }
  }
  return { blocks, offences };
}
