import { readFile } from 'node:fs/promises';
import { parseBlockDuration, type BatchResult, type BlockView, type ManualBlock } from '../../block.js';
import { RatedError } from '../../errors.js';
import { FORMATS, ImportReader, type ImportSource } from '../../import/sources.js';
import { api, daemonOrKernel, out, type GlobalArgs } from '../context.js';

/** Entries per request to the daemon: one batch for the kernel each, and a bounded body. */
const BATCH = 10_000;

export type ImportArgs = GlobalArgs & {
  files: string[];
  format?: (typeof FORMATS)[number];
  for?: string;
  reason?: string;
  dryRun?: boolean;
  json?: boolean;
};

/**
 * `rated import`: blocklists, fail2ban's database, CrowdSec decisions and
 * rated's own export become manual blocks, through the daemon or, when it is
 * down, the kernel and the journal. Every entry is judged as `rated block`
 * judges one; counts per outcome are printed.
 */
export async function importCommand(args: ImportArgs): Promise<void> {
  const files = args.files;
  if (files.length === 0) throw new RatedError('USAGE', 'name at least one FILE (or - for stdin)');
  if (files.filter((f) => f === '-').length > 1) throw new RatedError('USAGE', 'stdin (-) can be read only once');
  const format = args.format ?? 'auto';
  if (!(FORMATS as readonly string[]).includes(format)) throw new RatedError('USAGE', `--format: expected one of ${FORMATS.join(', ')}, got ${JSON.stringify(format)}`);
  if (args.for !== undefined) parseBlockDuration(args.for);
  const reader = new ImportReader({ now: Date.now(), ...(args.reason === undefined ? {} : { reason: args.reason }) });
  // Every file is read before anything is blocked: a bad one changes nothing.
  for (const name of files) await reader.read(await readSource(name), format);
  const entries = reader.entries();
  const blocks: ManualBlock[] = entries.map((e) => ({ ip: e.ip, reason: e.reason, ...(e.seconds !== null ? { for: e.seconds } : args.for !== undefined ? { for: args.for } : {}) }));
  const dryRun = args.dryRun ?? false;
  const result = await blockAll(args, blocks, 'manual', dryRun);
  const read = reader.result;
  if (args.json) {
    const { refusedIps: _, ...counted } = result;
    out(JSON.stringify({ read: entries.length, duplicates: read.duplicates, skipped: read.skipped, dryRun, ...counted }, null, 2));
    return;
  }
  out(`read ${entries.length} address${entries.length === 1 ? '' : 'es'} from ${files.length} source${files.length === 1 ? '' : 's'}${read.duplicates > 0 ? ` (${read.duplicates} repeated, merged)` : ''}`);
  printBatch(result, dryRun);
  const skipped = counts(read.skipped);
  if (skipped !== null) out(`skipped ${skipped}`);
  for (const e of read.examples) out(`  ${e}`);
}

/** Sends manual blocks in batches to the daemon, or decides them with the daemon's parts while it is down. */
export async function blockAll(args: GlobalArgs, blocks: readonly ManualBlock[], source: 'manual' | 'migrated', dryRun: boolean): Promise<BatchResult> {
  const total: BatchResult = { added: 0, extended: 0, unchanged: 0, refused: {}, examples: [], refusedIps: [] };
  const add = (r: BatchResult): void => {
    total.added += r.added;
    total.extended += r.extended;
    total.unchanged += r.unchanged;
    for (const [why, n] of Object.entries(r.refused)) total.refused[why] = (total.refused[why] ?? 0) + n;
    for (const e of r.examples) if (total.examples.length < 5) total.examples.push(e);
    total.refusedIps.push(...r.refusedIps);
  };
  const chunks: ManualBlock[][] = [];
  for (let i = 0; i < blocks.length; i += BATCH) chunks.push(blocks.slice(i, i + BATCH));
  await daemonOrKernel<undefined>(
    args,
    async () => {
      const send = async (chunk: ManualBlock[]): Promise<void> => {
        add((await api(args, 'POST', '/blocks/batch', { blocks: chunk, source, dryRun })).body as BatchResult);
      };
      // The first batch tells whether the daemon is up; after it two are in
      // flight, so the daemon reads one while the kernel takes the other.
      const [first, ...rest] = chunks;
      if (first) await send(first);
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < rest.length) await send(rest[next++] as ManualBlock[]);
      };
      try {
        await Promise.all([worker(), worker()]);
      } catch (err) {
        throw new RatedError('DAEMON_UNREACHABLE', `${(err as Error).message} (after about ${next * BATCH} of ${blocks.length} entries: run the same command again, nothing is blocked twice)`, { cause: err });
      }
      return undefined;
    },
    async (config) => (await import('../offline.js')).offline(config, true, async (op) => {
      for (const c of chunks) add(await op.blockMany(c, source, dryRun));
      return undefined;
    }),
  );
  return total;
}

/** Prints what a batch did (or would do). */
export function printBatch(r: BatchResult, dryRun: boolean): void {
  const blocked = r.added + r.extended;
  out(`${dryRun ? 'would block' : 'blocked'} ${blocked} (${r.added} new, ${r.extended} extended); ${r.unchanged} already blocked as long or longer`);
  const refused = counts(r.refused);
  if (refused !== null) out(`refused ${refused}`);
  for (const e of r.examples) out(`  ${e}`);
}

