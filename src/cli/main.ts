import { parseArgs } from 'node:util';
import { describe, EXIT, RatedError } from '../errors.js';
import { VERSION } from '../version.js';

// Each command loads its own modules when it runs: `rated --version` and
// `rated list` never load the daemon, the receivers or the Redis client, and
// the command line is read with Node's own parseArgs (an argument parser
// library alone took longer to load than `rated block` takes to answer).
const blocks = (): Promise<typeof import('./commands/blocks.js')> => import('./commands/blocks.js');
const moving = (): Promise<typeof import('./commands/moving.js')> => import('./commands/moving.js');

type Value = string | boolean | number | string[] | undefined;
/** What a command's handler gets: every option and positional by its camelCase name. */
type Args = Record<string, Value>;

interface Option {
  readonly name: string;
  readonly type: 'string' | 'boolean' | 'number';
  readonly describe: string;
  readonly short?: string;
  readonly choices?: readonly string[];
  readonly default?: string;
}

interface Positional {
  readonly name: string;
  readonly describe: string;
  /** Takes every remaining argument (at least one). */
  readonly many?: boolean;
  readonly choices?: readonly string[];
}

interface Command {
  readonly name: string;
  readonly describe: string;
  readonly positionals?: readonly Positional[];
  readonly options?: readonly Option[];
  readonly run: (a: Args) => Promise<void> | void;
}

const GLOBAL: readonly Option[] = [
  { name: 'config', short: 'c', type: 'string', describe: 'configuration file (default: $RATED_CONFIG, /etc/rated/rated.yml, embedded defaults)' },
  { name: 'socket', type: 'string', describe: 'control socket (default: control.socket of the configuration, /run/rated/rated.sock)' },
  { name: 'version', type: 'boolean', describe: 'Show version number' },
  { name: 'help', short: 'h', type: 'boolean', describe: 'Show help' },
];

const json = (what = 'JSON for scripts'): Option => ({ name: 'json', type: 'boolean', describe: what });
const str = (a: Args, k: string): string | undefined => a[k] as string | undefined;
const bool = (a: Args, k: string): boolean | undefined => a[k] as boolean | undefined;
const common = (a: Args): { config?: string; socket?: string } => ({ config: str(a, 'config'), socket: str(a, 'socket') });

