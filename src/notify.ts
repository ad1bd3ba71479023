import { CommandError, createRunner } from './run-command.js';

/** What came of a notification to the service manager. */
export type NotifyOutcome =
  | { readonly sent: true }
  /** `managed` is false when no service manager listens ($NOTIFY_SOCKET unset). */
  | { readonly sent: false; readonly managed: boolean; readonly reason: string };

/**
 * Tells the service manager about the daemon's state (the sd_notify protocol:
 * `READY=1`, `STATUS=…`) when it runs as a systemd `Type=notify` service, and
 * does nothing otherwise. Node cannot send a datagram on a unix socket, so
 * `systemd-notify` sends it, started by the one runner (run-command.ts); that makes it a child's message, which the unit
 * accepts with `NotifyAccess=all`. systemd-notify waits until systemd has
 * read the message, so it cannot be lost when the child exits. Never throws.
 */
export function notifyServiceManager(
  fields: Readonly<Record<string, string>>,
  options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<NotifyOutcome> {
  const env = options.env ?? process.env;
  const socket = env.NOTIFY_SOCKET;
  if (socket === undefined || socket === '') return Promise.resolve({ sent: false, managed: false, reason: 'NOTIFY_SOCKET is not set' });
  // One line per field: a line break in a value would start another field.
  const args = Object.entries(fields).map(([key, value]) => `${key}=${value.replace(/[\r\n]+/g, ' ')}`);
  const run = createRunner({ env, timeoutMs: options.timeoutMs ?? 5000 });
  return run('systemd-notify', args).then(
    (r): NotifyOutcome => (r.exitCode === 0
      ? { sent: true }
      : { sent: false, managed: true, reason: r.stderr.trim().split('\n')[0] || `systemd-notify exited with ${r.exitCode}` }),
    (err: unknown): NotifyOutcome => ({
      sent: false,
      managed: true,
      reason: err instanceof CommandError && err.notFound ? 'systemd-notify is not installed' : (err as Error).message,
    }),
  );
}
