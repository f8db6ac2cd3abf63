import t from 'tap';
import { mkdtemp, readFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { DataDir } from '../../daemon/datadir.js';
import {
  TASK_ACCEPT_TIMEOUT_MS,
  TASK_QUEUE_HEAD_TIMEOUT_MS,
  TaskFrame,
  TaskService,
  encodeTaskFrame,
  taskReward,
} from '../../daemon/services/tasks.js';
import { TypedFrameDecoder, encodeTypedFrame } from '../../daemon/services/frames.js';
import { duplexPair, readAll, until } from './duplex-pair.js';

interface Node {
  node: number;
  addr: string;
  svc: TaskService;
  dd: DataDir;
}

/** A little cluster: nodes reach each other's task service through in-memory duplex pairs. */
async function cluster(t: { teardown(fn: () => unknown): void }, polo: Record<number, number>) {
  const root = await mkdtemp(join(tmpdir(), 'pilot-tasks-'));
  const clock = { now: Date.UTC(2024, 5, 1, 12, 0, 0) };
  const nodes = new Map<string, Node>();
  const poloCalls: Array<[number, number]> = [];
  let ids = 0;
  const make = async (node: number): Promise<Node> => {
    const addr = `0:0000.0000.${node.toString(16).toUpperCase().padStart(4, '0')}`;
    const dd = new DataDir(join(root, `n${node}`));
    await dd.ensure();
    const svc: TaskService = new TaskService({
      dirs: { submitted: dd.tasksSubmittedDir, received: dd.tasksReceivedDir, results: dd.tasksResultsDir },
      self: () => ({ node, addr }),
      getPoloScore: async (n) => {
        if (!(n in polo)) throw new Error('registry: request failed');
        return polo[n]!;
      },
      adjustPoloScore: async (n, d) => {
        poloCalls.push([n, d]);
      },
      dial: async (to, port) => {
        if (port !== 1003) throw new Error(`unexpected port ${port}`);
        const target = nodes.get(to);
        if (!target) throw new Error(`dial ${to}: unreachable`);
        const [client, server] = duplexPair();
        void target.svc.handle(server, { remote: addr, remoteNode: node });
        return client;
      },
      now: () => clock.now,
      newTaskId: () => `task-${node}-${++ids}`,
    });
    const n = { node, addr, svc, dd };
    nodes.set(addr, n);
    t.teardown(() => svc.close());
    return n;
  };
  return { make, clock, poloCalls, nodes };
}

t.test('task lifecycle: submit → accept → execute → results → reward, with status updates to the submitter', async (t) => {
  const { make, clock, poloCalls } = await cluster(t, { 1: 10, 2: 5 });
  const a = await make(1);
  const b = await make(2);
  const res = await a.svc.submit(b.addr, 'summarise the logs');
  t.same(res, { task_id: 'task-1-1', status: 200, message: 'task received, awaiting acceptance' });
  t.equal(b.svc.get('received', 'task-1-1')?.status, 'NEW');
  t.equal(b.svc.get('received', 'task-1-1')?.from_addr, a.addr);
  t.equal(a.svc.get('submitted', 'task-1-1')?.status, 'NEW');

  clock.now += 20_000; // 20 s idle before acceptance
  await b.svc.accept('task-1-1');
  t.same(b.svc.queue().map((r) => r.task_id), ['task-1-1']);
  await until(() => a.svc.get('submitted', 'task-1-1')?.status === 'ACCEPTED');

  clock.now += 120_000; // 2 min staged in the queue
  const next = await b.svc.next();
  t.equal(next?.task_id, 'task-1-1');
  t.equal(next?.status, 'EXECUTING');
  t.equal(await b.svc.next(), null, 'queue empty');
  await until(() => a.svc.get('submitted', 'task-1-1')?.status === 'EXECUTING');

  clock.now += 3 * 60_000; // 3 min of work
  const done = await b.svc.sendResults('task-1-1', { text: 'all good' });
  t.equal(done.status, 'COMPLETED');
  await until(() => a.svc.get('submitted', 'task-1-1')?.status === 'SUCCEEDED');
  const rec = a.svc.get('submitted', 'task-1-1')!;
  t.equal(await readFile(rec.result_path!, 'utf8'), 'all good');
  t.equal(rec.time_idle_ms, 20_000);
  t.equal(rec.time_staged_ms, 120_000);
  t.equal(rec.time_cpu_ms, 180_000);
  // (1 + log2(1 + 3)) × max(0.4, 1 − 0.1 − 0.06) = 3 × 0.84 = 2.52 → 3
  t.equal(rec.reward, 3);
  await until(() => poloCalls.length === 2);
  t.same(poloCalls, [[2, 3], [1, -1]], 'receiver credited, submitter charged');
  // Persisted under tasks/…
  t.same(await readdir(a.dd.tasksSubmittedDir), ['task-1-1.json']);
  t.same(await readdir(b.dd.tasksReceivedDir), ['task-1-1.json']);
  t.equal(JSON.parse(await readFile(join(b.dd.tasksReceivedDir, 'task-1-1.json'), 'utf8')).status, 'COMPLETED');
  t.same(await readdir(a.dd.tasksResultsDir), ['task-1-1.txt']);
  await t.rejects(b.svc.sendResults('task-1-1', { text: 'again' }), { code: 'bad_state' });
});

t.test('file results are saved under a sanitised name', async (t) => {
  const { make } = await cluster(t, { 1: 1, 2: 1 });
  const a = await make(1);
  const b = await make(2);
  await a.svc.submit(b.addr, 'render');
  await b.svc.accept('task-1-1');
  await b.svc.next();
  await b.svc.sendResults('task-1-1', { filename: '../../../etc/cron.d/x.png', data: Buffer.from([1, 2, 3]) });
  await until(() => a.svc.get('submitted', 'task-1-1')?.status === 'SUCCEEDED');
  t.same(await readdir(a.dd.tasksResultsDir), ['task-1-1-x.png']);
  t.same([...(await readFile(join(a.dd.tasksResultsDir, 'task-1-1-x.png')))], [1, 2, 3]);
});

t.test('acceptance rule: submitter polo score must be ≥ the receiver\'s; lookup failure rejects', async (t) => {
  const { make } = await cluster(t, { 1: 10, 2: 5 });
  const a = await make(1);
  const b = await make(2);
  const low = await b.svc.submit(a.addr, 'please');
  t.equal(low.status, 400);
  t.match(low.message, /polo score too low: 5 < 10/);
  t.equal(a.svc.list('received').length, 0);
  t.equal(b.svc.list('submitted').length, 0, 'rejected submits are not recorded');
  const c = await make(3); // unknown to the registry
  const unknown = await c.svc.submit(b.addr, 'hi');
  t.equal(unknown.status, 400);
  t.match(unknown.message, /cannot verify polo score/);
});

t.test('timeouts with a fake clock: NEW → CANCELLED after 1 min, queue head → EXPIRED after 1 h (polo −1)', async (t) => {
  const { make, clock, poloCalls } = await cluster(t, { 1: 1, 2: 1 });
  const a = await make(1);
  const b = await make(2);
  await a.svc.submit(b.addr, 'one');
  await a.svc.submit(b.addr, 'two');
  await a.svc.submit(b.addr, 'three');
  await b.svc.accept('task-1-1');
  await b.svc.accept('task-1-2');
  clock.now += TASK_ACCEPT_TIMEOUT_MS - 1;
  await b.svc.sweep();
  t.equal(b.svc.get('received', 'task-1-3')?.status, 'NEW', 'not yet');
  clock.now += 1;
  await b.svc.sweep();
  t.equal(b.svc.get('received', 'task-1-3')?.status, 'CANCELLED');
  await until(() => a.svc.get('submitted', 'task-1-3')?.status === 'CANCELLED');
  await t.rejects(b.svc.accept('task-1-3'), { code: 'bad_state' });

  clock.now += TASK_QUEUE_HEAD_TIMEOUT_MS - TASK_ACCEPT_TIMEOUT_MS - 1;
  await b.svc.sweep();
  t.same(b.svc.queue().map((r) => r.task_id), ['task-1-1', 'task-1-2'], 'head not expired 1 ms early');
  clock.now += 1;
  await b.svc.sweep();
  t.equal(b.svc.get('received', 'task-1-1')?.status, 'EXPIRED');
  t.same(b.svc.queue().map((r) => r.task_id), ['task-1-2'], 'next task is the head');
  t.equal(b.svc.get('received', 'task-1-2')?.staged_at, new Date(clock.now).toISOString(), 'new head timer starts now');
  await until(() => a.svc.get('submitted', 'task-1-1')?.status === 'EXPIRED');
  t.same(poloCalls, [[2, -1]], 'receiver penalised once');
  clock.now += TASK_QUEUE_HEAD_TIMEOUT_MS - 1;
  await b.svc.sweep();
  t.equal(b.svc.get('received', 'task-1-2')?.status, 'ACCEPTED', 'second head has its own full hour');
  // decline path
  await a.svc.submit(b.addr, 'four');
  await b.svc.decline('task-1-4', 'busy');
  await until(() => a.svc.get('submitted', 'task-1-4')?.status === 'DECLINED');
  t.equal(a.svc.get('submitted', 'task-1-4')?.status_justification, 'busy');
});

t.test('state survives a restart: load() restores records and the queue order', async (t) => {
  const { make, nodes } = await cluster(t, { 1: 1, 2: 1 });
  const a = await make(1);
  const b = await make(2);
  for (const d of ['x', 'y', 'z']) await a.svc.submit(b.addr, d);
  await b.svc.accept('task-1-2');
  await b.svc.accept('task-1-1');
  await b.svc.close();
  const again = new TaskService({
    dirs: { submitted: b.dd.tasksSubmittedDir, received: b.dd.tasksReceivedDir, results: b.dd.tasksResultsDir },
    self: () => ({ node: 2, addr: b.addr }),
    getPoloScore: async () => 0,
    adjustPoloScore: async () => {},
    dial: async () => {
      throw new Error('offline');
    },
  });
  await again.load();
  t.same(again.queue().map((r) => r.task_id), ['task-1-2', 'task-1-1']);
  t.equal(again.list('received').length, 3);
  t.ok(nodes.size === 2);
  await again.close();
});

t.test('spoofing and malformed frames: only the task\'s receiver may update it; bad input never crashes', async (t) => {
  const { make } = await cluster(t, { 1: 1, 2: 1, 3: 1 });
  const a = await make(1);
  const b = await make(2);
  const c = await make(3);
  await a.svc.submit(b.addr, 'job');
  // C pretends to be the receiver and sends results for A's task.
  const [cc, cs] = duplexPair();
  cc.on('error', () => {});
  const handled = a.svc.handle(cs, { remote: c.addr, remoteNode: 3 });
  cc.end(
    encodeTaskFrame(TaskFrame.SendResults, { task_id: 'task-1-1', result_type: 'text', result_text: 'forged', completed_at: '' }),
  );
  await handled;
  t.equal(a.svc.get('submitted', 'task-1-1')?.status, 'NEW', 'forged results ignored');
  t.equal(a.svc.stats.malformed, 1);

  const send = async (frame: Buffer): Promise<{ reply: Buffer; destroyed: boolean }> => {
    const [client, server] = duplexPair();
    client.on('error', () => {});
    const done = b.svc.handle(server, { remote: a.addr, remoteNode: 1 });
    const got = readAll(client);
    client.end(frame);
    const reply = await got;
    await done;
    return { reply, destroyed: server.destroyed };
  };
  const r1 = await send(encodeTypedFrame(TaskFrame.Submit, Buffer.from('{broken')));
  const dec = new TypedFrameDecoder();
  const [f1] = dec.push(r1.reply);
  t.same(JSON.parse(f1!.payload.toString()), { task_id: '', status: 400, message: 'task frame is not valid JSON' });
  const r2 = await send(encodeTaskFrame(TaskFrame.Submit, { task_id: '../../etc/passwd', task_description: 'x' }));
  t.equal(JSON.parse(new TypedFrameDecoder().push(r2.reply)[0]!.payload.toString()).status, 400, 'path-like task id refused');
  const r3 = await send(encodeTypedFrame(77, Buffer.from('{}')));
  t.ok(r3.destroyed && r3.reply.length === 0, 'unknown frame type closes');
  const big = Buffer.alloc(8);
  big.writeUInt32BE(1, 0);
  big.writeUInt32BE(16 * 1024 * 1024 + 1, 4);
  const r4 = await send(big);
  t.ok(r4.destroyed && r4.reply.length === 0, 'oversize frame closes');
  const r5 = await send(encodeTaskFrame(TaskFrame.StatusUpdate, { task_id: 'nope', status: 'WHATEVER' }));
  t.ok(r5.destroyed, 'bad status update closes');
  t.same(await readdir(b.dd.tasksReceivedDir), ['task-1-1.json'], 'nothing else written');
});

t.test('duplicate task ids and the queue cap are refused with 400', async (t) => {
  const { make } = await cluster(t, { 1: 1, 2: 1 });
  const a = await make(1);
  await make(2);
  const send = async (body: object) => {
    const [client, server] = duplexPair();
    const done = a.svc.handle(server, { remote: '0:0000.0000.0002', remoteNode: 2 });
    const got = readAll(client);
    client.end(encodeTaskFrame(TaskFrame.Submit, body));
    const reply = await got;
    await done;
    return JSON.parse(new TypedFrameDecoder().push(reply)[0]!.payload.toString());
  };
  t.equal((await send({ task_id: 'same', task_description: 'a' })).status, 200);
  const dup = await send({ task_id: 'same', task_description: 'a' });
  t.same(dup, { task_id: 'same', status: 400, message: 'duplicate task_id' });

  const root = await mkdtemp(join(tmpdir(), 'pilot-tasks-cap-'));
  const dd = new DataDir(root);
  const capped = new TaskService({
    dirs: { submitted: dd.tasksSubmittedDir, received: dd.tasksReceivedDir, results: dd.tasksResultsDir },
    self: () => ({ node: 1, addr: '0:0000.0000.0001' }),
    getPoloScore: async () => 0,
    adjustPoloScore: async () => {},
    dial: async (): Promise<Duplex> => {
      throw new Error('offline');
    },
    maxTasks: 1,
  });
  t.teardown(() => capped.close());
  const sendTo = async (body: object) => {
    const [client, server] = duplexPair();
    const done = capped.handle(server, { remote: '0:0000.0000.0002', remoteNode: 2 });
    const got = readAll(client);
    client.end(encodeTaskFrame(TaskFrame.Submit, body));
    const reply = await got;
    await done;
    return JSON.parse(new TypedFrameDecoder().push(reply)[0]!.payload.toString());
  };
  t.equal((await sendTo({ task_id: 'one', task_description: 'a' })).status, 200);
  t.same(await sendTo({ task_id: 'two', task_description: 'a' }), { task_id: 'two', status: 400, message: 'task queue full' });
});

t.test('reward formula (wire reference §1.14)', async (t) => {
  t.equal(taskReward({}), 1, 'no work → minimum 1');
  t.equal(taskReward({ time_cpu_ms: 60_000 }), 2, '1 cpu-minute: 1 + log2(2) = 2');
  t.equal(taskReward({ time_cpu_ms: 3 * 60_000 }), 3, '3 cpu-minutes: 1 + log2(4) = 3');
  t.equal(taskReward({ time_cpu_ms: 7 * 60_000, time_idle_ms: 60_000, time_staged_ms: 600_000 }), 2, '4 × max(0.4, 0.4) = 1.6 → 2');
  t.equal(taskReward({ time_cpu_ms: 15 * 60_000, time_idle_ms: 30_000 }), 4, '5 × 0.85 = 4.25 → 4');
  t.equal(taskReward({ time_cpu_ms: 0, time_idle_ms: 10 * 60_000, time_staged_ms: 10 * 3600_000 }), 1, 'penalties capped, minimum 1');
  t.equal(taskReward({ time_cpu_ms: 255 * 60_000 }), 9, '1 + log2(256) = 9');
});

t.test('sweep timer runs on the injected scheduler and stops on close', async (t) => {
  let scheduled: (() => void) | null = null;
  let cleared = false;
  const root = await mkdtemp(join(tmpdir(), 'pilot-tasks-timer-'));
  const dd = new DataDir(root);
  const svc = new TaskService({
    dirs: { submitted: dd.tasksSubmittedDir, received: dd.tasksReceivedDir, results: dd.tasksResultsDir },
    self: () => ({ node: 1, addr: '0:0000.0000.0001' }),
    getPoloScore: async () => 0,
    adjustPoloScore: async () => {},
    dial: async (): Promise<Duplex> => {
      throw new Error('offline');
    },
    setInterval: (fn, ms) => {
      t.equal(ms, 10_000);
      scheduled = fn;
      return {};
    },
    clearInterval: () => {
      cleared = true;
    },
  });
  svc.start();
  t.ok(scheduled, 'sweep scheduled every 10 s');
  (scheduled as unknown as () => void)();
  await svc.close();
  t.ok(cleared);
});
