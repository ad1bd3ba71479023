// The command line as a user types it: global options before or after the
// command, `--` before values that look like options, usage mistakes named on
// one line with exit 2, help and version from any place.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execa } from 'execa';
import { BIN } from '../../helpers/rated.js';

const rated = (args: string[]) => execa(process.execPath, [BIN, ...args], { reject: false, input: '' });

test('usage mistakes: one line naming the mistake, exit 2', async () => {
  const cases: Array<[string[], RegExp]> = [
    [['block'], /^rated: Not enough non-option arguments: got 0, need at least 1 \(see rated --help\)$/],
    [['block', '192.0.2.1', '--bogus'], /^rated: Unknown argument: bogus \(see rated --help\)$/],
    [['block', '192.0.2.1', '192.0.2.2'], /^rated: Unknown argument: 192\.0\.2\.2 /],
    [['list', '--sort', 'x'], /^rated: Invalid values: Argument: sort, Given: "x", Choices: "dropped", "expires", "since"/],
    [['list', '--limit', 'many'], /^rated: --limit: expected a number, got "many"/],
    [['block', '192.0.2.1', '--for'], /^rated: Option '--for <value>' argument missing/],
    [['frobnicate'], /^rated: Unknown argument: frobnicate/],
    [['--bogus'], /^rated: Unknown argument: bogus/],
    [[], /^rated: name a command; see rated --help$/],
  ];
  for (const [args, want] of cases) {
    const r = await rated(args);
    assert.equal(r.exitCode, 2, `rated ${args.join(' ')}: ${r.stderr}`);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr.trim(), want);
    assert.equal(r.stdout, '');
  }
});

test('global options go before or after the command; after `--` a value may start with a dash', async () => {
  for (const args of [['-c', '/nonexistent/rated.yml', '--socket', '/nonexistent.sock', 'block', '192.0.2.1'], ['block', '192.0.2.1', '--socket', '/nonexistent.sock']]) {
    const r = await rated(args);
    assert.equal(r.exitCode, 1, r.stderr);
    assert.match(r.stderr, /rated is not running \(control socket \/nonexistent\.sock/, 'the socket given is the one tried');
  }
  const dashed = await rated(['block', '--socket', '/nonexistent.sock', '--', '-1.2.3.4']);
  assert.equal(dashed.exitCode, 2);
  assert.match(dashed.stderr, /^rated: expected an IP address or CIDR network, got "-1\.2\.3\.4"/, 'taken as the target and refused by the validator');
});

test('--help and --version answer from anywhere, and --help of a command shows its options', async () => {
  assert.equal((await rated(['--version'])).stdout.trim(), (await rated(['list', '--version'])).stdout.trim());
  const top = await rated(['--help']);
  assert.equal(top.exitCode, 0);
  assert.match(top.stdout, /^ {2}rated block <target> +block an address or CIDR network$/m);
  const sub = await rated(['-c', 'x.yml', 'import', '-h']);
  assert.match(sub.stdout, /^rated import <files\.\.>$/m);
  assert.match(sub.stdout.replace(/\s+/g, " "), /--format .*\[choices: "auto", "list", "fail2ban", "crowdsec"\] \[default: "auto"\]/);
});