/** `7: allow-listed 3, invalid 4`, or null for none. */
function counts(by: Record<string, number>): string | null {
  const entries = Object.entries(by).filter(([, n]) => n > 0);
  if (entries.length === 0) return null;
  const total = entries.reduce((sum, [, n]) => sum + n, 0);
  return `${total}: ${entries.map(([why, n]) => `${why} ${n}`).join(', ')}`;
}

/** A file's bytes (stdin for `-`); an unreadable one is a usage error naming it. */
async function readSource(name: string): Promise<ImportSource> {
  try {
    if (name !== '-') return { name, bytes: await readFile(name) };
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    return { name, bytes: Buffer.concat(chunks) };
  } catch (err) {
    throw new RatedError('USAGE', `${name === '-' ? 'stdin' : name}: cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
}

/** `rated export`: the active blocks, one address per line (with what they are as a comment) or as JSON (SPEC §6). */
export async function exportCommand(args: GlobalArgs & { format?: 'list' | 'json' }): Promise<void> {
  const { blockViews } = await import('./blocks.js');
  const format = args.format ?? 'list';
  const written = { any: false };
  const write = (v: BlockView): void => {
    if (format === 'json') {
      process.stdout.write(`${written.any ? ',\n' : '[\n'}${JSON.stringify(v)}`);
    } else {
      const what = [v.expires === null ? 'no expiry' : `until ${v.expires}`, v.source, v.rule, v.reason].filter((x) => x !== null && x !== '').join(', ');
      out(`${v.ip} # ${what.replace(/[\r\n]/g, ' ')}`);
    }
    written.any = true;
  };
  for (const v of (await blockViews(args, {}, write)) ?? []) write(v);
  if (format === 'json') process.stdout.write(written.any ? '\n]\n' : '[]\n');
}

export type MigrateArgs = GlobalArgs & { from: string; for?: string; dryRun?: boolean; yes?: boolean };

/**
 * `rated migrate iptables`: the 2014 rated's per-address rules become
 * blocks (`source: migrated`). The blocks reach the kernel first; only then
 * are the rules of the addresses now blocked removed, with one
 * `iptables-restore --noflush` per tool. Refused addresses keep their rules.
 */
export async function migrate(args: MigrateArgs): Promise<void> {
  if (args.from !== 'iptables') throw new RatedError('USAGE', `migrate: expected "iptables" (the rated of 2014's rules), got ${JSON.stringify(args.from)}`);
  if (args.for !== undefined) parseBlockDuration(args.for);
  const { createRunner } = await import('../../run-command.js');
  const { readFootprint, removeRules, toolsOnPath } = await import('../../import/iptables.js');
  const run = createRunner({ timeoutMs: 120_000 });
  const found = await readFootprint(run, toolsOnPath());
  for (const u of found.unreadable) out(`not read: ${u}`);
  const ips = [...new Set(found.rules.map((r) => r.ip))];
  const leftAlone = (): void => {
    if (found.leftAlone.length === 0) return;
    out(`left alone: ${found.leftAlone.length} other rule${found.leftAlone.length === 1 ? '' : 's'} in INPUT/OUTPUT (not a plain per-address DROP or REJECT)`);
    for (const r of found.leftAlone.slice(0, 10)) out(`  ${r.tool.name}: ${r.spec}`);
    if (found.leftAlone.length > 10) out(`  … and ${found.leftAlone.length - 10} more`);
  };
  if (ips.length === 0) {
    out('nothing to migrate: no plain per-address DROP or REJECT rules in INPUT/OUTPUT');
    leftAlone();
    return;
  }
  const blocks: ManualBlock[] = ips.map((ip) => ({ ip, reason: 'migrated from iptables', ...(args.for === undefined ? {} : { for: args.for }) }));
  const plan = `${ips.length} address${ips.length === 1 ? '' : 'es'} from ${found.rules.length} rule${found.rules.length === 1 ? '' : 's'}`;
  if (args.dryRun) {
    out(`would migrate ${plan}`);
    printBatch(await blockAll(args, blocks, 'migrated', true), true);
    leftAlone();
    return;
  }
  if (!args.yes) {
    if (!process.stdin.isTTY) throw new RatedError('USAGE', `migrate moves ${plan} into rated's blocks: add --yes to confirm (or --dry-run to see the plan)`);
    const { createInterface } = await import('node:readline/promises');
    const rl = createInterface({ input: process.stdin, output: process.stderr });
    const answer = await rl.question(`Move ${plan} into rated's blocks and remove the rules? [y/N] `);
    rl.close();
    if (!/^y(es)?$/i.test(answer.trim())) { out('nothing changed'); return; }
  }
  // The blocks first, in the kernel; then the rules of what is blocked now.
  const result = await blockAll(args, blocks, 'migrated', false);
  const refused = new Set(result.refusedIps);
  const removable = found.rules.filter((r) => !refused.has(r.ip));
  await removeRules(run, removable);
  out(`migrated ${ips.length - refused.size} address${ips.length - refused.size === 1 ? '' : 'es'}: ${removable.length} rule${removable.length === 1 ? '' : 's'} removed`);
  printBatch(result, false);
  if (refused.size > 0) out(`the rules of the ${refused.size} refused address${refused.size === 1 ? '' : 'es'} are left in place`);
  leftAlone();
}
