/**
 * The one validator and canonicaliser every address passes through, whatever
 * its source (HTTP, UDP, files, CLI, Redis, configuration). Firewall input is
 * built only from values this module produced.
 */

export type Family = 4 | 6;

/** A validated address or network in canonical form. */
export interface Network {
  readonly family: Family;
  /** The network's first address as an unsigned integer (32 or 128 bits). */
  readonly value: bigint;
  /** Prefix length: 32 or 128 for a single address. */
  readonly prefix: number;
  /** Canonical text: dotted IPv4 or compressed lowercase IPv6, with `/prefix` only for networks. */
  readonly text: string;
}

// INET6_ADDRSTRLEN - 1: the longest text form, `ffff:…:ffff:255.255.255.255`.
const MAX_LENGTH = 45;
const TAB = 9;
const SPACE = 32;
const DOT = 46;
const ZERO = 48;
const COLON = 58;

// Number#toString dominated the cost of formatting; lookups in byte tables are cheaper.
const DECIMAL = Array.from({ length: 256 }, (_, i) => String(i));
const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16));
const HEX_PADDED = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

// Scratch space of the last IPv6 scan. Parsing is synchronous and never
// re-entrant, so one buffer serves every call and the hot path allocates
// nothing but its answer.
const groups = new Uint16Array(8);

function group(i: number): number {
  return groups[i] ?? 0;
}

/** Parses one client address from untrusted input; null when it is not acceptable. */
export function parseAddress(input: string): Network | null {
  let start = 0;
  let end = input.length;
  while (start < end && isBlank(input.charCodeAt(start))) start++;
  while (end > start && isBlank(input.charCodeAt(end - 1))) end--;
  if (end - start > MAX_LENGTH) return null;

  if (!hasColon(input, start, end)) {
    const v4 = parseV4(input, start, end);
    if (v4 < 0 || !usableV4(v4)) return null;
    // The input is already canonical, but a slice of it could keep a whole
    // log line alive for as long as the client is tracked: write it anew.
    return { family: 4, value: BigInt(v4), prefix: 32, text: formatV4(v4) };
  }
  if (!parseV6(input, start, end)) return null;
  if (isMapped()) {
    const v4 = mappedV4();
    return usableV4(v4) ? { family: 4, value: BigInt(v4), prefix: 32, text: formatV4(v4) } : null;
  }
  if (!usableV6()) return null;
  return { family: 6, value: valueV6(), prefix: 128, text: formatV6() };
}

/** Parses an address or CIDR network from the configuration or the CLI; null when invalid. */
export function parseNetwork(input: string): Network | null {
  let start = 0;
  let end = input.length;
  while (start < end && isBlank(input.charCodeAt(start))) start++;
  while (end > start && isBlank(input.charCodeAt(end - 1))) end--;
  if (end - start > MAX_LENGTH + 4) return null;
  const slash = input.indexOf('/', start);
  if (slash < 0 || slash >= end) return parseAddress(input.slice(start, end));
  if (slash - start > MAX_LENGTH) return null;
  let prefix = parsePrefix(input, slash + 1, end);
  if (prefix < 0) return null;

  let v4: number;
  if (!hasColon(input, start, slash)) {
    v4 = parseV4(input, start, slash);
    if (v4 < 0 || prefix > 32) return null;
  } else {
    if (!parseV6(input, start, slash) || prefix > 128) return null;
    if (!isMapped() || prefix < 96) {
      if (prefix === 128) return usableV6() ? { family: 6, value: valueV6(), prefix, text: formatV6() } : null;
      maskV6(prefix);
      return { family: 6, value: valueV6(), prefix, text: formatV6(`/${prefix}`) };
    }
    v4 = mappedV4();
    prefix -= 96;
  }
  // A full-length prefix names one address, which must pass the same checks as a bare one.
  if (prefix === 32) return usableV4(v4) ? { family: 4, value: BigInt(v4), prefix, text: formatV4(v4) } : null;
  v4 = maskV4(v4, prefix);
  return { family: 4, value: BigInt(v4), prefix, text: formatV4(v4, `/${prefix}`) };
}

