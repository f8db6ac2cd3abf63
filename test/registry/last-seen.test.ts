import t from 'tap';
import { LAST_SEEN_PERSIST_SEC, RegistryState } from '../../registry/state.js';

// README "Heartbeats": a heartbeat queues its node for the batched last-seen write only when it enters a
// new LAST_SEEN_PERSIST_SEC window, so the stored value lags the real one by less than the window.
t.test('heartbeat last-seen is queued for the store once per window, with the latest value', async (t) => {
  const G = LAST_SEEN_PERSIST_SEC;
  const state = new RegistryState();
  const start = 1_000 * G; // a window boundary
  const { node } = state.createNode({ publicKey: Buffer.alloc(32, 7).toString('base64'), owner: null, realAddr: '127.0.0.1:4000', hostname: null, nowSec: start });
  state.takeDirtySeen();

  state.markSeen(node, start + 10);
  state.markSeen(node, start + 20);
  t.same(state.takeDirtySeen(), [], 'heartbeats inside the registration window write nothing');
  t.equal(node.lastSeen, start + 20, 'memory always has the latest heartbeat');

  state.markSeen(node, start + G + 1);
  state.markSeen(node, start + G + 25);
  t.same(state.takeDirtySeen(), [[node.id, start + G + 25]], 'entering a new window queues one write of the latest value');
  t.same(state.takeDirtySeen(), [], 'queue drained');

  // the stored value lags by less than one window: simulate many heartbeats and track what is written
  let stored = start + G + 25;
  for (let s = start + G + 26; s < start + 10 * G; s += 7) {
    state.markSeen(node, s);
    for (const [, v] of state.takeDirtySeen()) stored = v;
    t.ok(s - stored < G, `lag at ${s - start} s is below ${G} s`);
  }
});
