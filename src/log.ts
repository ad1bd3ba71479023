import { pino, type Logger } from 'pino';
import { format } from 'node:util';

export type { Logger };

/** Lines are gathered up to this many bytes before one write. */
const LOG_BUFFER_BYTES = 8 * 1024;

/**
 * The daemon's logger: pino JSON lines on stdout. A storm of 100,000 blocks
 * writes 100,000 lines: they are gathered and written 8 KiB at a time, not
 * with one system call each; what is left is written at the end of the same
 * turn of the event loop (so a line is out before anything that turn
 * decided is seen by a client), and at exit.
 */
export function createLogger(level: string, destination: pino.DestinationStream | number = 1): Logger {
  const stream = typeof destination === 'number' ? buffered(destination) : destination;
  return pino({ level, base: { name: 'rated' }, timestamp: pino.stdTimeFunctions.isoTime }, stream);
}

/** One buffered stream per file descriptor, however many loggers write to it. */
const streams = new Map<number, pino.DestinationStream>();

function buffered(fd: number): pino.DestinationStream {
  const known = streams.get(fd);
  if (known) return known;
  const boom = pino.destination({ dest: fd, sync: true, minLength: LOG_BUFFER_BYTES });
  let scheduled = false;
  const flush = (): void => {
    scheduled = false;
    try {
      boom.flushSync();
    } catch {
      // the descriptor is gone (a closed pipe): nothing to do
    }
  };
  process.once('exit', flush);
  const stream = {
    write(line: string): void {
      boom.write(line);
      if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
    },
  };
  streams.set(fd, stream);
  return stream;
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
