/**
 * Blocks ordered by expiry, so that the sweep each second costs what expires,
 * not what is in force (1,000,000 blocks). Entries are never removed early:
 * an entry whose block was lifted or extended since is stale, recognised and
 * dropped when it comes up.
 */
export class ExpiryHeap<T> {
  private at: number[] = [];
  private items: T[] = [];

  get size(): number {
    return this.at.length;
  }

  push(at: number, item: T): void {
    this.at.push(at);
    this.items.push(item);
    let i = this.at.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if ((this.at[parent] as number) <= at) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  /** Takes out every entry due at `now` or before, soonest first. */
  *due(now: number): Generator<[number, T]> {
    while (this.at.length > 0 && (this.at[0] as number) <= now) {
      const entry: [number, T] = [this.at[0] as number, this.items[0] as T];
      const lastAt = this.at.pop() as number;
      const lastItem = this.items.pop() as T;
      if (this.at.length > 0) {
        this.at[0] = lastAt;
        this.items[0] = lastItem;
        this.down(0);
      }
      yield entry;
    }
  }

  /** Keeps only the entries `keep` accepts (when stale ones have piled up), in linear time. */
  rebuild(keep: (at: number, item: T) => boolean): void {
    const at: number[] = [];
    const items: T[] = [];
    for (let i = 0; i < this.at.length; i++) {
      if (keep(this.at[i] as number, this.items[i] as T)) {
        at.push(this.at[i] as number);
        items.push(this.items[i] as T);
      }
    }
    this.at = at;
    this.items = items;
    for (let i = (at.length >> 1) - 1; i >= 0; i--) this.down(i);
  }

  private down(i: number): void {
    const n = this.at.length;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < n && (this.at[l] as number) < (this.at[m] as number)) m = l;
      if (r < n && (this.at[r] as number) < (this.at[m] as number)) m = r;
      if (m === i) return;
      this.swap(i, m);
      i = m;
    }
  }

  private swap(a: number, b: number): void {
    [this.at[a], this.at[b]] = [this.at[b] as number, this.at[a] as number];
    [this.items[a], this.items[b]] = [this.items[b] as T, this.items[a] as T];
  }
}