const COMMANDS: readonly Command[] = [
  {
    name: 'run', describe: 'run the daemon in the foreground',
    options: [{ name: 'dry-run', type: 'boolean', describe: 'decide, log and list, never touch the kernel' }],
    run: async (a) => (await import('./commands/run.js')).run({ ...common(a), dryRun: bool(a, 'dryRun') }),
  },
  {
    name: 'list', describe: 'list active blocks',
    options: [json(),
      { name: 'sort', type: 'string', choices: ['dropped', 'expires', 'since'], describe: 'most dropped, soonest to end, or newest first' },
      { name: 'limit', type: 'number', describe: 'at most this many blocks (after --sort)' }],
    run: async (a) => (await blocks()).list({ ...common(a), json: bool(a, 'json'), sort: a.sort as 'dropped' | undefined, limit: a.limit as number | undefined }),
  },
  {
    name: 'block', describe: 'block an address or CIDR network',
    positionals: [{ name: 'target', describe: 'address or CIDR network' }],
    options: [
      { name: 'for', type: 'string', describe: 'duration: 90s, 10m, 6h, 1d or seconds (default: the first rule\'s block; 6h with the embedded rules)' },
      { name: 'reason', type: 'string', describe: 'why, shown by list' },
      json('print the block as JSON')],
    run: async (a) => (await blocks()).block({ ...common(a), target: str(a, 'target') ?? '', for: str(a, 'for'), reason: str(a, 'reason'), json: bool(a, 'json') }),
  },
  {
    name: 'unblock', describe: 'lift a block and forget the client\'s counters',
    positionals: [{ name: 'target', describe: 'address or CIDR network' }],
    run: async (a) => (await blocks()).unblock({ ...common(a), target: str(a, 'target') ?? '' }),
  },
  {
    name: 'flush', describe: 'lift every block rated manages, and nothing else',
    options: [{ name: 'yes', type: 'boolean', describe: 'do not ask for confirmation' }],
    run: async (a) => (await blocks()).flush({ ...common(a), yes: bool(a, 'yes') }),
  },
  {
    name: 'explain', describe: 'why an address is or is not blocked: allow list, block, counts per rule',
    positionals: [{ name: 'target', describe: 'address or CIDR network' }],
    options: [json()],
    run: async (a) => (await import('./commands/explain.js')).explainCommand({ ...common(a), target: str(a, 'target') ?? '', json: bool(a, 'json') }),
  },
  {
    name: 'status', describe: 'show whether rated is up and what it is doing',
    options: [json()],
    run: async (a) => (await import('./commands/status.js')).status({ ...common(a), json: bool(a, 'json') }),
  },
  {
    name: 'top', describe: 'live view: rates, blocks, dropped packets, clients nearest a limit, latest blocks',
    options: [{ name: 'once', type: 'boolean', describe: 'one snapshot as plain lines (also when stdout is not a terminal)' }],
    run: async (a) => (await import('./commands/top.js')).top({ ...common(a), once: bool(a, 'once') }),
  },
  {
    name: 'check-config', describe: 'validate and print the effective configuration',
    options: [{ name: 'quiet', short: 'q', type: 'boolean', describe: 'print nothing when it is valid (service start-up checks)' }],
    run: async (a) => (await import('./commands/check-config.js')).checkConfig({ ...common(a), quiet: bool(a, 'quiet') }),
  },
  {
    name: 'replay', describe: 'run nginx access logs through the rules on their own timestamps; touches nothing',
    positionals: [{ name: 'logs', many: true, describe: 'access logs (combined format; .gz read directly; - for stdin), oldest first' }],
    options: [json(),
      { name: 'pattern', type: 'string', describe: 'regex with named groups ip and time (and method, status, host, uri) for another log format' },
      { name: 'allow-self', type: 'boolean', describe: 'also spare this host\'s own addresses (allowSelf; off: logs are often replayed elsewhere)' }],
    run: async (a) => (await import('./commands/replay.js')).replay({
      ...common(a), logs: a.logs as string[], json: bool(a, 'json'), pattern: str(a, 'pattern'), allowSelf: bool(a, 'allowSelf'),
    }),
  },
  {
    name: 'import', describe: 'block what a blocklist, fail2ban\'s database, CrowdSec or rated export holds',
    positionals: [{ name: 'files', many: true, describe: 'files (- for stdin)' }],
    options: [
      { name: 'format', type: 'string', choices: ['auto', 'list', 'fail2ban', 'crowdsec'], default: 'auto', describe: 'list: one address or CIDR per line; fail2ban: its sqlite database; crowdsec: cscli decisions list -o json' },
      { name: 'for', type: 'string', describe: 'duration of entries that carry none (default: the first rule\'s block)' },
      { name: 'reason', type: 'string', describe: 'reason shown by list (default: the file, jail or scenario)' },
      { name: 'dry-run', type: 'boolean', describe: 'count what would be blocked, block nothing' },
      json('the counts as JSON')],
    run: async (a) => (await moving()).importCommand({
      ...common(a), files: a.files as string[], format: a.format as 'auto', for: str(a, 'for'), reason: str(a, 'reason'), dryRun: bool(a, 'dryRun'), json: bool(a, 'json'),
    }),
  },
  {
    name: 'export', describe: 'print the active blocks, for backups and for rated import elsewhere',
    options: [{ name: 'format', type: 'string', choices: ['list', 'json'], default: 'list', describe: 'list: one address per line with a comment; json: the blocks as rated list --json prints them' }],
    run: async (a) => (await moving()).exportCommand({ ...common(a), format: a.format as 'list' | 'json' }),
  },
  {
    name: 'migrate', describe: 'take over the rated of 2014\'s per-address iptables rules with no moment unblocked',
    positionals: [{ name: 'from', describe: 'iptables: plain DROP/REJECT rules per address in INPUT/OUTPUT (iptables and ip6tables, legacy and nft)' }],
    options: [
      { name: 'for', type: 'string', describe: 'how long the migrated blocks last (default: the first rule\'s block)' },
      { name: 'dry-run', type: 'boolean', describe: 'print the plan, change nothing' },
      { name: 'yes', type: 'boolean', describe: 'do not ask for confirmation' }],
    run: async (a) => (await moving()).migrate({ ...common(a), from: str(a, 'from') ?? '', for: str(a, 'for'), dryRun: bool(a, 'dryRun'), yes: bool(a, 'yes') }),
  },
  {
    name: 'completion', describe: 'print a completion script: rated completion bash > /etc/bash_completion.d/rated',
    positionals: [{ name: 'shell', choices: ['bash', 'zsh'], describe: 'bash, or zsh (into a directory of $fpath, as _rated)' }],
    run: async (a) => { process.stdout.write((await import('./completion.js')).completionScript(a.shell as 'bash' | 'zsh')); },
  },
];

