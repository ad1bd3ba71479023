import { execFile } from 'node:child_process';

/** What came of a notification to the service manager. */
export type NotifyOutcome =
  | { readonly sent: true }
  /** `managed` is false when no service manager listens ($NOTIFY_SOCKET unset). */
  | { readonly sent: false; readonly managed: boolean; readonly reason: string };

/**
 * Tells the service manager about the daemon's state (the sd_notify protocol:
 * `READY=1`, `STATUS=…`) when it runs as a systemd `Type=notify` service, and
 * does nothing otherwise. Node cannot send a datagram on a unix socket, so
 * `systemd-notify` sends it; that makes it a child's message, which the unit
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
  return new Promise((resolve) => {
    execFile('systemd-notify', args, { env, timeout: options.timeoutMs ?? 5000, killSignal: 'SIGKILL' }, (err, _stdout, stderr) => {
      if (!err) {
        resolve({ sent: true });
        return;
      }
      const code = (err as NodeJS.ErrnoException).code;
      const why = code === 'ENOENT'
        ? 'systemd-notify is not installed'
        : stderr.trim().split('\n')[0] || err.message;
      resolve({ sent: false, managed: true, reason: why });
    });
  });
}
