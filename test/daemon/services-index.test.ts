import t from 'tap';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DataDir } from '../../daemon/datadir.js';
import { createBuiltinServices } from '../../daemon/services/index.js';
import { loadDaemonConfig } from '../../daemon/config.js';

t.test('config switches decide which built-in services exist, on their v1 ports', async (t) => {
  const dd = new DataDir(await mkdtemp(join(tmpdir(), 'pilot-svc-')));
  const deps = {
    dataDir: dd,
    self: () => ({ node: 1, addr: '0:0000.0000.0001' }),
    getPoloScore: async () => 0,
    adjustPoloScore: async () => {},
    dial: async () => {
      throw new Error('offline');
    },
  };
  const all = createBuiltinServices({ echo: true, dataExchange: true, eventStream: true, taskSubmit: true }, deps);
  t.same(all.list.map((s) => [s.name, s.port]), [['echo', 7], ['dataexchange', 1001], ['eventstream', 1002], ['tasksubmit', 1003]]);
  const res = await loadDaemonConfig(['-registry', 'r:1', '-no-echo', '-no-tasksubmit'], { env: {} });
  if (res.kind !== 'run') throw new Error('expected run');
  const some = createBuiltinServices(res.config.services, deps);
  t.same(some.list.map((s) => s.port), [1001, 1002]);
  t.equal(some.echo, null);
  t.equal(some.tasks, null);
  for (const s of [...all.list, ...some.list]) await s.close();
});
