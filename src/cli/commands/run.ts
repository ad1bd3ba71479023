import { Daemon } from '../../daemon.js';
import { describe } from '../../errors.js';
import { configOf, type GlobalArgs } from '../context.js';

/** Grace period for SIGTERM/SIGINT before the process exits anyway (SPEC §7: within 5 s). */
const STOP_DEADLINE_MS = 4500;

/** `rated run`: the daemon, in the foreground. */
export async function run(args: GlobalArgs & { dryRun?: boolean }): Promise<void> {
  const { config, source } = configOf(args);
  const daemon = new Daemon({ config, source, dryRun: args.dryRun === true, ...(args.socket ? { socket: args.socket } : {}) });
  try {
    await daemon.start();
  } catch (err) {
    await daemon.stop().catch(() => undefined);
    throw err;
  }
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
