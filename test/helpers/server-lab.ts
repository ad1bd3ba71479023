import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanUp } from './cleanup.js';
import { createNamespace, veth, type Namespace } from './netns.js';
import { ratedCli, type CliResult } from './rated.js';

/**
 * A web server's namespace and a client's behind a veth pair, with a
 * configuration for rated in a directory of its own: what the CLI tests of
 * blocks (import, migrate) start from. `cleanup()` deletes all of it.
 */
export interface ServerLab {
  readonly srv: Namespace;
  readonly client: Namespace;
  readonly dir: string;
  readonly config: string;
  readonly socket: string;
  /** `rated ARGS -c CONFIG --socket SOCKET` inside the server's namespace. */
  cli(args: readonly string[], input?: string): Promise<CliResult>;
  /** True when the client's ping reaches the server. */
  ping(): Promise<boolean>;
  cleanup(): Promise<void>;
}

export async function serverLab(o: { name: string; server: string; client: string; block: string; allow?: readonly string[] }): Promise<ServerLab> {
  const srv = await createNamespace(`rtd-${o.name}`);
  const client = await createNamespace(`rtd-${o.name}c`);
  const dir = mkdtempSync(join(tmpdir(), `rated-${o.name}-`));
  const lab: ServerLab = {
    srv, client, dir,
    config: join(dir, 'rated.yml'),
    socket: join(dir, 'rated.sock'),
    cli: (args, input) => ratedCli(srv, [...args, '-c', lab.config, '--socket', lab.socket], { timeoutMs: 120_000, ...(input === undefined ? {} : { input }) }),
    ping: async () => (await client.exec('ping', ['-n', '-c1', '-W1', o.server])).exitCode === 0,
    cleanup: () => cleanUp([() => client.delete(), () => srv.delete(), () => rmSync(dir, { recursive: true, force: true })]),
  };
  try {
    await veth(srv, client, { a: `${o.server}/24`, b: `${o.client}/24` });
    const state = join(dir, 'state');
    mkdirSync(state, { mode: 0o750 });
    writeFileSync(lab.config, [
      'receivers:',
      '  http: { address: 127.0.0.1, port: 8080 }',
      'rules:',
      `  - { name: flood, limit: 100, window: 60s, block: ${o.block} }`,
      `allow: [${['127.0.0.0/8', '"::1/128"', ...(o.allow ?? [])].join(', ')}]`,
      `control: { socket: ${lab.socket} }`,
      `state: { dir: ${state} }`,
      '',
    ].join('\n'));
  } catch (err) {
    await lab.cleanup();
    throw err;
  }
  return lab;
}
