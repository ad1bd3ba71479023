import { describe, EXIT, RatedError } from '../errors.js';
import { VERSION } from '../version.js';
import { STDIN } from './stdin.js';

// Each command loads its own modules when it runs: `rated --version` and
// `rated list` never load the daemon, the receivers or the Redis client.
const blocks = (): Promise<typeof import('./commands/blocks.js')> => import('./commands/blocks.js');
const moving = (): Promise<typeof import('./commands/moving.js')> => import('./commands/moving.js');


/** Builds the command line; handlers run through parseAsync so errors reach one catch. */
async function cli(argv: string[]) {
  const { default: yargs } = await import('yargs');
  const y = yargs(argv);
  return y
    .scriptName('rated')
    .usage('$0 <command> [options]')
    .option('config', { alias: 'c', type: 'string', describe: 'configuration file (default: $RATED_CONFIG, /etc/rated/rated.yml, embedded defaults)' })
    .option('socket', { type: 'string', describe: 'control socket (default: control.socket of the configuration, /run/rated/rated.sock)' })
    .command('run', 'run the daemon in the foreground', (y) => y
      .option('dry-run', { type: 'boolean', describe: 'decide, log and list, never touch the kernel' }),
    async (a) => (await import('./commands/run.js')).run({ config: a.config, socket: a.socket, dryRun: a.dryRun }))
    .command('list', 'list active blocks', (y) => y
      .option('json', { type: 'boolean', describe: 'JSON for scripts' })
      .option('sort', { choices: ['dropped', 'expires', 'since'] as const, describe: 'most dropped, soonest to end, or newest first' })
      .option('limit', { type: 'number', describe: 'at most this many blocks (after --sort)' }),
    async (a) => (await blocks()).list({ config: a.config, socket: a.socket, json: a.json, sort: a.sort, limit: a.limit }))
    .command('block <target>', 'block an address or CIDR network', (y) => y
      .positional('target', { type: 'string', demandOption: true, describe: 'address or CIDR network' })
      .option('for', { type: 'string', describe: 'duration: 90s, 10m, 6h, 1d or seconds (default: the first rule\'s block; 6h with the embedded rules)' })
      .option('reason', { type: 'string', describe: 'why, shown by list' })
      .option('json', { type: 'boolean', describe: 'print the block as JSON' }),
    async (a) => (await blocks()).block({ config: a.config, socket: a.socket, target: a.target, for: a.for, reason: a.reason, json: a.json }))
    .command('unblock <target>', 'lift a block and forget the client\'s counters', (y) => y
      .positional('target', { type: 'string', demandOption: true, describe: 'address or CIDR network' }),
    async (a) => (await blocks()).unblock({ config: a.config, socket: a.socket, target: a.target }))
    .command('flush', 'lift every block rated manages, and nothing else', (y) => y
      .option('yes', { type: 'boolean', describe: 'do not ask for confirmation' }),
    async (a) => (await blocks()).flush({ config: a.config, socket: a.socket, yes: a.yes }))
    .command('explain <target>', 'why an address is or is not blocked: allow list, block, counts per rule', (y) => y
      .positional('target', { type: 'string', demandOption: true, describe: 'address or CIDR network' })
      .option('json', { type: 'boolean', describe: 'JSON for scripts' }),
    async (a) => (await import('./commands/explain.js')).explainCommand({ config: a.config, socket: a.socket, target: a.target, json: a.json }))
    .command('status', 'show whether rated is up and what it is doing', (y) => y
      .option('json', { type: 'boolean', describe: 'JSON for scripts' }),
    async (a) => (await import('./commands/status.js')).status({ config: a.config, socket: a.socket, json: a.json }))
    .command('top', 'live view: rates, blocks, dropped packets, clients nearest a limit, latest blocks', (y) => y
      .option('once', { type: 'boolean', describe: 'one snapshot as plain lines (also when stdout is not a terminal)' }),
    async (a) => (await import('./commands/top.js')).top({ config: a.config, socket: a.socket, once: a.once }))
    .command('check-config', 'validate and print the effective configuration', (y) => y
      .option('quiet', { alias: 'q', type: 'boolean', describe: 'print nothing when it is valid (service start-up checks)' }),
    async (a) => (await import('./commands/check-config.js')).checkConfig({ config: a.config, socket: a.socket, quiet: a.quiet }))
    .command('replay <logs..>', 'run nginx access logs through the rules on their own timestamps; touches nothing', (y) => y
      .positional('logs', { type: 'string', array: true, demandOption: true, describe: 'access logs (combined format; .gz read directly; - for stdin), oldest first' })
      .option('json', { type: 'boolean', describe: 'JSON for scripts' })
      .option('pattern', { type: 'string', describe: 'regex with named groups ip and time (and method, status, host, uri) for another log format' })
      .option('allow-self', { type: 'boolean', describe: 'also spare this host\'s own addresses (allowSelf; off: logs are often replayed elsewhere)' }),
    async (a) => (await import('./commands/replay.js')).replay({ config: a.config, socket: a.socket, logs: a.logs, json: a.json, pattern: a.pattern, allowSelf: a.allowSelf }))
    .command('import <files..>', 'block what a blocklist, fail2ban\'s database, CrowdSec or rated export holds', (y) => y
      .positional('files', { type: 'string', array: true, demandOption: true, describe: 'files (- for stdin)' })
      .option('format', { choices: ['auto', 'list', 'fail2ban', 'crowdsec'] as const, default: 'auto' as const, describe: 'list: one address or CIDR per line; fail2ban: its sqlite database; crowdsec: cscli decisions list -o json' })
      .option('for', { type: 'string', describe: 'duration of entries that carry none (default: the first rule\'s block)' })
      .option('reason', { type: 'string', describe: 'reason shown by list (default: the file, jail or scenario)' })
      .option('dry-run', { type: 'boolean', describe: 'count what would be blocked, block nothing' })
      .option('json', { type: 'boolean', describe: 'the counts as JSON' }),
    async (a) => (await moving()).importCommand({ config: a.config, socket: a.socket, files: a.files, format: a.format, for: a.for, reason: a.reason, dryRun: a.dryRun, json: a.json }))
    .command('export', 'print the active blocks, for backups and for rated import elsewhere', (y) => y
      .option('format', { choices: ['list', 'json'] as const, default: 'list' as const, describe: 'list: one address per line with a comment; json: the blocks as rated list --json prints them' }),
    async (a) => (await moving()).exportCommand({ config: a.config, socket: a.socket, format: a.format }))
    .command('migrate <from>', 'take over the rated of 2014\'s per-address iptables rules with no moment unblocked', (y) => y
      .positional('from', { type: 'string', demandOption: true, describe: 'iptables: plain DROP/REJECT rules per address in INPUT/OUTPUT (iptables and ip6tables, legacy and nft)' })
      .option('for', { type: 'string', describe: 'how long the migrated blocks last (default: the first rule\'s block)' })
      .option('dry-run', { type: 'boolean', describe: 'print the plan, change nothing' })
      .option('yes', { type: 'boolean', describe: 'do not ask for confirmation' }),
    async (a) => (await moving()).migrate({ config: a.config, socket: a.socket, from: a.from, for: a.for, dryRun: a.dryRun, yes: a.yes }))
    .command('completion <shell>', 'print a completion script: rated completion bash > /etc/bash_completion.d/rated', (c) => c
      .positional('shell', { choices: ['bash', 'zsh'] as const, demandOption: true, describe: 'bash, or zsh (into a directory of $fpath, as _rated)' }),
    // The types of yargs 18 omit the arguments its showCompletionScript takes ($0, the command to name).
    (a) => { (y as unknown as { showCompletionScript(app: string, cmd: string): void }).showCompletionScript('rated', `completion ${a.shell}`); })
    // What the scripts call on each <Tab>: `rated --get-yargs-completions rated li` prints `list`.
    .completion('__complete', false)
    .demandCommand(1, 'name a command; see rated --help')
    .strict()
    // yargs reports a usage mistake (unknown option, missing argument) with a
    // message and no error; an error is a handler's own, passed on unchanged.
    .fail((msg: string | null, err: Error | undefined) => {
      if (err) throw err;
      // One line, as every error of rated (yargs writes some over two).
      const text = (msg ?? 'invalid arguments').replace(/:?\s*\n\s*/g, ': ');
      throw new RatedError('USAGE', text.includes('--help') ? text : `${text} (see rated --help)`);
    })
    .version(VERSION)
    .help()
    .alias('help', 'h')
    .wrap(Math.min(100, process.stdout.columns || 100));
}

