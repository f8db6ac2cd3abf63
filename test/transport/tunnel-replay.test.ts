import t from 'tap';
import { CounterWindow, ReplayGuard, type ReplayVerdict } from '../../transport/tunnel/index.js';

/** check-then-commit, as the tunnel does after a frame authenticates. */
function accept(g: ReplayGuard, prefix: number, counter: number): ReplayVerdict {
  const v = g.check(prefix, counter);
  if (v === 'ok') g.commit(prefix, counter);
  return v;
}

t.test('window: in order, duplicates, out of order within the window, too old', async (t) => {
  const g = new ReplayGuard();
  const P = 0x11111111;
  for (let c = 1; c <= 100; c++) t.equal(accept(g, P, c), 'ok');
  t.equal(accept(g, P, 100), 'replay', 'duplicate of the highest');
  t.equal(accept(g, P, 50), 'replay', 'duplicate inside the window');
  t.equal(accept(g, P, 5000), 'ok', 'jump ahead');
  t.equal(accept(g, P, 4000), 'ok', 'late but inside the 4096 window');
  t.equal(accept(g, P, 4000), 'replay');
  t.equal(accept(g, P, 5000 - 4095), 'ok', 'oldest slot still inside');
  t.equal(accept(g, P, 5000 - 4096), 'too_old', 'one past the window');
  t.equal(accept(g, P, 3), 'too_old');
  // Out-of-order arrivals in a block.
  const order = [5010, 5003, 5007, 5001, 5002, 5009, 5004, 5008, 5005, 5006];
  for (const c of order) t.equal(accept(g, P, c), 'ok', `reordered ${c}`);
  for (const c of order) t.equal(accept(g, P, c), 'replay', `replayed ${c}`);
});

t.test('window: slots are cleared when the window slides (no stale bits)', async (t) => {
  const w = new CounterWindow(64);
  for (let c = 0; c < 64; c++) {
    t.equal(w.check(c), 'ok');
    w.commit(c);
  }
  // Slide by 70: every counter between 64 and 133 is fresh although their slots held old bits.
  w.commit(133);
  for (let c = 70; c < 133; c++) if (w.check(c) !== 'ok') t.fail(`counter ${c} should be fresh`);
  w.commit(140);
  t.equal(w.check(76), 'too_old', '140 − 64');
  t.equal(w.check(77), 'ok', 'oldest slot inside');
  t.equal(w.check(100), 'ok');
  t.equal(w.check(133), 'replay');
  t.throws(() => new CounterWindow(100), RangeError, 'size must be a power of two');
});

t.test('a forged frame with a huge counter does not move the window (checked, never committed)', async (t) => {
  const g = new ReplayGuard();
  const P = 7;
  for (let c = 1; c <= 10; c++) accept(g, P, c);
  // The tunnel checks, tries to open, the tag fails: no commit.
  t.equal(g.check(P, Number.MAX_SAFE_INTEGER), 'ok', 'a huge counter passes the check…');
  t.equal(accept(g, P, 11), 'ok', '…but genuine traffic after it is still accepted');
  t.equal(accept(g, P, 12), 'ok');
});

t.test('commit tells whether the frame is the newest of its prefix', async (t) => {
  const g = new ReplayGuard();
  t.equal(g.commit(1, 5), true);
  t.equal(g.commit(1, 3), false, 'older, inside the window');
  t.equal(g.commit(1, 6), true);
  t.equal(g.commit(2, 1), true, 'first of a new prefix');
});

t.test('counter 0 and the 2^53 edge', async (t) => {
  const g = new ReplayGuard();
  t.equal(accept(g, 1, 0), 'ok');
  t.equal(accept(g, 1, 0), 'replay');
  t.equal(accept(g, 1, Number.MAX_SAFE_INTEGER), 'ok');
  t.equal(accept(g, 1, Number.MAX_SAFE_INTEGER - 1), 'ok');
  t.equal(accept(g, 1, Number.MAX_SAFE_INTEGER - 1), 'replay');
});

t.test('new prefix (Go restarts at 1) starts a new window; old prefix keeps its own', async (t) => {
  const g = new ReplayGuard();
  const A = 0xaaaaaaaa;
  const B = 0xbbbbbbbb;
  for (let c = 1; c <= 500; c++) accept(g, A, c);
  t.equal(accept(g, B, 1), 'ok', 'restart at 1 under a new prefix');
  t.equal(accept(g, B, 2), 'ok');
  t.equal(accept(g, A, 501), 'ok', 'a straggler under the previous prefix');
  t.equal(accept(g, A, 250), 'replay', 'old-prefix replay after the prefix change is rejected');
  t.equal(accept(g, A, 1), 'replay');
  t.equal(accept(g, B, 1), 'replay');
  t.same(g.activePrefixes, [A, B]);
});

t.test('prefix history: retired prefixes stay refused; at the bound new prefixes are refused', async (t) => {
  const g = new ReplayGuard({ maxActivePrefixes: 2, maxRetiredPrefixes: 3 });
  accept(g, 1, 1);
  accept(g, 2, 1);
  t.equal(accept(g, 3, 1), 'ok', 'third prefix retires the least recently used (1)');
  t.equal(accept(g, 1, 2), 'stale_prefix', 'fresh counter under a retired prefix is refused');
  t.equal(accept(g, 1, 1), 'stale_prefix', 'replay under a retired prefix is refused');
  accept(g, 4, 1); // retires 2
  accept(g, 5, 1); // retires 3
  t.equal(g.retiredPrefixes, 3);
  t.equal(accept(g, 6, 1), 'prefix_limit', 'history full: refuse rather than forget');
  for (const p of [1, 2, 3]) t.equal(accept(g, p, 9), 'stale_prefix', `prefix ${p} still remembered`);
  t.equal(accept(g, 5, 2), 'ok', 'active prefixes keep working at the bound');
  t.equal(accept(g, 4, 2), 'ok');

  // LRU, not FIFO: a prefix in use is not the one retired.
  const h = new ReplayGuard({ maxActivePrefixes: 2 });
  accept(h, 10, 1);
  accept(h, 20, 1);
  accept(h, 10, 2); // 10 used more recently than 20
  accept(h, 30, 1);
  t.same(h.activePrefixes.sort(), [10, 30]);
  t.equal(accept(h, 20, 2), 'stale_prefix');
});
