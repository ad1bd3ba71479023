#!/usr/bin/env node
// Runs the whole suite in one node:test invocation, so there is one closing
// summary. Node 20's runner does not expand globs, hence the file walk.
// Usage: node test/run.mjs [unit|integration] [name-filter]
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const [kind, filter] = process.argv.slice(2);
const dirs = kind ? [join(root, 'test', kind)] : [join(root, 'test', 'unit'), join(root, 'test', 'integration')];

function walk(dir) {
  let out = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out = out.concat(walk(path));
    else if (name.endsWith('.test.ts')) out.push(path);
  }
  return out;
}

const files = dirs.flatMap(walk).filter((f) => !filter || f.includes(filter));
if (files.length === 0) {
  console.error('no test files found');
  process.exit(1);
}
const build = spawnSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: root, stdio: 'inherit' });
if (build.status !== 0) process.exit(build.status ?? 1);
// The whole suite also holds the code to its lint rules (typescript-eslint strict, type-checked).
if (!kind) {
  const lint = spawnSync('npm', ['run', '--silent', 'lint'], { cwd: root, stdio: 'inherit' });
  if (lint.status !== 0) {
    console.error('lint failed: npm run lint names each problem');
    process.exit(lint.status ?? 1);
  }
}
const args = ['--import', 'tsx', '--enable-source-maps', '--test', '--test-reporter=spec',
  // A test that hangs fails after ten minutes instead of holding the whole run.
  '--test-concurrency=1', '--test-timeout=600000', ...files.map((f) => relative(root, f))];
const run = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
process.exit(run.status ?? 1);