/** The network of length `prefix` that contains `n`; `n` itself when it is already that long or shorter. */
export function toNetwork(n: Network, prefix: number): Network {
  if (prefix >= n.prefix) return n;
  if (!Number.isInteger(prefix) || prefix < 0) throw new RangeError(`prefix must be a non-negative integer, got ${prefix}`);
  if (n.family === 4) {
    const v4 = maskV4(Number(n.value), prefix);
    return { family: 4, value: BigInt(v4), prefix, text: formatV4(v4, `/${prefix}`) };
  }
  const hostBits = BigInt(128 - prefix);
  const value = (n.value >> hostBits) << hostBits;
  loadV6(value);
  return { family: 6, value, prefix, text: formatV6(`/${prefix}`) };
}

/** True when `inner` lies entirely inside `outer` (same family, at least as long a prefix). */
export function contains(outer: Network, inner: Network): boolean {
  if (outer.family !== inner.family || outer.prefix > inner.prefix) return false;
  const shift = BigInt(bits(outer.family) - outer.prefix);
  return inner.value >> shift === outer.value >> shift;
}

/** True when the two networks share at least one address. */
export function overlaps(a: Network, b: Network): boolean {
  if (a.family !== b.family) return false;
  // Two prefixes either nest or are disjoint: compare them at the shorter length.
  const shift = BigInt(bits(a.family) - Math.min(a.prefix, b.prefix));
  return a.value >> shift === b.value >> shift;
}

/** The address with 32-bit value `v4`, which must come from a Network made here (a stored key, say). */
export function ipv4(v4: number): Network {
  if (!(Number.isInteger(v4) && v4 >= 0 && v4 <= 0xffff_ffff)) throw new RangeError(`not a 32-bit address value: ${v4}`);
  return { family: 4, value: BigInt(v4), prefix: 32, text: formatV4(v4) };
}

/**
 * The key a client is counted and blocked under: IPv4 as is, IPv6 as its
 * `/ipv6Prefix` network. A NAT64 address (64:ff9b::/96) is one IPv4 client
 * behind the translator, so it stands for itself: its /64 holds every IPv4
 * client of the translator at once.
 */
export function clientKey(addr: Network, ipv6Prefix: number): Network {
  if (addr.family === 4 || contains(NAT64, addr)) return addr;
  return toNetwork(addr, ipv6Prefix);
}

/**
 * True for a loopback address (127.0.0.0/8, ::1, and 127/8 mapped into IPv6),
 * in any spelling. Sockets report their peers in canonical form, which the
 * first test answers without parsing.
 */
export function isLoopback(address: string | undefined): boolean {
  if (address === undefined) return false;
  if (address === '127.0.0.1' || address === '::1' || address === '::ffff:127.0.0.1') return true;
  const n = parseAddress(address) ?? parseNetwork(address);
  if (!n || n.prefix !== (n.family === 4 ? 32 : 128)) return false;
  return n.family === 4 ? n.value >> 24n === 127n : n.value === 1n;
}

/**
 * `ADDRESS:PORT` or `[IPV6]:PORT` to listen on (`metrics.listen`); the
 * address one that parses as a single address (or `0.0.0.0`, `::`), the port
 * 1–65535. Null when it is not that.
 */
export function parseListen(s: string): { address: string; port: number } | null {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+)):(\d{1,5})$/.exec(s);
  const address = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (address === undefined || !(port >= 1 && port <= 65535)) return null;
  if (address === '0.0.0.0' || address === '::') return { address, port };
  const n = parseNetwork(address);
  return n !== null && n.prefix === (n.family === 4 ? 32 : 128) ? { address: n.text, port } : null;
}

/**
 * Special-purpose ranges (IANA's registries) that can never be a remote
 * client: a block there cuts the host off its own link, its neighbours or
 * itself. Whatever the allow list says, nothing inside one, and no network
 * overlapping one, is ever blocked.
 */
const NEVER_CLIENTS: ReadonlyArray<readonly [string, string]> = [
  ['0.0.0.0/8', '"this network" (0.0.0.0/8)'],
  ['127.0.0.0/8', 'loopback (127.0.0.0/8)'],
  ['169.254.0.0/16', 'link-local (169.254.0.0/16)'],
  ['224.0.0.0/4', 'multicast (224.0.0.0/4)'],
  ['240.0.0.0/4', 'reserved or broadcast (240.0.0.0/4)'],
  ['::/127', 'unspecified or loopback (::/127)'],
  ['100::/64', 'discard-only (100::/64)'],
  ['fe80::/10', 'link-local (fe80::/10)'],
  ['ff00::/8', 'multicast (ff00::/8)'],
];
const NAT64: Network = rangeOf('64:ff9b::/96');
const NEVER: ReadonlyArray<readonly [Network, string]> = NEVER_CLIENTS.map(([text, what]) => [rangeOf(text), what]);

