import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { TestContext } from 'node:test';

/** True when the tests run as root (network namespaces and nft need it). */
export const HAVE_ROOT = typeof process.getuid === 'function' && process.getuid() === 0;

/** In CI a missing prerequisite is a failure, never a silent skip. */
const IN_CI = process.env.CI === 'true';

/** True when `name` is an executable file in one of the PATH directories. */
export function onPath(name: string): boolean {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    try {
      accessSync(join(dir, name), constants.X_OK);
      return true;
    } catch {
      // not in this directory
    }
  }
  return false;
}

/** What is missing for a test that needs root and the given tools; empty when nothing is. */
export function missingPrereqs(tools: readonly string[], root = true): string[] {
  const missing: string[] = [];
  if (root && !HAVE_ROOT) missing.push('root privileges');
  for (const tool of tools) if (!onPath(tool)) missing.push(`\`${tool}\` on PATH`);
  return missing;
}

function unmet(t: TestContext, missing: readonly string[]): false {
  const why = `needs ${missing.join(', ')}`;
  if (IN_CI) throw new Error(`prerequisite missing in CI (CI=true): ${why}`);
  t.skip(why);
  return false;
}

/** Skips the test (throws in CI) unless it runs as root; returns whether it may go on. */
export function requireRoot(t: TestContext): boolean {
  return HAVE_ROOT || unmet(t, ['root privileges']);
}

/** Skips the test (throws in CI) unless every tool is on PATH; returns whether it may go on. */
export function requireTools(t: TestContext, tools: readonly string[]): boolean {
  const missing = missingPrereqs(tools, false);
  return missing.length === 0 || unmet(t, missing);
}

/** Throws in CI when something is missing; for hooks, which cannot skip. Returns whether all is there. */
export function prereqsMet(tools: readonly string[], root = true): boolean {
  const missing = missingPrereqs(tools, root);
  if (missing.length > 0 && IN_CI) throw new Error(`prerequisite missing in CI (CI=true): needs ${missing.join(', ')}`);
  return missing.length === 0;
}
