import type { BatchResult, BlockView, ListQuery, ManualBlock } from '../block.js';
import type { TopView } from './status.js';

/** What the control socket exposes; the daemon implements it. */
export interface ControlApi {
  status(): Promise<Record<string, unknown>>;
  /** The active blocks, each with what its kernel element dropped (read from the kernel now); iterated as they are sent. */
  blocks(query?: ListQuery): Promise<Iterable<BlockView>>;
  /** Throws a RatedError (USAGE for bad input, REFUSED for allow-listed addresses). */
  block(input: ManualBlock): Promise<{ block: BlockView; outcome: string }>;
  /** Many manual blocks (`rated import`, `rated migrate`); refusals are counted, not thrown. */
  blockMany(inputs: readonly ManualBlock[], source: 'manual' | 'migrated', dryRun: boolean): Promise<BatchResult>;
  unblock(ip: string): Promise<BlockView | null>;
  flush(): Promise<number>;
  metrics(): Promise<string>;
  /** What `rated top` shows: counters, the clients nearest a limit, the latest blocks. */
  top(clients: number, blocks: number): Promise<TopView>;
  /** Why an address is or is not blocked (`rated explain`); throws USAGE for what is not an address. */
  explain(ip: string): Promise<unknown>;
}
