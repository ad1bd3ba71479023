import { readFileSync } from 'node:fs';
import { execa } from 'execa';
import { onPath } from './prereq.js';

/** A ban as fail2ban keeps it: seconds since the epoch, bantime -1 for permanent. */
export interface Fail2banBan {
  readonly jail: string;
  readonly ip: string;
  readonly timeofban: number;
  readonly bantime: number;
}

// fail2ban's own code makes the database (its schema, its version row); the
// bans are then written as fail2ban writes them: a jails row and a bips row each.
const MAKE = `
import json, sqlite3, sys
from fail2ban.server.database import Fail2BanDb
path = sys.argv[1]
Fail2BanDb(path)
bans = json.load(sys.stdin)
db = sqlite3.connect(path)
for b in bans:
    db.execute("INSERT OR IGNORE INTO jails(name, enabled) VALUES (?, 1)", (b["jail"],))
    db.execute("INSERT INTO bips(ip, jail, timeofban, bantime, bancount, data) VALUES (?, ?, ?, ?, 1, '{}')", (b["ip"], b["jail"], b["timeofban"], b["bantime"]))
    db.execute("INSERT INTO bans(jail, ip, timeofban, bantime, bancount, data) VALUES (?, ?, ?, ?, 1, '{}')", (b["jail"], b["ip"], b["timeofban"], b["bantime"]))
db.commit()
db.close()
`;

/** The python that runs fail2ban (its server's #! line): the one that can import fail2ban's code. */
function fail2banPython(): string {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    const server = `${dir}/fail2ban-server`;
    if (!onPath('fail2ban-server')) break;
    try {
      const first = readFileSync(server, 'utf8').split('\n')[0] ?? '';
      if (first.startsWith('#!')) return first.slice(2).trim().split(/\s+/)[0] ?? 'python3';
    } catch {
      // not in this directory
    }
  }
  return 'python3';
}

/** Creates fail2ban's sqlite database at `path` with fail2ban's own schema (the fail2ban package) and these bans. */
export async function makeFail2banDb(path: string, bans: readonly Fail2banBan[]): Promise<void> {
  await execa(fail2banPython(), ['-c', MAKE, path], { input: JSON.stringify(bans) });
}
