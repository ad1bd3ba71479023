import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { FileReceiver } from './file.js';
import type { HitSink } from './hit.js';
import { HttpReceiver, type HttpReceiverOptions } from './http.js';
import { UdpReceiver, type UdpReceiverOptions } from './udp.js';

type Own = 'sink' | 'metrics' | 'log';

/** The `receivers:` section of the configuration (SPEC §3). */
export interface ReceiversConfig {
  readonly http: Omit<HttpReceiverOptions, Own> | null;
  readonly udp: Omit<UdpReceiverOptions, Own> | null;
  readonly files: readonly string[];
}

/** Received, rejected and ignored notifications of one receiver, and its recent rate. */
export interface ReceiverCounts {
  readonly received: number;
  readonly rejected: number;
  readonly ignored: number;
  readonly perSecond: number;
}

/**
 * The configured receivers as one: started together, closed together, and
 * counted per receiver for `rated status` (notifications per second over the
 * last sample, taken every 5 s).
 */
export class Receivers {
  http: HttpReceiver | null = null;
  udp: UdpReceiver | null = null;
  files: FileReceiver | null = null;
  private rates = { at: Date.now(), received: new Map<string, number>(), perSecond: new Map<string, number>() };

  constructor(
    private readonly config: ReceiversConfig,
    private readonly sink: HitSink,
    private readonly stats: Metrics,
    private readonly log: Logger,
  ) {}

  /** Starts every configured receiver; throws (BIND_FAILED) when one cannot listen. */
  async start(): Promise<void> {
    const common = { sink: this.sink, metrics: this.stats, log: this.log };
    if (this.config.http) {
      this.http = new HttpReceiver({ ...this.config.http, ...common });
      await this.http.listen();
    }
    if (this.config.udp) {
      this.udp = new UdpReceiver({ ...this.config.udp, ...common });
      await this.udp.listen();
    }
    if (this.config.files.length > 0) {
      this.files = new FileReceiver({ paths: this.config.files, ...common });
      await this.files.start();
    }
  }

  async close(): Promise<void> {
    await Promise.allSettled([this.http?.close(), this.udp?.close(), this.files?.close()]);
  }

  /** Where each receiver listens, for the start-up log. */
  endpoints(): Record<string, unknown> {
    return {
      http: this.http?.endpoint ?? null,
      udp: this.udp?.endpoint ?? null,
      // The socket's receive buffer as the kernel granted it (a warning said so when it is short).
      udpReceiveBuffer: this.udp?.receiveBuffer ?? null,
      files: this.files?.paths ?? [],
    };
  }

  /** Samples the kernel's UDP drop count and the notification rates; called every few seconds. */
  sample(): void {
    this.udp?.sampleDrops();
    const now = Date.now();
    const elapsed = (now - this.rates.at) / 1000;
    const received = new Map(this.stats.received.values);
    const perSecond = new Map<string, number>();
    for (const [receiver, n] of received) {
      perSecond.set(receiver, elapsed > 0 ? Math.round((n - (this.rates.received.get(receiver) ?? 0)) / elapsed) : 0);
    }
    this.rates = { at: now, received, perSecond };
  }

  /** The receivers part of `rated status` (SPEC §2). */
  status(): Record<string, unknown> {
    const stats = this.stats;
    return {
      http: this.http ? { listen: this.http.endpoint, ...this.counts('http') } : null,
      udp: this.udp ? {
        listen: this.udp.endpoint,
        ...this.counts('udp'),
        drops: this.udp.sampleDrops(),
        receiveBuffer: this.udp.receiveBuffer,
      } : null,
      files: this.files ? {
        listen: this.files.paths.join(', '),
        ...this.counts('files'),
        rotations: { rename: stats.rotations.get('rename'), truncate: stats.rotations.get('truncate') },
        files: this.files.status(),
      } : null,
    };
  }

  private counts(receiver: string): ReceiverCounts {
    return {
      received: this.stats.received.get(receiver),
      rejected: sumPrefix(this.stats.rejected.values, `${receiver}\t`),
      ignored: sumPrefix(this.stats.ignored.values, `${receiver}\t`),
      perSecond: this.rates.perSecond.get(receiver) ?? 0,
    };
  }
}

function sumPrefix(values: Map<string, number>, prefix: string): number {
  let sum = 0;
  for (const [k, v] of values) if (k.startsWith(prefix)) sum += v;
  return sum;
}
