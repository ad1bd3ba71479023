import type { Namespace } from './netns.js';

/** The elements of one nft set listing (`nft -j list set`), as `addr` or `addr/len`, sorted. */
export function setElements(listing: string): string[] {
  const doc = JSON.parse(listing) as { nftables?: Array<{ set?: { elem?: unknown[] } }> };
  const out: string[] = [];
  for (const item of doc.nftables ?? []) {
    for (const raw of item.set?.elem ?? []) {
      const e = (raw as { elem?: { val: unknown } }).elem;
      const val = e ? e.val : raw;
      if (typeof val === 'string') out.push(val);
      else {
        const p = (val as { prefix?: { addr: string; len: number } }).prefix;
        if (p) out.push(`${p.addr}/${p.len}`);
      }
    }
  }
  return out.sort();
}

/** Elements with their kernel timeout and remaining time, in seconds. */
export function setEntries(listing: string): Array<{ val: string; timeout: number | null; expires: number | null }> {
  const doc = JSON.parse(listing) as { nftables?: Array<{ set?: { elem?: unknown[] } }> };
  const out: Array<{ val: string; timeout: number | null; expires: number | null }> = [];
  for (const item of doc.nftables ?? []) {
    for (const raw of item.set?.elem ?? []) {
      const e = (raw as { elem?: { val: unknown; timeout?: number; expires?: number } }).elem;
      const val = e ? e.val : raw;
      const text = typeof val === 'string' ? val : `${(val as { prefix: { addr: string } }).prefix.addr}/${(val as { prefix: { len: number } }).prefix.len}`;
      out.push({ val: text, timeout: e?.timeout ?? null, expires: e?.expires ?? null });
    }
  }
  return out;
}

/** One element of rated's sets as a block: `addr`, `addr/len`, IPv6 clients of hash set v6 as `net/ipv6Prefix`. */
export interface KernelElement {
  readonly set: 'v4' | 'v6' | 'v4net' | 'v6net';
  readonly text: string;
  readonly timeout: number | null;
  readonly expires: number | null;
}

/** Every element of rated's four sets in `table` (SPEC §5), read from the kernel; a missing set holds nothing. */
export async function kernelElements(ns: Namespace, table = 'rated', ipv6Prefix = 64): Promise<KernelElement[]> {
  const out: KernelElement[] = [];
  for (const set of ['v4', 'v6', 'v4net', 'v6net'] as const) {
    const r = await ns.exec('nft', ['-j', 'list', 'set', 'inet', table, set]);
    if (r.exitCode !== 0) continue;
    for (const e of setEntries(r.stdout)) out.push({ set, text: set === 'v6' ? `${e.val}/${ipv6Prefix}` : e.val, timeout: e.timeout, expires: e.expires });
  }
  return out;
}

/** What rated's sets in `table` block, by family, read from the kernel. */
export async function kernelSets(ns: Namespace, table = 'rated'): Promise<{ v4: string[]; v6: string[] }> {
  const all = await kernelElements(ns, table);
  const of = (family: string): string[] => all.filter((e) => e.set.startsWith(family)).map((e) => e.text).sort();
  return { v4: of('v4'), v6: of('v6') };
}

/** Prometheus text into `name{labels}` → value. */
export function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    out.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return out;
}