/** Says why `net` can never be a client (a special-purpose range it overlaps), or null when it can be. */
export function neverAClient(net: Network): string | null {
  for (const [range, what] of NEVER) if (overlaps(range, net)) return what;
  return null;
}

function rangeOf(text: string): Network {
  const slash = text.indexOf('/');
  const prefix = Number(text.slice(slash + 1));
  const family: Family = text.includes(':') ? 6 : 4;
  let value = 0n;
  if (family === 4) {
    for (const part of text.slice(0, slash).split('.')) value = (value << 8n) | BigInt(part);
  } else {
    if (!parseV6(text, 0, slash)) throw new Error(`bad range ${text}`);
    value = valueV6();
  }
  return { family, value, prefix, text };
}

function bits(family: Family): number {
  return family === 4 ? 32 : 128;
}

function isBlank(c: number): boolean {
  return c === SPACE || c === TAB;
}

function hasColon(s: string, start: number, end: number): boolean {
  const i = s.indexOf(':', start);
  return i >= 0 && i < end;
}

/** Strict dotted quad in s[i, end): its value, or -1. */
function parseV4(s: string, i: number, end: number): number {
  let value = 0;
  for (let part = 0; part < 4; part++) {
    if (part > 0) {
      if (i >= end || s.charCodeAt(i) !== DOT) return -1;
      i++;
    }
    const first = i;
    let octet = 0;
    while (i < end && i - first < 3) {
      const d = s.charCodeAt(i) - ZERO;
      if (d < 0 || d > 9) break;
      octet = octet * 10 + d;
      i++;
    }
    const length = i - first;
    // A leading zero is refused, not stripped: the firewall tools read it as octal.
    if (length === 0 || octet > 255 || (length > 1 && s.charCodeAt(first) === ZERO)) return -1;
    value = value * 256 + octet;
  }
  return i === end ? value : -1;
}

/** Prefix length in s[i, end): decimal, no sign, no leading zero; -1 when malformed. */
function parsePrefix(s: string, i: number, end: number): number {
  const length = end - i;
  if (length < 1 || length > 3 || (length > 1 && s.charCodeAt(i) === ZERO)) return -1;
  let value = 0;
  for (; i < end; i++) {
    const d = s.charCodeAt(i) - ZERO;
    if (d < 0 || d > 9) return -1;
    value = value * 10 + d;
  }
  return value;
}

function hexDigit(c: number): number {
  if (c >= ZERO && c <= ZERO + 9) return c - ZERO;
  const lower = c | 0x20;
  return lower >= 97 && lower <= 102 ? lower - 87 : -1;
}

/** IPv6 text in s[i, end) into `groups`; false when malformed. */
function parseV6(s: string, i: number, end: number): boolean {
  let n = 0;
  let gap = -1;
  if (i < end && s.charCodeAt(i) === COLON) {
    if (i + 1 >= end || s.charCodeAt(i + 1) !== COLON) return false;
    gap = 0;
    i += 2;
  }
  while (i < end) {
    if (n === 8) return false;
    const first = i;
    let value = 0;
    while (i < end && i - first < 5) {
      const h = hexDigit(s.charCodeAt(i));
      if (h < 0) break;
      value = value * 16 + h;
      i++;
    }
    if (i < end && s.charCodeAt(i) === DOT) {
      // An embedded IPv4 address takes the last two groups.
      if (n > 6) return false;
      const v4 = parseV4(s, first, end);
      if (v4 < 0) return false;
      groups[n++] = Math.floor(v4 / 65536);
      groups[n++] = v4 % 65536;
      break;
    }
    if (i === first || i - first > 4) return false;
    groups[n++] = value;
    if (i === end) break;
    if (s.charCodeAt(i) !== COLON) return false;
    i++;
    if (i < end && s.charCodeAt(i) === COLON) {
      if (gap >= 0) return false;
      gap = n;
      i++;
    } else if (i === end) {
      return false;
    }
  }
  if (gap < 0) return n === 8;
  if (n > 7) return false;
  const tail = n - gap;
  for (let k = 1; k <= tail; k++) groups[8 - k] = group(n - k);
  for (let k = gap; k < 8 - tail; k++) groups[k] = 0;
  return true;
}

