/**
 * Programs run on each block and unblock (`hooks.block`, `hooks.unblock`):
 * notifying, abuse reports, blocking upstream. Never on the hot path: a
 * decision only appends to a bounded queue; a few workers run the programs
 * (argument arrays, no shell) with the block's JSON on stdin, kill each
 * one's process group after `hooks.timeout`, and log what failed at a
 * bounded rate. What does not fit in the queue is dropped and counted.
 */
import { spawn } from 'node:child_process';
import { viewBlock, type Block, type BlockView } from './block.js';
import { describe } from './errors.js';
import { RateLimitedLog, type Logger } from './log.js';
import type { Metrics } from './metrics.js';

export type HookEvent = 'block' | 'unblock';

export interface HookOptions {
  readonly block: readonly string[] | null;
  readonly unblock: readonly string[] | null;
  readonly timeoutMs: number;
  readonly concurrency: number;
  readonly queue: number;
  /** Once per batch, a JSON array on stdin, instead of once per block. */
  readonly batch: boolean;
}

/** At most this many blocks in one batch run. */
const BATCH_MAX = 1000;
/** What is kept of a hook's stderr for the log. */
const STDERR_TAIL = 400;

interface Job {
  readonly event: HookEvent;
  /** Rendered when the hook runs: queuing costs a decision nothing. */
  readonly block: Block;
}

export class Hooks {
  private readonly queue: Job[] = [];
  private head = 0;
  private running = 0;
  private readonly failures: RateLimitedLog;
  private readonly children = new Set<number>();
  private closed = false;

  constructor(private readonly o: HookOptions, private readonly log: Logger, private readonly metrics: Metrics) {
    this.failures = new RateLimitedLog(log);
  }

  /** The hooks `hooks.*` configures, or null when no program is configured. */
  static fromConfig(
    h: { readonly block: readonly string[] | null; readonly unblock: readonly string[] | null; readonly timeout: number; readonly concurrency: number; readonly queue: number; readonly batch: boolean },
    log: Logger, metrics: Metrics,
  ): Hooks | null {
    if (!h.block && !h.unblock) return null;
    return new Hooks({ block: h.block, unblock: h.unblock, timeoutMs: h.timeout, concurrency: h.concurrency, queue: h.queue, batch: h.batch }, log.child({ component: 'hooks' }), metrics);
  }

  /** True when a program is configured for `event`. */
  has(event: HookEvent): boolean {
    return (event === 'block' ? this.o.block : this.o.unblock) !== null;
  }

  /** Queues a run for a block decided or lifted; O(1), never waits. */
  fire(event: HookEvent, block: Block): void {
    if (this.closed || !this.has(event)) return;
    if (this.queue.length - this.head >= this.o.queue) {
      this.metrics.hookRuns.inc(`${event}\tdropped`);
      this.failures.warn('queue', { event, queue: this.o.queue }, 'hook queue full: runs dropped (rated_hook_runs_total{outcome="dropped"} counts them)');
      return;
    }
    this.queue.push({ event, block });
    this.pump();
  }

  /** Runs waiting in the queue. */
  get pending(): number {
    return this.queue.length - this.head;
  }

  /** Stops taking runs and kills the ones in flight. */
  close(): void {
    this.closed = true;
    this.queue.length = 0;
    this.head = 0;
    for (const pid of this.children) killGroup(pid);
  }

  private pump(): void {
    while (this.running < this.o.concurrency && this.head < this.queue.length) {
      const first = this.queue[this.head] as Job;
      const jobs: Job[] = [];
      // A batch takes the run of queued jobs of the same event.
      while (this.head < this.queue.length && jobs.length < (this.o.batch ? BATCH_MAX : 1) && (this.queue[this.head] as Job).event === first.event) {
        jobs.push(this.queue[this.head] as Job);
        this.head++;
      }
      if (this.head > 4096 && this.head * 2 > this.queue.length) {
        this.queue.splice(0, this.head);
        this.head = 0;
      }
      this.running++;
      void this.run(first.event, jobs).finally(() => {
        this.running--;
        this.pump();
      });
    }
  }

  private async run(event: HookEvent, jobs: readonly Job[]): Promise<void> {
    const argv = (event === 'block' ? this.o.block : this.o.unblock) ?? [];
    const [file, ...args] = argv;
    if (file === undefined) return;
    const views: BlockView[] = jobs.map((j) => viewBlock(j.block));
    const one = views.length === 1 && !this.o.batch ? views[0] : undefined;
    const input = JSON.stringify(one ?? views);
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      RATED_EVENT: event,
      RATED_IP: one?.ip ?? '',
      RATED_RULE: one?.rule ?? '',
      RATED_COUNT: String(jobs.length),
    };
    const outcome = await new Promise<{ outcome: string; code: number | null; signal: string | null; stderr: string; err?: string }>((resolve) => {
      let stderr = '';
      let timedOut = false;
      const child = spawn(file, args, { env, stdio: ['pipe', 'ignore', 'pipe'], detached: true, shell: false });
      const pid = child.pid;
      if (pid !== undefined) this.children.add(pid);
      const timer = setTimeout(() => {
        timedOut = true;
        if (pid !== undefined) killGroup(pid);
      }, this.o.timeoutMs);
      child.stderr.on('data', (d: Buffer) => {
        stderr = (stderr + d.toString('utf8')).slice(-STDERR_TAIL);
      });
      // A hook that does not read its stdin must not fail the run.
      child.stdin.on('error', () => undefined);
      child.stdin.end(input);
      child.once('error', (err) => {
        clearTimeout(timer);
        if (pid !== undefined) this.children.delete(pid);
        resolve({ outcome: 'error', code: null, signal: null, stderr, err: describe(err) });
      });
      child.once('close', (code, signal) => {
        clearTimeout(timer);
        if (pid !== undefined) this.children.delete(pid);
        resolve({ outcome: timedOut ? 'timeout' : code === 0 ? 'ok' : 'failed', code, signal, stderr });
      });
    });
    this.metrics.hookRuns.inc(`${event}\t${outcome.outcome}`);
    const fields = {
      event, hook: file, ip: one?.ip, count: jobs.length, exitCode: outcome.code, signal: outcome.signal,
      stderr: outcome.stderr.trim() === '' ? undefined : outcome.stderr.trim(), err: outcome.err,
    };
    if (outcome.outcome === 'ok') { this.log.debug(fields, 'hook ran'); return; }
    const msg = outcome.outcome === 'timeout' ? `hook killed after ${this.o.timeoutMs} ms (hooks.timeout)`
      : outcome.outcome === 'error' ? 'hook could not be started' : 'hook failed';
    this.failures.warn(`${event}\t${outcome.outcome}`, fields, msg);
  }
}

function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // already gone
  }
}
