const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };
const DURATION = /^(\d{1,9})(ms|s|m|h|d|w)?$/;

/**
 * The longest duration accepted anywhere: ten years. Longer ones would give
 * times a Date cannot hold (`999999999w`) and kernel timeouts nft refuses.
 */
export const MAX_DURATION_MS = 3650 * 86_400_000;

/** Parses `90s`, `10m`, `6h`, `1d` or plain seconds into milliseconds; null when invalid or longer than MAX_DURATION_MS. */
export function parseDuration(input: string | number): number | null {
  let ms: number;
  if (typeof input === 'number') {
    if (!Number.isSafeInteger(input) || input < 0) return null;
    ms = input * 1000;
  } else {
    const m = DURATION.exec(input.trim());
    if (!m) return null;
    ms = Number(m[1]) * (UNITS[m[2] ?? 's'] ?? 1000);
  }
  return ms <= MAX_DURATION_MS ? ms : null;
}

/** Formats milliseconds as the shortest exact duration: `120s`, `6h`, `1d`, `90m`. */
export function formatDuration(ms: number): string {
  for (const unit of ['w', 'd', 'h', 'm', 's'] as const) {
    const size = UNITS[unit] ?? 1;
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

/**
 * Formats a span of time for people and logs, to the second: `10m` for a
 * block adopted with 599,913 ms left as for one of ten minutes made here;
 * `1h30m` or `59m59s` where no single unit is exact.
 */
export function formatSpan(ms: number): string {
  let s = Math.max(0, Math.round(ms / 1000));
  if (s === 0) return '0s';
  const whole = formatDuration(s * 1000);
  if (!whole.endsWith('s') || s < 120) return whole;
  let out = '';
  for (const [unit, size] of [['d', 86_400], ['h', 3_600], ['m', 60], ['s', 1]] as const) {
    if (s >= size) {
      out += `${Math.floor(s / size)}${unit}`;
      s %= size;
    }
  }
  return out;
}