function isMapped(): boolean {
  return group(0) === 0 && group(1) === 0 && group(2) === 0 && group(3) === 0 && group(4) === 0 && group(5) === 0xffff;
}

function mappedV4(): number {
  return group(6) * 65536 + group(7);
}

/** Not 0.0.0.0/8, multicast (224.0.0.0/4) or broadcast. */
function usableV4(v4: number): boolean {
  const first = Math.floor(v4 / 16777216);
  // Multicast, reserved and broadcast (224.0.0.0 and up) and link-local
  // (169.254.0.0/16, the cloud metadata address among them) are no remote client either.
  return first !== 0 && first < 224 && Math.floor(v4 / 65536) !== 0xa9fe;
}

/**
 * Not unspecified (::), multicast (ff00::/8) or link-local (fe80::/10). A
 * link-local address means the same on every link, and its /64 holds the
 * routers and neighbours whose discovery packets a block would drop.
 */
function usableV6(): boolean {
  if (group(0) >= 0xff00 || (group(0) & 0xffc0) === 0xfe80) return false;
  // Discard-only (100::/64).
  if (group(0) === 0x100 && group(1) === 0 && group(2) === 0 && group(3) === 0) return false;
  for (let i = 0; i < 8; i++) if (group(i) !== 0) return true;
  return false;
}

function maskV4(v4: number, prefix: number): number {
  const size = 2 ** (32 - prefix);
  return v4 - (v4 % size);
}

function maskV6(prefix: number): void {
  for (let i = 0; i < 8; i++) {
    const keep = prefix - 16 * i;
    if (keep <= 0) groups[i] = 0;
    else if (keep < 16) groups[i] = group(i) & (0xffff << (16 - keep));
  }
}

function valueV6(): bigint {
  // Three chunks that each fit a double exactly: 48 + 48 + 32 bits.
  const high = (group(0) * 65536 + group(1)) * 65536 + group(2);
  const middle = (group(3) * 65536 + group(4)) * 65536 + group(5);
  const low = group(6) * 65536 + group(7);
  return (BigInt(high) << 80n) | (BigInt(middle) << 32n) | BigInt(low);
}

function loadV6(value: bigint): void {
  const high = Number(value >> 80n);
  const middle = Number((value >> 32n) & 0xffffffffffffn);
  const low = Number(value & 0xffffffffn);
  groups[0] = Math.floor(high / 4294967296);
  groups[1] = Math.floor(high / 65536) % 65536;
  groups[2] = high % 65536;
  groups[3] = Math.floor(middle / 4294967296);
  groups[4] = Math.floor(middle / 65536) % 65536;
  groups[5] = middle % 65536;
  groups[6] = Math.floor(low / 65536);
  groups[7] = low % 65536;
}

// Texts are joined, never concatenated: a concatenation of 13 characters or more is a tree of
// string pieces that a block keeps for as long as it lasts (about 60 bytes instead of 32).
function formatV4(v4: number, suffix = ''): string {
  return [DECIMAL[v4 >>> 24], DECIMAL[(v4 >>> 16) & 255], DECIMAL[(v4 >>> 8) & 255], `${DECIMAL[v4 & 255] ?? ''}${suffix}`].join('.');
}

/** RFC 5952 text of `groups`: lowercase, no leading zeros, the first longest run of two or more zero groups as `::`. */
function formatV6(suffix = ''): string {
  let gap = -1;
  let gapLength = 1;
  for (let i = 0; i < 8; ) {
    if (group(i) !== 0) {
      i++;
      continue;
    }
    let j = i + 1;
    while (j < 8 && group(j) === 0) j++;
    if (j - i > gapLength) {
      gap = i;
      gapLength = j - i;
    }
    i = j;
  }
  let out = '';
  for (let i = 0; i < 8; i++) {
    if (i === gap) {
      out += '::';
      i += gapLength - 1;
      continue;
    }
    if (i > 0 && i !== gap + gapLength) out += ':';
    const g = group(i);
    out += g < 256 ? (HEX[g] ?? '') : (HEX[g >>> 8] ?? '') + (HEX_PADDED[g & 255] ?? '');
  }
  // One copy into a flat string (see formatV4).
  return [out, suffix].join('');
}
