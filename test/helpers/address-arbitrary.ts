import fc from 'fast-check';

/**
 * Strings that look like addresses and nearly are: valid IPv4 and IPv6 in
 * every spelling, then mutated the ways parsers and firewall tools disagree
 * about (leading zeros, octal and hex parts, integer forms, zone ids,
 * brackets and ports, CIDR and ranges, lists, blanks, Unicode digits,
 * look-alike characters, truncation, excess length), plus plain noise.
 */

const octet = fc.integer({ min: 0, max: 255 });
const group = fc.integer({ min: 0, max: 0xffff });

/** Addresses that sit on the edges of the validator's rules. */
const SPECIAL: readonly string[] = [
  '0.0.0.0', '0.0.0.1', '0.255.255.255', '1.0.0.0', '9.9.9.9', '126.255.255.255', '127.0.0.1', '127.255.255.254', '169.254.1.1',
  '192.0.2.1', '223.255.255.255', '224.0.0.0', '224.0.0.1', '239.255.255.255', '240.0.0.1', '255.255.255.254', '255.255.255.255',
  '::', '::1', '::2', '::0.0.0.1', '::127.0.0.1', '::ffff:0.0.0.0', '::ffff:127.0.0.1', '::ffff:192.0.2.1', '::ffff:c000:201',
  '::ffff:224.0.0.1', '::ffff:255.255.255.255', '::fffe:1.2.3.4', '0:0:0:0:0:ffff:7f00:1', '64:ff9b::192.0.2.1', '100::1',
  '2001:db8::1', '2001:db8::', '2001:DB8:0:0:8:800:200C:417A', 'fe80::1', 'fe80::', 'febf:ffff::1', 'fec0::1', 'fc00::1',
  'fd00::1', 'feff::1', 'ff00::', 'ff02::1', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', '1:2:3:4:5:6:7:8', '1::', '1::8',
  '1:2:3:4:5:6:7::', '::2:3:4:5:6:7:8', 'ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.254',
];

/** Digits of other scripts, and characters that look like ASCII ones. */
const LOOKALIKES: readonly string[] = [
  '٠', '١', '٢', '٩', '۰', '۹', '०', '१', '０', '１', '９', '𝟎', '𝟏', '𝟗', '①', '⁰', '₁',
  '．', '。', '․', '∶', '：', 'ｆ', 'Ａ', 'ℯ', 'x', 'X', 'o', 'O', 'l', 'I',
];

const BLANKS: readonly string[] = [' ', '\t', '\n', '\r', '\v', '\f', '\u00a0', '\u2000', '\u200b', '\u3000', '\ufeff', '\u0000'];
const PUNCT: readonly string[] = ['.', ':', '/', '-', ',', ';', '%', '[', ']', '{', '}', '$', '`', '|', '&', '"', '\'', '\\', '+', '*', '#', '@', '=', '?'];

function v4Styled(parts: readonly number[], styles: readonly number[]): string {
  return parts.map((p, i) => {
    switch (styles[i] ?? 0) {
      case 1: return `0${p}`;
      case 2: return `0${p.toString(8)}`;
      case 3: return `0x${p.toString(16)}`;
      case 4: return `00${p}`;
      default: return String(p);
    }
  }).join('.');
}

/** IPv6 text of eight groups: optional `::` over a zero run, case, padding, embedded IPv4. */
function v6Text(groups: readonly number[], o: { compress: boolean; upper: boolean; pad: boolean; embed: boolean; mapped: boolean }): string {
  const g = [...groups];
  if (o.mapped) {
    g.fill(0, 0, 5);
    g[5] = 0xffff;
  }
  const hex = (n: number): string => {
    const h = n.toString(16);
    const t = o.pad ? h.padStart(4, '0') : h;
    return o.upper ? t.toUpperCase() : t;
  };
  let tail = '';
  let count = 8;
  if (o.embed || o.mapped) {
    const a = g[6] ?? 0;
    const b = g[7] ?? 0;
    tail = `${a >> 8}.${a & 255}.${b >> 8}.${b & 255}`;
    count = 6;
  }
  const words = g.slice(0, count).map(hex);
  if (o.compress) {
    // The longest run of zero groups becomes `::`.
    let best = -1;
    let bestLen = 0;
    for (let i = 0; i < count;) {
      if ((g[i] ?? 0) !== 0) { i++; continue; }
      let j = i;
      while (j < count && (g[j] ?? 0) === 0) j++;
      if (j - i > bestLen) { best = i; bestLen = j - i; }
      i = j;
    }
    if (best >= 0) {
      const head = words.slice(0, best).join(':');
      const rest = words.slice(best + bestLen).join(':');
      const right = [rest, tail].filter((x) => x !== '').join(':');
      return `${head}::${right}`;
    }
  }
  return [...words, ...(tail ? [tail] : [])].join(':');
}

