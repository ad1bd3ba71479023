/**
 * Sliding-window counting with sub-buckets, over compact `Uint32Array` state.
 *
 * A window of length W is cut into B buckets of W/B. A client's state for
 * one rule is B + 2 unsigned 32-bit slots at some offset in a larger array:
 *
 * ```text
 * [ newest bucket index | count of bucket j mod (B+1), for the B+1 newest buckets ]
 * ```
 *
 * At time t, in bucket i = floor(t·B/W), the count is the sum of bucket i
 * (partial) and the B full buckets before it: every hit since the start of
 * bucket i − B, which is a span of at least W and less than W·(1 + 1/B).
 *
 * **Error bound** (B = 10, the default):
 * - It never undercounts: every hit of the last W is in the count, so a burst
 *   of limit + 1 hits within one window is always caught, on its last hit,
 *   wherever the burst falls relative to bucket boundaries.
 * - It overcounts by at most the hits of one extra bucket, W/B: the count
 *   spans less than 1.1·W, so a steady rate below limit/(1.1·W) (about
 *   90.9% of limit/W, so in particular any rate under 90%) puts at most
 *   limit hits in it and is never blocked. At exactly 90% the count is at
 *   most floor(0.99·limit) + 1 ≤ limit.
 *
 * Times are monotonic milliseconds (`performance.now()`), may start at 0 and
 * may be fractional. A hit older than the newest bucket (a receiver delivering
 * slightly out of order) is counted in the newest bucket: later, never lost.
 * The newest-bucket index is stored modulo a multiple of B + 1 that fits 32
 * bits; a client idle for more than about 2^31 buckets (6.8 years with a 1 s
 * window, 800 years with 120 s) may keep stale counts, an overcount only.
 */

/** The shape of one rule's window: its length, its buckets and the state layout they need. */
export class WindowSpec {
  /** Window length in milliseconds. */
  readonly windowMs: number;
  /** Number of full buckets the window is cut into (B). @default 10 */
  readonly buckets: number;
  /** Ring length: B + 1 buckets (B full ones and the current partial one). */
  readonly ring: number;
  /** State slots one rule needs: the newest-bucket index and the ring. */
  readonly stride: number;
  /** Modulus of the stored bucket index: the largest multiple of `ring` that fits 32 bits. */
  readonly modulus: number;

  constructor(windowMs: number, buckets = 10) {
    if (!(Number.isFinite(windowMs) && windowMs > 0)) {
      throw new RangeError(`windowMs must be a positive number of milliseconds, got ${windowMs}`);
    }
    if (!(Number.isInteger(buckets) && buckets >= 1 && buckets <= 1000)) {
      throw new RangeError(`buckets must be an integer from 1 to 1000, got ${buckets}`);
    }
    this.windowMs = windowMs;
    this.buckets = buckets;
    this.ring = buckets + 1;
    this.stride = buckets + 2;
    this.modulus = this.ring * Math.floor(0x1_0000_0000 / this.ring);
  }

  /** The stored index of the bucket holding time `nowMs`. */
  bucketOf(nowMs: number): number {
    // t·B/W rather than t/(W/B): with integer times and windows this floor is
    // exact, so a burst spanning exactly W is still inside the count.
    const i = Math.floor((nowMs * this.buckets) / this.windowMs) % this.modulus;
    return i < 0 ? i + this.modulus : i;
  }
}

/** How many buckets `now` is ahead of `newest`; negative when it is behind. */
function ahead(spec: WindowSpec, newest: number, now: number): number {
  const d = (now - newest + spec.modulus) % spec.modulus;
  return d > spec.modulus / 2 ? d - spec.modulus : d;
}

/**
 * Counts one hit at `nowMs` in the rule state at `offset` and returns the
 * count of the window after it (see the module comment for the error bound).
 */
export function add(state: Uint32Array, offset: number, spec: WindowSpec, nowMs: number): number {
  const now = spec.bucketOf(nowMs);
  const newest = state[offset] ?? 0;
  const ring = spec.ring;
  const base = offset + 1;
  let d = ahead(spec, newest, now);
  if (d > 0) {
    if (d >= ring) {
      state.fill(0, base, base + ring);
    } else {
      // Clear the buckets the clock moved past; they now stand for new buckets.
      for (let j = newest + 1; d > 0; j++, d--) state[base + (j % ring)] = 0;
    }
    state[offset] = now;
  } else if (d < 0 && isEmpty(state, base, ring)) {
    // A fresh or reset state has no newest bucket to be behind of.
    state[offset] = now;
  }
  const slot = base + ((state[offset] ?? 0) % ring);
  const c = state[slot] ?? 0;
  if (c !== 0xffffffff) state[slot] = c + 1;
  let sum = 0;
  for (let k = base; k < base + ring; k++) sum += state[k] ?? 0;
  return sum;
}

/** The count of the window at `nowMs`, without counting a hit. */
export function count(state: Uint32Array, offset: number, spec: WindowSpec, nowMs: number): number {
  const newest = state[offset] ?? 0;
  const ring = spec.ring;
  const base = offset + 1;
  const d = Math.max(0, ahead(spec, newest, spec.bucketOf(nowMs)));
  if (d >= ring) return 0;
  // Buckets newest−B … newest are held; the d oldest of them have left the window.
  let sum = 0;
  for (let j = newest - spec.buckets + d; j <= newest; j++) {
    // The modulus is a multiple of the ring, so j mod ring is the slot even across the wrap.
    sum += state[base + (((j % ring) + ring) % ring)] ?? 0;
  }
  return sum;
}

function isEmpty(state: Uint32Array, from: number, length: number): boolean {
  for (let k = from; k < from + length; k++) if (state[k] !== 0) return false;
  return true;
}

/** Clears the rule state at `offset`: the window starts empty. */
export function reset(state: Uint32Array, offset: number, spec: WindowSpec): void {
  state.fill(0, offset, offset + spec.stride);
}
