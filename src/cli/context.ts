import { existsSync } from 'node:fs';
import { contains, parseNetwork, type Network } from '../address.js';
import { loadConfig, type LoadedConfig } from '../config/load.js';
import { callApi, apiError, DaemonDown, type ApiResponse } from '../control/client.js';
import { userSocketPath } from '../control/user-socket.js';
import { RatedError } from '../errors.js';
import { createRunner, selectBackend, type Backend, type Block } from '../enforce/index.js';
import { Journal } from '../state/journal.js';

/** Options every command accepts. */
export interface GlobalArgs {
  config?: string;
  socket?: string;
}

/** Loads the configuration the way `run` would. */
export function configOf(args: GlobalArgs): LoadedConfig {
  return loadConfig(args.config);
}

/** The control socket: `--socket`, else the configured one. */
export function socketOf(args: GlobalArgs): string {
  return args.socket ?? configOf(args).config.control.socket;
}

/** Calls the daemon; throws DaemonDown when it is not running, or the API's error. */
export async function api(args: GlobalArgs, method: string, path: string, body?: unknown): Promise<ApiResponse> {
  const res = await callDaemon(args, method, path, body);
  if (res.status >= 400) throw apiError(res);
  return res;
}

/**
 * Calls the configured socket; when no daemon answers there and no --socket
 * was given, tries the socket an ordinary user's dry run falls back to.
 */
async function callDaemon(args: GlobalArgs, method: string, path: string, body?: unknown): Promise<ApiResponse> {
  const socket = socketOf(args);
  try {
    return await callApi(socket, method, path, body);
  } catch (err) {
    const fallback = args.socket === undefined ? userSocketPath() : null;
    const unreachable = err instanceof RatedError && err.code === 'DAEMON_UNREACHABLE';
    if (!unreachable || fallback === null || fallback === socket || !existsSync(fallback)) throw err;
    try {
      return await callApi(fallback, method, path, body);
    } catch {
      throw err;
    }
  }
}

/** Runs `withDaemon`, or `withoutDaemon` on the firewall directly when the daemon is down. */
export async function daemonOrKernel<T>(
  args: GlobalArgs,
  withDaemon: () => Promise<T>,
  withoutDaemon: (backend: Backend) => Promise<T>,
): Promise<T> {
  try {
    return await withDaemon();
  } catch (err) {
    if (!(err instanceof DaemonDown)) throw err;
  }
  const { config } = configOf(args);
  const backend = await selectBackend(config.firewall, createRunner(), false, config.ipv6Prefix);
  return withoutDaemon(backend);
}

/**
 * Removes blocks from the journal while the daemon is down, so that the next
 * start does not put back what the operator lifted.
 */
export function forgetInJournal(args: GlobalArgs, drop: (b: Block) => boolean, target: Network | null = null): number {
  const journal = new Journal(configOf(args).config.state.dir);
  // A corrupt journal stays where it is: the daemon moves it aside, and says so, when it starts.
  const state = journal.load(false);
  const kept = state.blocks.filter((b) => !drop(b));
  const removed = state.blocks.length - kept.length;
  // Like the daemon, forget the repeat-offence history of every client whose block is lifted.
  const lifted = state.blocks.filter(drop).map((b) => b.net);
  if (target) lifted.push(target);
  const offences = state.offences.filter(([key]) => {
    const client = parseNetwork(key);
    return client === null || !lifted.some((n) => contains(n, client));
  });
  if (removed > 0 || offences.length < state.offences.length) journal.save({ blocks: kept, offences });
  return removed;
}

/** Writes one line to stdout. */
export function out(line = ''): void {
  process.stdout.write(`${line}\n`);
}
