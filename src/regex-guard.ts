/**
 * Patterns from the configuration run against text a client chose (its URI,
 * its Host, a log line). JavaScript's regular expressions backtrack, and a
 * repeated group that itself repeats or alternates (`^/(a+)+$`) takes time
 * exponential in the text's length. Such patterns, and back-references, are
 * refused before they run. Returns what is wrong, or null.
 */
export function backtrackingRisk(source: string): string | null {
  // One entry per open group: whether it holds a repetition or an alternation.
  const open: Array<{ risky: boolean }> = [];
  let lastGroupRisky = false;
  for (let i = 0; i < source.length; i++) {
    const c = source[i];
    if (c === '\\') {
      const next = source[i + 1] ?? '';
      if (/[1-9]/.test(next) || (next === 'k' && source[i + 2] === '<')) return 'a back-reference';
      i++;
      lastGroupRisky = false;
      continue;
    }
    if (c === '[') {
      // A character class: skip to its end (a `]` right after `[` or `[^` is literal).
      i++;
      if (source[i] === '^') i++;
      if (source[i] === ']') i++;
      while (i < source.length && source[i] !== ']') i += source[i] === '\\' ? 2 : 1;
      lastGroupRisky = false;
      continue;
    }
    if (c === '(') {
      open.push({ risky: false });
      lastGroupRisky = false;
      continue;
    }
    if (c === ')') {
      const group = open.pop();
      lastGroupRisky = group?.risky ?? false;
      // What the group holds, its parent holds too.
      const parent = open.at(-1);
      if (parent && lastGroupRisky) parent.risky = true;
      continue;
    }
    if (c === '|') {
      const top = open.at(-1);
      if (top) top.risky = true;
      lastGroupRisky = false;
      continue;
    }
    const repeats = c === '*' || c === '+' || (c === '{' && /^\{\d+,\d*\}/.test(source.slice(i)) && !/^\{(\d+),\1\}/.test(source.slice(i)) && !/^\{[01],1\}/.test(source.slice(i)));
    if (repeats) {
      if (lastGroupRisky) return 'a repeated group that itself repeats or alternates';
      const top = open.at(-1);
      if (top) top.risky = true;
      if (c === '{') i = source.indexOf('}', i);
    }
    lastGroupRisky = false;
  }
  return null;
}
