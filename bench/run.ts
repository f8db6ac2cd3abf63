// `npm run bench [-- suite ...]`: run the benchmark suites one after another, each in its own process
// (so one suite's heap and sockets never disturb the next). Every suite prints its table with ratios
// against the baselines measured in the same run and merges its figures into bench/results/latest.json.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

/** Suite name → compiled script and its default arguments. */
const SUITES: Record<string, { script: string; args: string[] }> = {
  transport: { script: 'transport.js', args: [] },
  registry: { script: 'registry-load.js', args: ['--nodes', '100000', '--seconds', '10'] },
  beacon: { script: 'beacon-relay.js', args: [] },
  daemon: { script: 'daemon.js', args: [] },
  nat: { script: 'nat-paths.js', args: [] },
  'nat-daemon': { script: 'nat-paths.js', args: ['--daemons'] },
};

const asked = process.argv.slice(2);
const unknown = asked.filter((s) => !(s in SUITES));
if (unknown.length) {
  console.error(`unknown suite(s): ${unknown.join(', ')}; known: ${Object.keys(SUITES).join(', ')}`);
  process.exit(2);
}
let failed = 0;
for (const name of asked.length ? asked : Object.keys(SUITES)) {
  const { script, args } = SUITES[name]!;
  const path = join(here, script);
  if (!existsSync(path)) {
    console.log(`\n## ${name}: not built (${script} missing), skipped`);
    continue;
  }
  console.log(`\n## ${name}`);
  const r = spawnSync(process.execPath, [path, ...args], { stdio: 'inherit' });
  if (r.status !== 0) {
    failed++;
    console.error(`## ${name} failed (${r.status ?? r.signal})`);
  }
}
process.exit(failed ? 1 : 0);
