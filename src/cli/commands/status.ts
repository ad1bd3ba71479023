import { DaemonDown } from '../../control/client.js';
import { RatedError } from '../../errors.js';
import { VERSION } from '../../version.js';
import { api, out, type GlobalArgs } from '../context.js';
import { remaining } from '../format.js';

/** `rated status`: whether the daemon is up, and what it is doing. */
export async function status(args: GlobalArgs & { json?: boolean }): Promise<void> {
  let s: Record<string, unknown>;
  try {
    s = (await api(args, 'GET', '/status')).body as Record<string, unknown>;
  } catch (err) {
    if (!(err instanceof DaemonDown)) throw err;
    if (args.json) out(JSON.stringify({ status: 'down', version: VERSION, error: err.message }, null, 2));
    else out(`rated is down: ${err.message}`);
    throw new RatedError('DAEMON_UNREACHABLE', 'rated is not running', { cause: err });
  }
  if (args.json) { out(JSON.stringify(s, null, 2)); return; }
  const receivers = s.receivers as Record<string, Record<string, unknown> | null>;
  const fw = s.firewall as Record<string, number>;
  const errors = s.lastErrors as Array<{ at: string; error: string }>;
  out(`rated ${String(s.version)} is up (pid ${String(s.pid)}, ${remaining(Number(s.uptime) * 1000)} uptime)`);
  out(`config:          ${String(s.config)}`);
  out(`backend:         ${String(s.backend)}${typeof s.table === 'string' ? ` (table ${s.table})` : ''}`);
  for (const [name, r] of Object.entries(receivers)) {
    if (!r) continue;
    const drops = typeof r.drops === 'number' ? `, ${r.drops} datagrams lost` : '';
    out(`receiver ${name.padEnd(7)} ${String(r.listen)}: ${String(r.received)} received, ${String(r.rejected)} rejected, ${String(r.ignored)} ignored, ${String(r.perSecond)}/s${drops}`);
    if (Array.isArray(r.files)) {
      for (const f of r.files as Array<{ path: string; state: string; error: string | null }>) {
        out(`  ${f.path}: ${f.state}${f.error ? ` (${f.error})` : ''}`);
      }
    }
  }
  out(`tracked clients: ${String(s.trackedClients)}`);
  out(`active blocks:   ${String(s.activeBlocks)}`);
  out(`dropped:         ${droppedLine(s.dropped, s.droppedPackets)}`);
  out(`firewall:        ${fw.batches} batches, ${fw.elements} changes, ${fw.refused} refused, ${fw.driftRepairs} drift repairs`);
  out(`redis:           ${redisLine(s.redis)}`);
  out(`last errors:     ${errors.length === 0 ? 'none' : ''}`);
  for (const e of errors) out(`  ${e.at}  ${e.error}`);
}

/** The traffic the blocks dropped, per family, from the rule counters. */
function droppedLine(dropped: unknown, packets: unknown): string {
  const d = dropped as { ipv4?: { packets: number; bytes: number }; ipv6?: { packets: number; bytes: number } } | null | undefined;
  if (!d?.ipv4 || !d.ipv6) return typeof packets === 'number' ? `${packets} packets` : 'not counted (yet)';
  const one = (t: { packets: number; bytes: number }): string => `${t.packets} packets, ${t.bytes} bytes`;
  return `IPv4 ${one(d.ipv4)}; IPv6 ${one(d.ipv6)}`;
}

/** One line for people: where Redis is, whether it answers, and what sharing did. */
function redisLine(r: unknown): string {
  if (r === null || typeof r !== 'object') return 'not configured';
  const x = r as {
    mode?: string; url?: string | string[]; up?: boolean; since?: string; lastError?: string | null;
    counting?: { hits?: number; failed?: number; skipped?: number };
    blocks?: { published?: number; adopted?: number; refused?: number };
  };
  const where = Array.isArray(x.url) ? x.url.join(', ') : String(x.url);
  const state = x.up ? `up since ${String(x.since)}` : `DOWN since ${String(x.since)}, counting locally${x.lastError ? ` (${x.lastError})` : ''}`;
  const c = x.counting ?? {};
  const b = x.blocks ?? {};
  return `${String(x.mode)} ${where}: ${state}; ${c.hits ?? 0} hits shared, ${c.skipped ?? 0} local only; `
    + `${b.published ?? 0} blocks shared, ${b.adopted ?? 0} adopted, ${b.refused ?? 0} refused`;
}
