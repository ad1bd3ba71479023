// Shell completion as a shell runs it: the script `rated completion bash`
// prints, sourced into a real bash, asked what follows what was typed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { BIN } from '../../helpers/rated.js';

/** A `rated` on PATH that runs this checkout, as the script calls `rated` by name. */
function shim(): { dir: string; env: NodeJS.ProcessEnv } {
  const dir = mkdtempSync(join(tmpdir(), 'rated-completion-'));
  writeFileSync(join(dir, 'rated'), `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(BIN)} "$@"\n`);
  chmodSync(join(dir, 'rated'), 0o755);
  return { dir, env: { ...process.env, PATH: `${dir}:${process.env.PATH ?? ''}` } };
}

async function complete(words: string[], env: NodeJS.ProcessEnv): Promise<string[]> {
  const script = (await execa(process.execPath, [BIN, 'completion', 'bash'])).stdout;
  const line = `${script}\nCOMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _rated_completions; printf '%s\\n' "\${COMPREPLY[@]}"`;
  const r = await execa('bash', ['-c', line], { env });
  return r.stdout.split('\n').filter((l) => l !== '');
}

test('bash completes commands and their options; zsh gets its own script', async () => {
  const { dir, env } = shim();
  try {
    assert.deepEqual(await complete(['rated', 'li'], env), ['list']);
    assert.deepEqual((await complete(['rated', 'im'], env)), ['import']);
    assert.ok((await complete(['rated', 'list', '--'], env)).includes('--sort'));
    assert.ok((await complete(['rated', 'migrate', '--'], env)).includes('--dry-run'));
    const zsh = (await execa(process.execPath, [BIN, 'completion', 'zsh'])).stdout;
    assert.match(zsh, /^#compdef rated/);
    assert.match(zsh, /compdef _rated_completions rated/);
    const bad = await execa(process.execPath, [BIN, 'completion', 'fish'], { reject: false });
    assert.equal(bad.exitCode, 2);
    assert.match(bad.stderr, /^rated: Invalid values: Argument: shell, Given: "fish", Choices: "bash", "zsh" \(see rated --help\)$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
