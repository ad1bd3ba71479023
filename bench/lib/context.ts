import { fileURLToPath } from 'node:url';
import { createRunner, type CommandResult, type Runner } from '../../src/run-command.js';
import type { Namespace } from '../../test/helpers/netns.js';
import type { Results } from './results.js';

/** What every scenario gets from the runner. */
export interface BenchContext {
  /** Shorter loads and smaller sizes (`--quick`). */
  readonly quick: boolean;
  /** Length of one measured load, in seconds. */
  readonly seconds: number;
  /** How many times each load is measured, alternating between subject and baseline; figures are medians. */
  readonly rounds: number;
  /** Length of the load that warms a server up before it is measured, in seconds. */
  readonly warmupSeconds: number;
  /** CPUs for the servers under test and for the load generators; null leaves placement to the scheduler. */
  readonly cpus: { readonly server: string | null; readonly load: string | null };
  /** A scratch directory for this run, removed at the end. */
  readonly scratch: string;
  readonly results: Results;
  /** Prints a progress line. */
  log(line: string): void;
}

/** One benchmark scenario: measures rated and its baselines in the same run. */
export interface Scenario {
  readonly name: string;
  readonly title: string;
  /** Tools that must be on PATH; the scenario is skipped, saying why, when one is missing. */
  readonly tools: readonly string[];
  /** True when it needs root (network namespaces, firewall). */
  readonly root: boolean;
  run(ctx: BenchContext): Promise<void>;
}

/** bench/tools/NAME. */
export function tool(name: string): string {
  return fileURLToPath(new URL(`../tools/${name}`, import.meta.url));
}

/** Addresses from 198.18.0.0/15 (RFC 2544), counted up: the same ones the wrk scripts send. */
export function benchAddress(k: number): string {
  return `198.${18 + Math.floor(k / 65536)}.${Math.floor(k / 256) % 256}.${k % 256}`;
}

/** The last non-empty line of an error's message (a daemon's own error line, when it printed one). */
export function lastWords(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  const lines = text.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('---'));
  return (lines[lines.length - 1] ?? text).slice(0, 200);
}

/**
 * Runs tools inside a namespace like the namespace's own runner, but with a
 * two-minute limit: listing or filling a set of 100,000 elements on a busy
 * machine can take longer than the daemon's ten seconds.
 */
export function benchRunner(ns: Namespace): Runner {
  return createRunner({ prefix: ['ip', 'netns', 'exec', ns.name], timeoutMs: 120_000 });
}

/** Runs a tool inside the namespace and throws with its stderr when it fails. */
export async function mustRun(ns: Namespace, cmd: string, args: readonly string[], input?: string): Promise<CommandResult> {
  const r = await benchRunner(ns)(cmd, args, input);
  if (r.exitCode !== 0) throw new Error(`${cmd} ${args.join(' ').slice(0, 80)} in ${ns.name} failed (${r.exitCode}): ${r.stderr.trim().slice(0, 300)}`);
  return r;
}