const usage = (message: string): RatedError =>
  new RatedError('USAGE', message.includes('--help') ? message : `${message} (see rated --help)`);

const camel = (name: string): string => name.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

/** `<target>`, `<logs..>`: how a positional is shown. */
const shown = (p: Positional): string => `<${p.name}${p.many ? '..' : ''}>`;
const line = (c: Command): string => [c.name, ...(c.positionals ?? []).map(shown)].join(' ');

/** Words wrapped to `width`, each line after the first indented by `indent`. */
function wrap(text: string, width: number, indent: number): string {
  const lines: string[] = [];
  let cur = '';
  for (const word of text.split(' ')) {
    if (cur !== '' && cur.length + 1 + word.length > width) {
      lines.push(cur);
      cur = word;
    } else cur = cur === '' ? word : `${cur} ${word}`;
  }
  lines.push(cur);
  return lines.join(`\n${' '.repeat(indent)}`);
}

function optionRows(options: readonly Option[], width: number): string[] {
  const flag = (o: Option): string => `${o.short ? `-${o.short}, ` : '    '}--${o.name}`;
  const w = Math.max(...options.map((o) => flag(o).length)) + 2;
  return options.map((o) => {
    const notes = [o.choices ? `[choices: ${o.choices.map((c) => `"${c}"`).join(', ')}]` : '', o.default !== undefined ? `[default: "${o.default}"]` : '', `[${o.type}]`]
      .filter(Boolean).join(' ');
    return `  ${flag(o).padEnd(w)}${wrap(`${o.describe} ${notes}`, width - w - 2, w + 2)}`;
  });
}

/** The help of the whole CLI, or of one command. */
function helpText(command?: Command, width = Math.min(100, process.stdout.columns || 100)): string {
  if (!command) {
    const w = Math.max(...COMMANDS.map((c) => `rated ${line(c)}`.length)) + 2;
    return [
      'rated <command> [options]', '', 'Commands:',
      ...COMMANDS.map((c) => `  ${`rated ${line(c)}`.padEnd(w)}${wrap(c.describe, width - w - 2, w + 2)}`),
      '', 'Options:', ...optionRows(GLOBAL, width), '',
    ].join('\n');
  }
  const positionals = command.positionals ?? [];
  const pw = Math.max(0, ...positionals.map((p) => p.name.length)) + 2;
  return [
    `rated ${line(command)}`, '', command.describe, '',
    ...(positionals.length > 0
      ? ['Positionals:', ...positionals.map((p) => `  ${p.name.padEnd(pw)}${wrap(`${p.describe}${p.choices ? ` [choices: ${p.choices.map((c) => `"${c}"`).join(', ')}]` : ''} [required]`, width - pw - 2, pw + 2)}`), '']
      : []),
    'Options:', ...optionRows([...GLOBAL, ...(command.options ?? [])], width), '',
  ].join('\n');
}

function checkChoice(what: string, given: string, choices: readonly string[] | undefined): void {
  if (choices && !choices.includes(given)) {
    throw usage(`Invalid values: Argument: ${what}, Given: "${given}", Choices: ${choices.map((c) => `"${c}"`).join(', ')}`);
  }
}

/** Parses `argv` for one command: its options and the global ones, its positionals, checked. */
function parseCommand(command: Command, argv: readonly string[]): Args {
  const options = [...GLOBAL, ...(command.options ?? [])];
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      options: Object.fromEntries(options.map((o) => [o.name, { type: o.type === 'boolean' ? 'boolean' as const : 'string' as const, ...(o.short ? { short: o.short } : {}) }])),
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    const e = err as Error & { code?: string };
    const unknown = /Unknown option '(-{1,2})([^']*)'/.exec(e.message);
    if (unknown) throw usage(`Unknown argument: ${unknown[2] ?? ''}`);
    throw usage(e.message.replace(/\s*\n\s*/g, ' '));
  }
  const args: Args = {};
  for (const o of options) {
    const v = parsed.values[o.name];
    if (v === undefined) {
      if (o.default !== undefined) args[camel(o.name)] = o.default;
      continue;
    }
    if (o.type === 'number') {
      const n = Number(v);
      if (v === '' || !Number.isFinite(n)) throw usage(`--${o.name}: expected a number, got ${JSON.stringify(v)}`);
      args[camel(o.name)] = n;
    } else {
      if (typeof v === 'string') checkChoice(o.name, v, o.choices);
      args[camel(o.name)] = v;
    }
  }
  const rest = [...parsed.positionals];
  const wanted = command.positionals ?? [];
  for (const p of wanted) {
    if (p.many) {
      if (rest.length === 0) throw usage(`Not enough non-option arguments: got 0, need at least ${wanted.length}`);
      args[camel(p.name)] = rest.splice(0);
    } else {
      const v = rest.shift();
      if (v === undefined) throw usage(`Not enough non-option arguments: got ${wanted.indexOf(p)}, need at least ${wanted.length}`);
      checkChoice(p.name, v, p.choices);
      args[camel(p.name)] = v;
    }
  }
  if (rest.length > 0) throw usage(`Unknown argument: ${rest[0] ?? ''}`);
  return args;
}

