import type { Network } from '../address.js';

/** One request nginx told us about: the validated client address and what rules may match on. */
export interface Hit {
  readonly ip: Network;
  readonly method?: string;
  readonly status?: number;
  readonly host?: string;
  readonly uri?: string;
  /** Arrival time on the monotonic clock, in milliseconds. */
  readonly at: number;
}

/** Where receivers deliver hits; returns whether the hit was counted or why not. */
export type HitSink = (hit: Hit) => string;

const METHOD = /^[A-Z]{1,16}$/;

/** Reads an HTTP status code field; undefined when absent or not a status. */
export function parseStatus(text: string | undefined): number | undefined {
  if (text === undefined || text.length !== 3) return undefined;
  const n = Number(text);
  return Number.isInteger(n) && n >= 100 && n <= 599 ? n : undefined;
}

/** Reads a request method field; undefined when absent or not a method. */
export function parseMethod(text: string | undefined): string | undefined {
  return text !== undefined && METHOD.test(text) ? text : undefined;
}

/** Bounds a free-text field (host, uri) so a hostile value costs little. */
export function boundField(text: string | undefined, max = 2048): string | undefined {
  if (text === undefined || text === '') return undefined;
  return text.length > max ? text.slice(0, max) : text;
}
