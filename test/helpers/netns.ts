import { execFileSync } from 'node:child_process';
import { execa } from 'execa';
import { createRunner, type CommandResult, type Runner } from '../../src/run-command.js';

/**
 * Network namespaces for tests. Every firewall command a test runs goes
 * through one of these, so the host's own firewall is never touched.
 */
export interface Namespace {
  readonly name: string;
  /** Runs a tool inside the namespace (argument array, no shell); never rejects on a non-zero exit. */
  exec(cmd: string, args: readonly string[], input?: string): Promise<CommandResult>;
  /** Like `exec`, but throws with the tool's stderr when it exits non-zero. */
  run(cmd: string, args: readonly string[], input?: string): Promise<CommandResult>;
  /** A Runner for the enforce code that runs every tool inside the namespace. */
  readonly runner: Runner;
  /** Deletes the namespace (idempotent). */
  delete(): Promise<void>;
}

/** Namespaces this process created and has not deleted yet. */
const live = new Set<string>();
let counter = 0;
let netCounter = 0;

async function ip(args: readonly string[]): Promise<CommandResult> {
  const r = await execa('ip', args, { reject: false, shell: false, input: '', env: { LC_ALL: 'C' }, extendEnv: true });
  return { exitCode: r.exitCode ?? 1, stdout: r.stdout, stderr: r.stderr };
}

async function mustIp(args: readonly string[]): Promise<void> {
  const r = await ip(args);
  if (r.exitCode !== 0) throw new Error(`ip ${args.join(' ')} failed (${r.exitCode}): ${r.stderr.trim()}`);
}

/** Creates a namespace named `<prefix>-<pid>-<n>` with its loopback up. */
export async function createNamespace(prefix: string): Promise<Namespace> {
  installSafetyNet();
  const name = `${prefix}-${process.pid}-${++counter}`;
  await mustIp(['netns', 'add', name]);
  live.add(name);
  try {
    await mustIp(['-n', name, 'link', 'set', 'lo', 'up']);
  } catch (err) {
    await deleteNamespace(name);
    throw err;
  }
  const runner = createRunner({ prefix: ['ip', 'netns', 'exec', name] });
  const exec = (cmd: string, args: readonly string[], input?: string): Promise<CommandResult> => runner(cmd, args, input);
  return {
    name,
    runner,
    exec,
    async run(cmd, args, input) {
      const r = await exec(cmd, args, input);
      if (r.exitCode !== 0) throw new Error(`${cmd} ${args.join(' ')} in ${name} failed (${r.exitCode}): ${r.stderr.trim()}`);
      return r;
    },
    delete: () => deleteNamespace(name),
  };
}

/** Deletes a namespace; deleting one that is already gone is not an error. */
export async function deleteNamespace(name: string): Promise<void> {
  await killInside(name);
  const r = await ip(['netns', 'delete', name]);
  live.delete(name);
  if (r.exitCode !== 0 && !/No such file or directory/i.test(r.stderr)) {
    throw new Error(`ip netns delete ${name} failed: ${r.stderr.trim()}`);
  }
}

export interface VethAddresses {
  /** Address with prefix length for the end in `nsA`, e.g. `192.0.2.1/24`. */
  readonly a: string;
  readonly b: string;
  readonly a6?: string;
  readonly b6?: string;
}

/**
 * Connects two namespaces with a veth pair, addresses both ends (IPv6 without
 * duplicate address detection, so it is usable at once) and brings them up.
 * The pair is created inside `nsA`, never in the host's namespace, and
 * disappears with the namespaces. Returns the interface names.
 */
export async function veth(nsA: Namespace, nsB: Namespace, addrs: VethAddresses): Promise<{ a: string; b: string }> {
  // Interface names are limited to 15 characters.
  const tag = `rt${process.pid % 100_000}x${++netCounter}`;
  const a = `${tag}a`;
  const b = `${tag}b`;
  if (b.length > 15) throw new Error(`veth name ${b} is too long`);
  await mustIp(['-n', nsA.name, 'link', 'add', a, 'type', 'veth', 'peer', 'name', b, 'netns', nsB.name]);
  await mustIp(['-n', nsA.name, 'addr', 'add', addrs.a, 'dev', a]);
  await mustIp(['-n', nsB.name, 'addr', 'add', addrs.b, 'dev', b]);
  if (addrs.a6) await mustIp(['-n', nsA.name, '-6', 'addr', 'add', addrs.a6, 'dev', a, 'nodad']);
  if (addrs.b6) await mustIp(['-n', nsB.name, '-6', 'addr', 'add', addrs.b6, 'dev', b, 'nodad']);
  await mustIp(['-n', nsA.name, 'link', 'set', a, 'up']);
  await mustIp(['-n', nsB.name, 'link', 'set', b, 'up']);
  return { a, b };
}

let safetyNet = false;

/**
 * Kills what still runs inside a namespace of ours: everything there was
 * started by the test. Deleting the name alone would leave such a process
 * running: an `nft` orphaned by a daemon killed with -9 was once seen busy
 * on a CPU for minutes after its test had ended.
 */
async function killInside(name: string): Promise<void> {
  const r = await ip(['netns', 'pids', name]);
  if (r.exitCode === 0) killPids(r.stdout);
}

function killPids(listing: string): void {
  for (const pid of listing.split(/\s+/).filter(Boolean).map(Number)) {
    if (!Number.isInteger(pid) || pid <= 1 || pid === process.pid) continue;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
}

/** Deletes, synchronously, every namespace this process created and still holds. */
function cleanupSync(): void {
  for (const name of live) {
    try {
      killPids(execFileSync('ip', ['netns', 'pids', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }));
    } catch {
      // no such namespace
    }
    try {
      execFileSync('ip', ['netns', 'delete', name], { stdio: 'ignore' });
    } catch {
      // already gone
    }
    live.delete(name);
  }
}

/** On exit or a terminating signal, deletes the namespaces a failed test left behind. */
function installSafetyNet(): void {
  if (safetyNet) return;
  safetyNet = true;
  process.on('exit', cleanupSync);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const handler = (): void => {
      cleanupSync();
      process.removeListener(signal, handler);
      process.kill(process.pid, signal);
    };
    process.on(signal, handler);
  }
}
