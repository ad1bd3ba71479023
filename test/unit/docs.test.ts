// The documentation against the program: the README stays a front door, every
// link leads somewhere, the configuration reference covers every key the schema
// has and no other, and the README's CLI table every command `rated --help` has.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { execa } from 'execa';
import { parseConfig } from '../../src/config/load.js';
import { BIN, ROOT } from '../helpers/rated.js';

const PAGES = ['README.md', ...readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => join('docs', f))];
const read = (page: string): string => readFileSync(join(ROOT, page), 'utf8');

/** GitHub's anchor of a heading. */
function slug(heading: string): string {
  return heading.trim().toLowerCase().replace(/[^\w\- ]/g, '').replace(/ /g, '-');
}

function headings(text: string): Set<string> {
  const out = new Set<string>();
  let fence = false;
  for (const line of text.split('\n')) {
    if (line.startsWith('```')) fence = !fence;
    const m = /^#{1,4} (.*)$/.exec(line);
    if (!fence && m) out.add(slug(m[1] ?? ''));
  }
  return out;
}

test('the README is a front door: at most 15 KB, and it points to every page of docs/', () => {
  const readme = read('README.md');
  assert.ok(Buffer.byteLength(readme) <= 15_000, `README.md is ${Buffer.byteLength(readme)} bytes`);
  for (const page of PAGES.filter((p) => p.startsWith('docs/'))) assert.ok(readme.includes(`](${page})`), `README links ${page}`);
});

test('every relative link leads to a file, and every anchor to a heading', () => {
  for (const page of PAGES) {
    for (const m of read(page).matchAll(/\]\(([^)\s]+)\)/g)) {
      const target = m[1] ?? '';
      if (/^[a-z]+:/.test(target)) continue;
      const [path = '', anchor] = target.split('#');
      const file = path === '' ? join(ROOT, page) : resolve(join(ROOT, dirname(page)), path);
      assert.ok(existsSync(file), `${page}: ${target} does not exist`);
      if (anchor !== undefined && statSync(file).isFile()) assert.ok(headings(readFileSync(file, 'utf8')).has(anchor), `${page}: no heading #${anchor} in ${path || page}`);
    }
  }
});

/** The dotted paths of a configuration object's leaves (arrays of objects as `key[].sub`). */
function leaves(value: unknown, prefix = ''): string[] {
  if (Array.isArray(value)) {
    const first: unknown = value[0];
    return first && typeof first === 'object' ? leaves(first, `${prefix}[]`) : [prefix];
  }
  if (value === null || typeof value !== 'object' || Object.keys(value).length === 0) return [prefix];
  return Object.entries(value as Record<string, unknown>).flatMap(([k, v]) => leaves(v, prefix === '' ? k : `${prefix}.${k}`));
}

test('the configuration reference names every key of the schema, and only those', () => {
  const defaults = parseConfig({ redis: { url: 'redis://127.0.0.1:6379/0' } });
  const schemaKeys = new Set(leaves(defaults).concat(['redis.cluster']));
  const documented = new Set<string>();
  for (const line of read('docs/configuration.md').split('\n')) {
    const cell = /^\| (`[^|]+)\|/.exec(line)?.[1];
    if (!cell) continue;
    let base = '';
    for (const m of cell.matchAll(/`([^`]+)`/g)) {
      const key = m[1] ?? '';
      if (key.startsWith('.')) documented.add(`${base}${key}`);
      else {
        documented.add(key);
        base = key.slice(0, key.lastIndexOf('.'));
      }
    }
  }
  const covered = (key: string): boolean => [...documented].some((d) => key === d || key.startsWith(`${d}.`));
  const missing = [...schemaKeys].filter((k) => !covered(k));
  assert.deepEqual(missing, [], 'keys without a row in docs/configuration.md');
  const known = (d: string): boolean => [...schemaKeys].some((k) => k === d || k.startsWith(`${d}.`) || k.startsWith(`${d}[]`));
  assert.deepEqual([...documented].filter((d) => !known(d)), [], 'rows for keys the schema does not have');
});

test('the README\'s CLI table has every command rated --help lists, and no other', async () => {
  const help = (await execa(process.execPath, [BIN, '--help'])).stdout;
  const commands = new Set([...help.matchAll(/^ {2}rated ([a-z-]+)/gm)].map((m) => m[1] ?? ''));
  const readme = read('README.md');
  const table = new Set([...readme.matchAll(/^\| `rated ([a-z-]+)/gm)].map((m) => m[1] ?? ''));
  assert.deepEqual([...table].sort(), [...commands].sort());
});
