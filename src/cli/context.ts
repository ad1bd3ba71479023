import { loadConfig, type LoadedConfig } from '../config/load.js';
import { callApi, apiError, DaemonDown, type ApiResponse } from '../control/client.js';
import { createRunner, selectBackend, type Backend } from '../enforce/index.js';

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

/** Writes one line to stdout. */
export function out(line = ''): void {
  process.stdout.write(`${line}\n`);
}
