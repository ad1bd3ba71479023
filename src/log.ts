import { pino, type Logger } from 'pino';
import { format } from 'node:util';

export type { Logger };

/** The daemon's logger: pino JSON lines on stdout. */
export function createLogger(level: string, destination: pino.DestinationStream | number = 1): Logger {
  const stream = typeof destination === 'number' ? pino.destination({ dest: destination, sync: true }) : destination;
  return pino({ level, base: { name: 'rated' }, timestamp: pino.stdTimeFunctions.isoTime }, stream);
}

/**
 * Logs at most one line per `intervalMs` for each key, with the number of
 * lines suppressed since the last one, so input an attacker controls cannot
 * control how much we write.
 */
export class RateLimitedLog {
  private readonly last = new Map<string, { at: number; suppressed: number }>();

  constructor(private readonly log: Logger, private readonly intervalMs = 10_000, private readonly maxKeys = 1000) {}

  warn(key: string, fields: Record<string, unknown>, msg: string): void {
    this.emit('warn', key, fields, msg);
  }

  error(key: string, fields: Record<string, unknown>, msg: string): void {
    this.emit('error', key, fields, msg);
  }

  private emit(level: 'warn' | 'error', key: string, fields: Record<string, unknown>, msg: string): void {
    const now = Date.now();
    const entry = this.last.get(key);
    if (entry && now - entry.at < this.intervalMs) {
      entry.suppressed++;
      return;
    }
    if (!entry && this.last.size >= this.maxKeys) this.last.clear();
    const suppressed = entry?.suppressed ?? 0;
    this.last.set(key, { at: now, suppressed: 0 });
    this.log[level](suppressed > 0 ? { ...fields, suppressed } : fields, msg);
  }
}

/**
 * Sends what libraries print to the console (ioredis's `[WARN] …` lines) and
 * Node's process warnings through the logger, at a bounded rate, so the
 * daemon's output stays one JSON object per line.
 */
export function routeConsole(log: Logger): void {
  const limited = new RateLimitedLog(log, 60_000, 100);
  const route = (level: 'warn' | 'error') => (...args: unknown[]): void => {
    const text = format(...args).split('\n')[0]?.slice(0, 500) ?? '';
    limited[level](`console:${text.slice(0, 80)}`, { from: 'library', text }, 'a library said');
  };
  console.warn = route('warn');
  console.error = route('error');
  console.log = route('warn');
  // Without its default listener Node prints nothing itself; ours logs the warning as JSON.
  process.removeAllListeners('warning');
  process.on('warning', (w: Error) => limited.warn(`warning:${w.name}`, { warning: w.name, text: w.message.slice(0, 500) }, 'Node warning'));
}