const v4 = fc.tuple(fc.array(octet, { minLength: 4, maxLength: 4 }), fc.array(fc.integer({ min: 0, max: 12 }), { minLength: 4, maxLength: 4 }))
  // Mostly plain decimal; now and then a legacy spelling of one part.
  .map(([parts, styles]) => v4Styled(parts, styles.map((s) => (s > 4 ? 0 : s))));

const zeroHeavyGroup = fc.oneof({ arbitrary: fc.constant(0), weight: 3 }, { arbitrary: group, weight: 2 });
const v6 = fc.tuple(
  fc.array(zeroHeavyGroup, { minLength: 8, maxLength: 8 }),
  fc.record({ compress: fc.boolean(), upper: fc.boolean(), pad: fc.boolean(), embed: fc.boolean(), mapped: fc.integer({ min: 0, max: 5 }).map((n) => n === 0) }),
).map(([groups, o]) => v6Text(groups, o));

const integerForm = fc.integer({ min: 0, max: 0xffffffff }).chain((n) => fc.constantFrom(String(n), `0x${n.toString(16)}`, `0${n.toString(8)}`));
const shortForm = fc.array(octet, { minLength: 1, maxLength: 3 }).map((p) => p.join('.'));
const huge = fc.tuple(fc.constantFrom('0', '1', 'f', ':', '.', '0:'), fc.integer({ min: 40, max: 20_000 }), v4).map(([c, n, tail]) => `${c.repeat(n)}${tail}`);

/** A well-formed address in some spelling, or an address-shaped neighbour. */
const base = fc.oneof(
  { arbitrary: v4, weight: 5 },
  { arbitrary: v6, weight: 5 },
  { arbitrary: fc.constantFrom(...SPECIAL), weight: 3 },
  { arbitrary: integerForm, weight: 1 },
  { arbitrary: shortForm, weight: 1 },
);

type Mutation =
  | { kind: 'insert'; at: number; text: string }
  | { kind: 'delete'; at: number }
  | { kind: 'replace'; at: number; text: string }
  | { kind: 'wrap'; before: string; after: string }
  | { kind: 'truncate'; at: number };

const someChar = fc.oneof(
  fc.constantFrom(...LOOKALIKES),
  fc.constantFrom(...BLANKS),
  fc.constantFrom(...PUNCT),
  fc.constantFrom('0', '1', '9', 'a', 'f', 'g', 'x'),
  fc.string({ unit: 'binary', minLength: 1, maxLength: 2 }),
);

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), text: someChar }),
  fc.record({ kind: fc.constant('delete' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('replace' as const), at: fc.nat(), text: someChar }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({
    kind: fc.constant('wrap' as const),
    before: fc.constantFrom('', ' ', '\t', '[', '0', '+', '-', '::ffff:', ' \t', '\u00a0', 'x'),
    after: fc.constantFrom('', ' ', '\t', ']', '.', '%lo', '%25eth0', '%', ':80', ']:80', '/24', '/32', '/128', '/0', '/64',
      '-192.0.2.255', ',198.51.100.7', ' 198.51.100.7', ';id', ' } ; flush ruleset', '\n', '\u0000', '\t '),
  }),
);

function apply(s: string, m: Mutation): string {
  // Work on code points, so a mutation never splits a surrogate pair unless it means to.
  const cps = Array.from(s);
  const at = (n: number): number => (cps.length === 0 ? 0 : n % (cps.length + 1));
  switch (m.kind) {
    case 'insert': { const i = at(m.at); cps.splice(i, 0, m.text); return cps.join(''); }
    case 'delete': { if (cps.length > 0) cps.splice(m.at % cps.length, 1); return cps.join(''); }
    case 'replace': { if (cps.length > 0) cps.splice(m.at % cps.length, 1, m.text); return cps.join(''); }
    case 'truncate': return cps.slice(0, at(m.at)).join('');
    case 'wrap': return `${m.before}${s}${m.after}`;
  }
}

/** The address-like strings the differential tests feed the validator. */
export const addressLike: fc.Arbitrary<string> = fc.oneof(
  { arbitrary: base, weight: 4 },
  { arbitrary: fc.tuple(base, fc.array(mutation, { minLength: 1, maxLength: 3 })).map(([s, ms]) => ms.reduce(apply, s)), weight: 6 },
  { arbitrary: fc.tuple(base, base, fc.constantFrom(',', ' ', '-', '/', ';', ', ')).map(([a, b, sep]) => `${a}${sep}${b}`), weight: 1 },
  { arbitrary: huge, weight: 1 },
  { arbitrary: fc.string({ unit: 'grapheme', maxLength: 50 }), weight: 1 },
  { arbitrary: fc.string({ unit: fc.constantFrom(...'0123456789abcdefABCDEF.:/%x '.split('')), maxLength: 46 }), weight: 2 },
);

/** RATED_FC_SEED when set (to replay a failure), else a new seed each run; tests print the one they used. */
export function seedFromEnv(): number {
  const s = Number(process.env.RATED_FC_SEED);
  return process.env.RATED_FC_SEED !== undefined && Number.isSafeInteger(s) ? s : Math.floor(Math.random() * 0x7fffffff);
}
