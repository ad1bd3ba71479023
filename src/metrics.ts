import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** Traffic the firewall rules dropped, per family, from the rule counters. */
export interface DroppedTotals {
  readonly ipv4: { readonly packets: number; readonly bytes: number };
  readonly ipv6: { readonly packets: number; readonly bytes: number };
}

/** A counter keyed by label values, incremented on hot paths as a plain number. */
export class LabelledCount {
  readonly values = new Map<string, number>();

  inc(key: string, by = 1): void {
    this.values.set(key, (this.values.get(key) ?? 0) + by);
  }

  get(key: string): number {
    return this.values.get(key) ?? 0;
  }

  total(): number {
    let sum = 0;
    for (const v of this.values.values()) sum += v;
    return sum;
  }
}

/**
 * Everything rated counts. Hot paths bump plain numbers; the Prometheus
 * registry reads them only when scraped.
 */
export class Metrics {
  /** Accepted notifications per receiver. */
  readonly received = new LabelledCount();
  /** Rejected notifications, keyed `receiver\treason`. */
  readonly rejected = new LabelledCount();
  /** Notifications accepted but not counted (allow list, unix socket clients), keyed `receiver\treason`. */
  readonly ignored = new LabelledCount();
  /** Blocks started, keyed `rule\tsource`. */
  readonly blocks = new LabelledCount();
  /** Blocks lifted, keyed by why: expired, unblock, flush. */
  readonly unblocks = new LabelledCount();
  /** Errors, keyed by where. */
  readonly errors = new LabelledCount();
  firewallBatches = 0;
  firewallElements = 0;
  firewallRefused = 0;
  driftRepairs = 0;
  redisUp: number | null = null;
  /** Packets our rules dropped, as last read from the firewall; null until read or without counters. */
  droppedPackets: number | null = null;
  /** What our rules dropped, per family, as last read from the firewall; null until read or without counters. */
  dropped: DroppedTotals | null = null;
  /** Datagrams the kernel dropped on the UDP receiver's socket (receive buffer full), from /proc; null without UDP. */
  udpDrops: number | null = null;
  /** The UDP receiver's socket receive buffer as the kernel reports it, in bytes; null without UDP. */
  udpReceiveBuffer: number | null = null;
  /** How many blocks the firewall's sets hold at most (firewall.maxBlocks); null where there is no such bound (iptables, dry run). */
  maxBlocks: number | null = null;
  /** Rotations of followed files, keyed by kind: rename, truncate. */
  readonly rotations = new LabelledCount();
  /** Hook runs, keyed `event\toutcome` (ok, failed, timeout, error, dropped). */
  readonly hookRuns = new LabelledCount();

  readonly registry = new Registry();
  readonly batchSeconds: Histogram;

  constructor(gauges: { activeBlocks: () => number; trackedClients: () => number }) {
    const r = this.registry;
    const labelled = (name: string, help: string, labelNames: string[], source: LabelledCount): void => {
      new Counter({
        name, help, labelNames, registers: [r],
        collect() {
          this.reset();
          for (const [key, value] of source.values) {
            const parts = key.split('\t');
            this.inc(Object.fromEntries(labelNames.map((l, i) => [l, parts[i] ?? ''])), value);
          }
        },
      });
    };
    const plain = (name: string, help: string, read: () => number): void => {
      new Counter({ name, help, registers: [r], collect() { this.reset(); this.inc(read()); } });
    };
    const gauge = (name: string, help: string, read: () => number | null): void => {
      new Gauge({ name, help, registers: [r], collect() { const v = read(); if (v !== null) this.set(v); } });
    };
    labelled('rated_notifications_received_total', 'Notifications accepted, per receiver.', ['receiver'], this.received);
    labelled('rated_notifications_rejected_total', 'Notifications rejected, per receiver and reason.', ['receiver', 'reason'], this.rejected);
    labelled('rated_notifications_ignored_total', 'Notifications accepted but not counted, per receiver and reason.', ['receiver', 'reason'], this.ignored);
    labelled('rated_blocks_total', 'Blocks started, per rule and source.', ['rule', 'source'], this.blocks);
    labelled('rated_unblocks_total', 'Blocks lifted, per cause.', ['cause'], this.unblocks);
    labelled('rated_errors_total', 'Errors, per component.', ['component'], this.errors);
    labelled('rated_hook_runs_total', 'Hook runs, per event (block, unblock) and outcome (ok, failed, timeout, error, dropped).', ['event', 'outcome'], this.hookRuns);
    labelled('rated_file_rotations_total', 'Rotations of followed access logs seen, per kind (rename, truncate).', ['kind'], this.rotations);
    plain('rated_udp_drops_total', 'Datagrams the kernel dropped on the UDP receiver\'s socket because its receive buffer was full (0 without UDP).', () => this.udpDrops ?? 0);
    gauge('rated_udp_receive_buffer_bytes', 'Receive buffer of the UDP receiver\'s socket, as the kernel reports it.', () => this.udpReceiveBuffer);
    plain('rated_firewall_batches_total', 'Transactions sent to the firewall.', () => this.firewallBatches);
    plain('rated_firewall_elements_total', 'Element changes sent to the firewall.', () => this.firewallElements);
    plain('rated_firewall_refused_total', 'Element changes the firewall refused.', () => this.firewallRefused);
    plain('rated_drift_repairs_total', 'Times our firewall state was found changed by someone else and repaired.', () => this.driftRepairs);
    gauge('rated_active_blocks', 'Blocks in force.', gauges.activeBlocks);
    gauge('rated_max_blocks', 'Blocks the firewall\'s sets can hold (firewall.maxBlocks; absent for iptables and dry runs).', () => this.maxBlocks);
    gauge('rated_tracked_clients', 'Clients with counters in memory.', gauges.trackedClients);
    gauge('rated_redis_up', 'Whether Redis is reachable (absent when Redis is not configured).', () => this.redisUp);
    const read = (): DroppedTotals | null => this.dropped;
    const dropped = (name: string, help: string, field: 'packets' | 'bytes'): void => {
      new Counter({ name, help, labelNames: ['family'], registers: [r], collect() {
        this.reset();
        const d = read();
        if (d === null) return;
        this.inc({ family: 'ipv4' }, d.ipv4[field]);
        this.inc({ family: 'ipv6' }, d.ipv6[field]);
      } });
    };
    dropped('rated_dropped_packets_total', 'Packets our rules dropped, per family (the rule counters, read at every firewall check).', 'packets');
    dropped('rated_dropped_bytes_total', 'Bytes our rules dropped, per family (the rule counters, read at every firewall check).', 'bytes');
    this.batchSeconds = new Histogram({
      name: 'rated_firewall_batch_seconds', help: 'Time to apply one firewall batch.', registers: [r],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    });
  }

  /** Blocks started and lifted so far, together. */
  decisions(): number {
    return this.blocks.total() + this.unblocks.total();
  }

  async render(): Promise<string> {
    return this.registry.metrics();
  }
}
