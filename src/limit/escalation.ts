/** How repeat offenders' blocks grow (SPEC §3 `escalation`). */
export interface Escalation {
  /** Each block within `memoryMs` of the previous one lasts this many times longer. @default 2 */
  readonly factor: number;
  /** Escalated blocks last at most this long, in milliseconds. @default 604800000 (7d) */
  readonly maxMs: number;
  /** How long an offence is remembered after its block started, in milliseconds; 0 disables escalation. @default 604800000 (7d) */
  readonly memoryMs: number;
}

/** A client's offence history: how many blocks in a row, and when the last one started. */
export interface Offence {
  /** Blocks so far, each within memory of the one before; 1 for a first offence. */
  readonly count: number;
  /** Wall-clock time (ms since the epoch) of the last block. */
  readonly lastAt: number;
}

/**
 * The offence history after a new block at wall-clock `now`: one more than
 * before while the previous block is remembered (`now − lastAt < memoryMs`),
 * else a first offence.
 */
export function nextOffence(prev: Offence | undefined, now: number, memoryMs: number): Offence {
  if (prev === undefined || !remembered(prev, now, memoryMs)) return { count: 1, lastAt: now };
  return { count: prev.count + 1, lastAt: now };
}

/** True while an offence still counts towards escalation at wall-clock `now`. */
export function remembered(offence: Offence, now: number, memoryMs: number): boolean {
  return now - offence.lastAt < memoryMs;
}

/**
 * How long the block of this offence lasts: base · factor^(count − 1), capped
 * at `maxMs`, but never shorter than the rule's own `baseMs` even when the
 * cap is below it. Rounded to whole milliseconds.
 */
export function blockDuration(baseMs: number, offence: Offence, esc: Escalation): number {
  const escalated = baseMs * esc.factor ** Math.max(0, offence.count - 1);
  return Math.max(baseMs, Math.round(Math.min(escalated, esc.maxMs)));
}
