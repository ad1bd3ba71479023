import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { CommandError, killGroup, type CommandResult } from '../run-command.js';

/**
 * Documents up to this size go through the session. nft reads its input one
 * byte per system call in interactive mode (about 2 µs a byte here), so a
 * larger batch is cheaper in a process of its own (about 15 ms to start).
 */
export const SESSION_MAX_BYTES = 8 * 1024;

/**
 * nft keeps every line it was given in its history, in memory: after this
 * much input a session ends and the next change starts a new one (one
 * process start per 32 MB, some 200,000 single changes).
 */
const RECYCLE_AFTER_BYTES = 32 * 1024 * 1024;

/** Thrown when nft cannot hold a session here (no interactive mode in this build): the change goes through a process. */
export class SessionUnavailable extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SessionUnavailable';
  }
}

interface Waiting {
  readonly mark: string;
  readonly resolve: (result: CommandResult) => void;
  readonly reject: (err: Error) => void;
  readonly timer: NodeJS.Timeout;
}

/**
 * Splits nft's error output at the answer to a marker line: what it wrote
 * before that answer belongs to the document sent before the marker. Returns
 * null while the answer is not complete yet.
 */
export function takeAnswer(stderr: string, mark: string): { before: string; rest: string } | null {
  const at = stderr.indexOf(`\n${mark}\n`);
  if (at < 0) return null;
  // The answer is three lines: "Error: syntax error…", the marker, a line of carets.
  const carets = stderr.indexOf('\n', at + mark.length + 2);
  if (carets < 0) return null;
  const errorLine = stderr.lastIndexOf('\n', at - 1) + 1;
  return { before: stderr.slice(0, errorLine), rest: stderr.slice(carets + 1) };
}

/**
 * One long-lived `nft -j -i` for small changes: a change costs nft's own
 * work (under a millisecond at 1,000,000 elements) instead of a process
 * start, which for a daemon holding 500 MB is 15–20 ms. nft answers nothing
 * on success, so each document is followed by a line it refuses, a marker;
 * what its error output shows before refusing the marker is the document's.
 * nft follows the kernel's ruleset generation, so changes made by others
 * (a repair, an operator's `nft`) are seen by the next document.
 */
export class NftSession {
  private child: ChildProcessWithoutNullStreams | null = null;
  private stderr = '';
  private readonly waiting: Waiting[] = [];
  private sent = 0;
  private serial = 0;
  /** Whether the running child has answered once: a child that never did cannot hold a session here. */
  private answered = false;
  private unavailable: string | null = null;
  private readonly nonce = randomBytes(4).toString('hex');

  /** `start` launches `nft -j -i` (with the runner's prefix and environment). */
  constructor(private readonly start: () => ChildProcessWithoutNullStreams, private readonly timeoutMs = 10_000) {}

  /** True once nft has shown that it cannot hold a session here; every change then goes through a process. */
  get disabled(): boolean {
    return this.unavailable !== null;
  }

  /** Sends one JSON document (one line, one transaction); resolves with what nft said of it. */
  run(doc: string): Promise<CommandResult> {
    if (this.unavailable !== null) return Promise.reject(new SessionUnavailable(this.unavailable));
    // nft takes each line as a transaction of its own: a document must stay one.
    if (doc.includes('\n')) return Promise.reject(new RangeError('a document for the nft session must be a single line'));
    const child = this.child ?? this.spawn();
    const mark = `} rated ${this.nonce} ${++this.serial}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.end(child, new CommandError('nft', `nft did not finish within ${this.timeoutMs} ms and was killed`, false));
      }, this.timeoutMs);
      this.waiting.push({ mark, resolve, reject, timer });
      const line = `${doc}\n${mark}\n`;
      this.sent += line.length;
      child.stdin.write(line);
    });
  }

  /** Ends the session; nft exits when its input closes. */
  close(): void {
    if (this.child) this.end(this.child, new CommandError('nft', 'the nft session was closed', false));
  }

  private spawn(): ChildProcessWithoutNullStreams {
    const child = this.start();
    this.child = child;
    this.stderr = '';
    this.answered = false;
    this.sent = 0;
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      if (this.child !== child) return;
      this.stderr += chunk;
      this.answer(child);
    });
    child.stdout.resume();
    // A write after nft died fails with EPIPE; the exit below answers the waiting.
    child.stdin.on('error', () => undefined);
    child.once('error', (err: NodeJS.ErrnoException) => {
      this.unavailable = err.code === 'ENOENT' ? 'nft is not installed' : `nft -i could not start: ${err.message}`;
      this.end(child, new SessionUnavailable(this.unavailable));
    });
    child.once('exit', (code, signal) => {
      if (this.child !== child) return;
      if (!this.answered) {
        this.unavailable = `nft -i ended without answering (${signal ?? `exit ${code}`}): ${this.stderr.trim().split('\n')[0] ?? ''}`;
        this.end(child, new SessionUnavailable(this.unavailable));
      } else {
        this.end(child, new CommandError('nft', `nft ended (${signal ?? `exit ${code}`}) before it answered`, false));
      }
    });
    // Neither the child nor its pipes keep the process alive; a change in flight does, by its timer.
    child.unref();
    for (const s of [child.stdin, child.stdout, child.stderr] as const) (s as unknown as { unref?: () => void }).unref?.();
    return child;
  }

  private answer(child: ChildProcessWithoutNullStreams): void {
    for (;;) {
      const head = this.waiting[0];
      if (!head) return;
      const found = takeAnswer(this.stderr, head.mark);
      if (!found) return;
      this.answered = true;
      this.stderr = found.rest;
      this.waiting.shift();
      clearTimeout(head.timer);
      const failed = /(^|\n)([^\n]*: )?Error: /.test(found.before);
      head.resolve({ exitCode: failed ? 1 : 0, stdout: '', stderr: found.before });
      if (this.waiting.length === 0 && this.sent >= RECYCLE_AFTER_BYTES) this.end(child, null);
    }
  }

  /** Ends `child` (killed when it still had work), answering whatever waited on it with `err`. */
  private end(child: ChildProcessWithoutNullStreams, err: Error | null): void {
    if (this.child === child) this.child = null;
    child.stdin.end();
    if (this.waiting.length > 0 && child.exitCode === null && child.signalCode === null) killGroup(child.pid);
    for (const w of this.waiting.splice(0)) {
      clearTimeout(w.timer);
      w.reject(err ?? new CommandError('nft', 'the nft session ended', false));
    }
  }
}
