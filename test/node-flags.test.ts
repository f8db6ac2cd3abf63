import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import t from 'tap';
import { DAEMON_NODE_FLAGS } from '../daemon/node-flags.js';
import { REGISTRY_NODE_FLAGS } from '../registry/node-flags.js';
import { DAEMON_MAIN } from './daemon/daemon-helpers.js';
import { MAIN as REGISTRY_MAIN } from './registry/proc.js';

// A shebang cannot import its flag list, so each binary's first line must be kept equal to it by hand.
const binaries = [
  { name: 'pilot-daemon', main: DAEMON_MAIN, flags: DAEMON_NODE_FLAGS, list: 'DAEMON_NODE_FLAGS', usage: /pilot-daemon/ },
  { name: 'pilot-registry', main: REGISTRY_MAIN, flags: REGISTRY_NODE_FLAGS, list: 'REGISTRY_NODE_FLAGS', usage: /Usage: pilot-registry/ },
];

for (const b of binaries) {
  t.test(`${b.name} carries its V8 flags in the shebang, and node accepts them`, async (t) => {
    const shebang = readFileSync(b.main, 'utf8').split('\n')[0]!;
    t.equal(shebang, `#!/usr/bin/env -S node ${b.flags.join(' ')}`, `the shebang carries ${b.list}`);
    const r = spawnSync('/usr/bin/env', ['-S', shebang.slice('#!/usr/bin/env -S '.length), b.main, '--help'], { encoding: 'utf8' });
    t.equal(r.status, 0, `the shebang line starts ${b.name}: ${r.stderr}`);
    t.match(r.stdout, b.usage);
  });
}
