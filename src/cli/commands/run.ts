import { Daemon } from '../../daemon.js';
import { loadConfig } from '../../config/load.js';
import { describe } from '../../errors.js';
import { notifyServiceManager } from '../../notify.js';
import { configOf, type GlobalArgs } from '../context.js';

/** Grace period for SIGTERM/SIGINT before the process exits anyway (SPEC §7: within 5 s). */
const STOP_DEADLINE_MS = 4500;

/** `rated run`: the daemon, in the foreground. */
export async function run(args: GlobalArgs & { dryRun?: boolean }): Promise<void> {
  const { config, source } = await configOf(args);
  const daemon = new Daemon({ config, source, dryRun: args.dryRun === true, ...(args.socket ? { socket: args.socket } : {}) });
  // SIGHUP (systemctl reload, sv hup; systemd sends one after an nftables
  // reload): check the firewall at once instead of at the next checkInterval.
  // It does not apply configuration changes, so say so when there are some.
  process.on('SIGHUP', () => {
    daemon.log.info({ signal: 'SIGHUP' }, 'checking our firewall state now');
    daemon.repairNow().catch((err: unknown) => daemon.log.error({ err: describe(err) }, 'repair failed'));
    const notice = configChange(args, config);
    if (notice !== null) daemon.log.warn(notice);
  });
  try {
    await daemon.start();
  } catch (err) {
    await daemon.stop().catch(() => undefined);
    throw err;
  }
  // Ready only now: the receivers listen and the firewall is in place.
  const status = await daemon.status();
  const notified = await notifyServiceManager({ READY: '1', STATUS: `protecting with ${String(status.backend)}` });
  if (!notified.sent && notified.managed) daemon.log.warn({ reason: notified.reason }, 'could not tell systemd that rated is ready');
  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      daemon.log.info({ signal }, 'stopping');
      setTimeout(() => {
        daemon.log.error('did not stop in time; exiting');
        process.exit(1);
      }, STOP_DEADLINE_MS).unref();
      daemon.stop().then(resolve, (err: unknown) => {
        daemon.log.error({ err: describe(err) }, 'stop failed');
        resolve();
      });
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}

/** Why the configuration on disk differs from the running one, or null when it does not. */
function configChange(args: GlobalArgs, running: unknown): string | null {
  try {
    // Read anew: configOf() holds the file as it was when the command started.
    if (fingerprint(loadConfig(args.config).config) === fingerprint(running)) return null;
    return 'the configuration file has changed; a reload does not apply it, a restart does (blocks are kept)';
  } catch (err) {
    return `the configuration file is no longer valid (${describe(err)}); rated keeps running on the one it started with`;
  }
}

function fingerprint(config: unknown): string {
  return JSON.stringify(config, (_key, value: unknown) => (value instanceof RegExp ? value.toString() : value));
}

