/**
 * Runs every subject `rounds` times, round-robin (each round starting one
 * subject further on), so that anything else loading the machine for a while
 * hits the subject and its baseline alike. Returns the runs of each subject.
 */
export async function interleave<T>(keys: readonly string[], rounds: number, run: (key: string, round: number) => Promise<T>): Promise<Map<string, T[]>> {
  const out = new Map<string, T[]>(keys.map((k) => [k, []]));
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < keys.length; i++) {
      const key = keys[(i + round) % keys.length] as string;
      (out.get(key) as T[]).push(await run(key, round));
    }
  }
  return out;
}

/** The median of a non-empty list. */
export function median(values: readonly number[]): number {
  if (values.length === 0) throw new Error('median of nothing');
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

/** "min–max over N runs", or "" for a single run. */
export function spread(values: readonly number[], format: (n: number) => string = (n) => Math.round(n).toLocaleString('en-US')): string {
  if (values.length < 2) return '';
  return `${format(Math.min(...values))}–${format(Math.max(...values))} over ${values.length} runs`;
}
