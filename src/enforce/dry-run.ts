import { QueuedBackend, type Backend, type CommitResult, type KernelEntry, type Op, type StructureCheck } from './backend.js';

/** Decides, logs and lists like the others, and never touches the kernel. */
export class DryRunBackend extends QueuedBackend implements Backend {
  readonly kind = 'dry-run' as const;
  readonly readLimit = Number.POSITIVE_INFINITY;
  readonly expiresInKernel = true;
  private readonly elements = new Map<string, KernelEntry>();

  async probe(): Promise<void> {}
  async ensure(): Promise<void> {}

  async check(): Promise<StructureCheck> {
    return { intact: true, droppedPackets: null };
  }

  protected async apply(ops: Op[]): Promise<CommitResult> {
    const now = Date.now();
    for (const op of ops) {
      if (op.kind === 'add') this.elements.set(op.net.text, { net: op.net, expiresAt: now + op.timeoutMs });
      else this.elements.delete(op.net.text);
    }
    return { applied: ops.length, failed: [] };
  }

  async list(): Promise<KernelEntry[]> {
    const now = Date.now();
    for (const [key, e] of this.elements) if (e.expiresAt !== null && e.expiresAt <= now) this.elements.delete(key);
    return [...this.elements.values()];
  }

  async flush(): Promise<number | null> {
    const count = (await this.list()).length;
    this.elements.clear();
    return count;
  }
}
