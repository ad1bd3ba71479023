// The soak of test/soak.ts, shortened to fit the suite: 40 seconds of
// sustained, mixed notifications with blocks and expiries all along. The
// full run is `npm run soak` (10 minutes, or `-- --minutes N`).
import { test } from 'node:test';
import { missingPrereqs, prereqsMet } from '../helpers/prereq.js';
import { soak } from '../soak.js';

const TOOLS = ['ip', 'nft'];
const SKIP = prereqsMet(TOOLS) ? false : `needs ${missingPrereqs(TOOLS).join(', ')}`;

test('soak, 40 seconds: alive, no error, memory level, every expired block lifted, list and kernel agree', { skip: SKIP, timeout: 180_000 }, async (t) => {
  const result = await soak({ seconds: 40, report: (line) => t.diagnostic(line) });
  t.diagnostic(`RSS ${result.rssStartMiB} MiB at start, ${result.rssEndMiB} MiB at the end, ${result.rssMaxMiB} MiB at most`);
});
