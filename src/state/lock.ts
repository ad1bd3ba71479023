import { closeSync, openSync, readFileSync, unlinkSync, writeSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { RatedError } from '../errors.js';

/**
 * One daemon per state directory: a pid file created exclusively. A lock
 * left by a process that no longer runs is taken over.
 */
export class StateLock {
  private readonly path: string;
  private held = false;

  constructor(dir: string) {
    this.path = join(dir, 'rated.pid');
  }

  acquire(): void {
    mkdirSync(join(this.path, '..'), { recursive: true, mode: 0o750 });
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = openSync(this.path, 'wx', 0o640);
        writeSync(fd, `${process.pid}\n`);
        closeSync(fd);
        this.held = true;
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const pid = this.owner();
      if (pid !== null && pid !== process.pid && isRunning(pid)) {
        throw new RatedError('ALREADY_RUNNING', `another rated (pid ${pid}) already uses ${join(this.path, '..')}; stop it first, or give this one another state.dir`);
      }
      try {
        unlinkSync(this.path);
      } catch {
        // raced with another starter; the next attempt decides
      }
    }
    throw new RatedError('ALREADY_RUNNING', `cannot take the lock ${this.path}`);
  }

  release(): void {
    if (!this.held) return;
    this.held = false;
    try {
      if (this.owner() === process.pid) unlinkSync(this.path);
    } catch {
      // already gone
    }
  }

  private owner(): number | null {
    try {
      const pid = Number(readFileSync(this.path, 'utf8').trim());
      return Number.isSafeInteger(pid) && pid > 0 ? pid : null;
    } catch {
      return null;
    }
  }
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
