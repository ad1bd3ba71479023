import { loadConfig, type LoadedConfig } from '../config/load.js';
import { callApi, apiError, DaemonDown, type ApiResponse } from '../control/client.js';
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
  const res = await callApi(socketOf(args), method, path, body);
  if (res.status >= 400) throw apiError(res);
  return res;
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
  const backend = await selectBackend(config.firewall, createRunner(), false);
  return withoutDaemon(backend);
}

/**
 * Removes blocks from the journal while the daemon is down, so that the next
 * start does not put back what the operator lifted.
 */
export function forgetInJournal(args: GlobalArgs, drop: (b: Block) => boolean): number {
  const journal = new Journal(configOf(args).config.state.dir);
  const state = journal.load();
  const kept = state.blocks.filter((b) => !drop(b));
  const removed = state.blocks.length - kept.length;
  if (removed > 0) journal.save({ blocks: kept, offences: state.offences });
  return removed;
}

/** Writes one line to stdout. */
export function out(line = ''): void {
  process.stdout.write(`${line}\n`);
}