/** What a shell offers after the words typed so far (`rated __complete rated li` prints `list`). */
function completions(words: readonly string[]): string[] {
  const typed = words.slice(1);
  const current = typed.at(-1) ?? '';
  const command = COMMANDS.find((c) => c.name === typed[0]);
  if (typed.length <= 1) {
    return current.startsWith('-') ? GLOBAL.map((o) => `--${o.name}`).filter((f) => f.startsWith(current)) : COMMANDS.map((c) => c.name).filter((n) => n.startsWith(current));
  }
  if (!command) return [];
  const options = [...GLOBAL, ...(command.options ?? [])];
  const previous = typed.at(-2) ?? '';
  const expecting = options.find((o) => `--${o.name}` === previous && o.type !== 'boolean');
  if (expecting?.choices) return expecting.choices.filter((c) => c.startsWith(current));
  if (expecting) return [];
  if (current.startsWith('-')) return options.map((o) => `--${o.name}`).filter((f) => f.startsWith(current));
  const positional = command.positionals?.find((p) => p.choices);
  return positional?.choices?.filter((c) => c.startsWith(current)) ?? [];
}

/** Runs the CLI and exits with SPEC §2's codes; the only place that exits on an error. */
export async function main(argv: string[]): Promise<void> {
  // `rated replay … | head`: a reader that went away is not an error.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(EXIT.ok);
  });
  try {
    // What the completion scripts call on each <Tab> (and those of earlier versions).
    if (argv[0] === '__complete' || argv[0] === '--get-yargs-completions') {
      for (const c of completions(argv.slice(1))) process.stdout.write(`${c}\n`);
      return;
    }
    // The command is the first word that is not a global option or its value (`rated -c FILE list`).
    let at = 0;
    while (at < argv.length && (argv[at] ?? '').startsWith('-') && argv[at] !== '-' && argv[at] !== '--') {
      at += GLOBAL.some((o) => o.type !== 'boolean' && (argv[at] === `--${o.name}` || (o.short !== undefined && argv[at] === `-${o.short}`))) ? 2 : 1;
    }
    const name = argv[at];
    const before = argv.slice(0, Math.min(at, argv.length));
    if (name === undefined || name === '--') {
      if (before.includes('--version')) { process.stdout.write(`${VERSION}\n`); return; }
      if (before.includes('--help') || before.includes('-h')) { process.stdout.write(helpText()); return; }
      const unknown = before.find((a) => a.startsWith('-') && !GLOBAL.some((o) => a === `--${o.name}` || a.startsWith(`--${o.name}=`) || a === `-${o.short ?? ''}`));
      throw usage(unknown === undefined ? 'name a command; see rated --help' : `Unknown argument: ${unknown.replace(/^-+/, '')}`);
    }
    const command = COMMANDS.find((c) => c.name === name);
    if (!command) throw usage(`Unknown argument: ${name}`);
    const rest = [...before, ...argv.slice(at + 1)];
    // Before a `--`: what follows it is values, whatever they look like.
    const flags = rest.includes('--') ? rest.slice(0, rest.indexOf('--')) : rest;
    if (flags.includes('--help') || flags.includes('-h')) { process.stdout.write(helpText(command)); return; }
    if (flags.includes('--version')) { process.stdout.write(`${VERSION}\n`); return; }
    await command.run(parseCommand(command, rest));
  } catch (err) {
    if (err instanceof RatedError) {
      process.stderr.write(`rated: ${err.message}\n`);
      process.exit(err.exitCode);
    }
    process.stderr.write(`rated: ${describe(err)}\n`);
    process.exit(EXIT.runtime);
  }
}

// The arguments after node and the script.
await main(process.argv.slice(2));
