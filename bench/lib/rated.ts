import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { callApi } from '../../src/control/client.js';
import type { Namespace } from '../../test/helpers/netns.js';
import { spawnProc, type Proc } from './proc.js';

/** The checkout's root and the launcher users run (it loads the built dist/). */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const BIN = join(ROOT, 'bin', 'rated');

export interface RatedRule {
  readonly name: string;
  readonly limit: number;
  readonly window: string;
  readonly block: string;
  /** The rule's `match` (path, methods, status, host); every notification when absent. */
  readonly match?: Readonly<Record<string, unknown>>;
}

export interface RatedSetup {
  readonly namespace: Namespace;
  readonly scratch: string;
  readonly cpus: string | null;
  /** Port of the HTTP receiver on 127.0.0.1, or null to disable it. */
  readonly http?: number | null;
  /** Port of the UDP receiver on 127.0.0.1, or null to disable it. */
  readonly udp?: number | null;
  /** Access logs to follow. */
  readonly files?: readonly string[];
  readonly rules: readonly RatedRule[];
  /** nftables table name (default rated); daemons sharing a namespace need one each. */
  readonly table?: string;
  /** More arguments for `rated run`, e.g. `--dry-run`. */
  readonly args?: readonly string[];
  /** Directory for the configuration, control socket and state; a new one under `scratch` when absent. Reusing one keeps the journal. */
  readonly dir?: string;
  /** How long to wait for the `rated started` line (default 30 s). */
  readonly startTimeoutMs?: number;
  /** More top-level configuration keys (`tracking`, `redis`, `ipv6Prefix`…), written as they are. */
  readonly config?: Readonly<Record<string, unknown>>;
}

/** One receiver's counters in `GET /status`. */
export interface ReceiverStatus {
  readonly received: number;
  readonly rejected: number;
  readonly ignored: number;
  readonly [key: string]: unknown;
}

/** The parts of `GET /status` the benchmark reads. */
export interface RatedStatus {
  readonly receivers: { readonly http: ReceiverStatus | null; readonly udp?: ReceiverStatus | null; readonly files?: ReceiverStatus | null };
  readonly trackedClients: number;
  readonly activeBlocks: number;
  readonly firewall: { readonly batches: number; readonly elements: number; readonly refused: number };
  readonly [key: string]: unknown;
}

/** A daemon started for a benchmark. */
export interface BenchRated {
  readonly proc: Proc;
  readonly socket: string;
  /** The fields of its `rated started` line. */
  readonly started: Record<string, unknown>;
  status(): Promise<RatedStatus>;
  stop(): Promise<void>;
}

/** Writes a configuration file for one benchmark daemon; returns its path. */
export function writeRatedConfig(dir: string, s: Omit<RatedSetup, 'namespace' | 'cpus' | 'scratch' | 'args' | 'dir'>): string {
  const path = join(dir, 'rated.yml');
  const lines = [
    'receivers:',
    `  http: ${s.http ? `{ address: 127.0.0.1, port: ${s.http} }` : 'null'}`,
    `  udp: ${s.udp ? `{ address: 127.0.0.1, port: ${s.udp} }` : 'null'}`,
    `  files: [${(s.files ?? []).map((f) => JSON.stringify(f)).join(', ')}]`,
    'rules:',
    ...s.rules.map((r) => `  - { name: ${r.name}, limit: ${r.limit}, window: ${r.window}, block: ${r.block}${r.match ? `, match: ${JSON.stringify(r.match)}` : ''} }`),
    // A `firewall` of the caller's replaces this one.
    ...(s.config?.firewall === undefined ? [`firewall: { table: ${s.table ?? 'rated'} }`] : []),
    `control: { socket: ${JSON.stringify(join(dir, 'rated.sock'))} }`,
    `state: { dir: ${JSON.stringify(join(dir, 'state'))} }`,
    'log: { level: info }',
    // JSON is YAML flow syntax.
    ...Object.entries(s.config ?? {}).map(([key, value]) => `${key}: ${JSON.stringify(value)}`),
    '',
  ];
  writeFileSync(path, lines.join('\n'));
  return path;
}

/** Starts the built daemon (`bin/rated run`) in the namespace and waits for its `rated started` line. */
export async function startBenchRated(s: RatedSetup): Promise<BenchRated> {
  const dir = s.dir ?? mkdtempSync(join(s.scratch, 'rated-'));
  mkdirSync(join(dir, 'state'), { recursive: true, mode: 0o750 });
  const config = writeRatedConfig(dir, s);
  const socket = join(dir, 'rated.sock');
  const logFile = join(dir, 'rated.log');
  writeFileSync(logFile, '');
  const proc = spawnProc([process.execPath, BIN, 'run', '-c', config, '--socket', socket, ...(s.args ?? [])], {
    name: 'rated', namespace: s.namespace, cpus: s.cpus, logFile, cwd: ROOT,
  });
  let started: Record<string, unknown>;
  try {
    const t0 = performance.now();
    started = JSON.parse(await proc.waitForOutput(/"msg":"rated started/, s.startTimeoutMs ?? 30_000)) as Record<string, unknown>;
    started.startedMs = performance.now() - t0;
    // The reconcile with the kernel runs behind the receivers; a bench measures a daemon that is done with it.
    const reconciled = JSON.parse(await proc.waitForOutput(/"msg":"reconcile/, s.startTimeoutMs ?? 30_000)) as Record<string, unknown>;
    started = { ...started, adopted: reconciled.adopted, restored: reconciled.restored, reconcileMs: reconciled.reconcileMs, reconciledAfterMs: performance.now() - t0 };
  } catch (err) {
    await proc.stop();
    throw err;
  }
  return {
    proc,
    socket,
    started,
    async status() {
      const r = await callApi(socket, 'GET', '/status', undefined, 10_000);
      if (r.status !== 200) throw new Error(`rated status answered ${r.status}: ${r.text}`);
      return r.body as RatedStatus;
    },
    stop: () => proc.stop({ graceMs: 10_000 }),
  };
}

/** Notifications a receiver took in: accepted, rejected and ignored ones. */
export function arrived(r: ReceiverStatus | null | undefined): number {
  return r ? r.received + r.rejected + r.ignored : 0;
}