/** Runs the CLI and exits with SPEC §2's codes; the only place that exits on an error. */
export async function main(argv: string[]): Promise<void> {
  // `rated replay … | head`: a reader that went away is not an error.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(EXIT.ok);
  });
  // Scripts ask this often; yargs alone takes longer to load than the answer.
  if (argv.length === 1 && argv[0] === '--version') {
    process.stdout.write(`${VERSION}\n`);
    return;
  }
  // yargs picks the completion script's shell from $SHELL when it starts.
  if (argv[0] === 'completion' && (argv[1] === 'zsh' || argv[1] === 'bash')) process.env.SHELL = `/bin/${argv[1]}`;
  try {
    // yargs drops a lone "-" from positionals: hand it over as a name no file can have.
    await (await cli(argv.map((a) => (a === '-' ? STDIN : a)))).parseAsync();
  } catch (err) {
    if (err instanceof RatedError) {
      process.stderr.write(`rated: ${err.message}\n`);
      process.exit(err.exitCode);
    }
    if (err instanceof Error && err.name === 'YError') {
      process.stderr.write(`rated: ${describe(err)} (see rated --help)\n`);
      process.exit(EXIT.usage);
    }
    process.stderr.write(`rated: ${describe(err)}\n`);
    process.exit(EXIT.runtime);
  }
}

// What yargs' hideBin does: the arguments after node and the script.
await main(process.argv.slice(2));
