// task_* IPC ops (daemon/ipc/task-ops.ts) through a real IPC socket and the SDK's pilot.tasks, against two
// in-process TaskServices wired back to back: arguments, typed error codes + hints, state transitions,
// inline and by-path file results, the disabled service.
import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { Addr } from '../../transport/address.js';
import { DataDir } from '../../daemon/datadir.js';
import { IpcServer, type IpcDaemonApi } from '../../daemon/ipc-server.js';
import { taskOp, type TaskOpsDaemon } from '../../daemon/ipc/task-ops.js';
import { MAX_RESULT_FILE, TaskService } from '../../daemon/services/tasks.js';
import { Pilot, PilotSdkError } from '../../ctl/index.js';
import { duplexPair, until } from './duplex-pair.js';

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

interface Side {
  node: number;
  addr: string;
  svc: TaskService;
  dir: string;
}

async function setup(t: { teardown(fn: () => unknown): void }) {
  const root = await mkdtemp(join(tmpdir(), 'pilot-taskops-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const sides = new Map<string, Side>();
  /** Dials that never get an answer (a peer that hangs). */
  const silent = new Set<string>();
  const make = async (node: number): Promise<Side> => {
    const addr = new Addr(0, node).toString();
    const dd = new DataDir(join(root, `n${node}`));
    await dd.ensure();
    const svc = new TaskService({
      dirs: { submitted: dd.tasksSubmittedDir, received: dd.tasksReceivedDir, results: dd.tasksResultsDir },
      self: () => ({ node, addr }),
      getPoloScore: async () => 0,
      adjustPoloScore: async () => {},
      dial: async (to: string): Promise<Duplex> => {
        const [client, server] = duplexPair();
        if (silent.has(to)) return client;
        const target = sides.get(to);
        if (!target) throw new Error(`dial ${to}: unreachable`);
        void target.svc.handle(server, { remote: addr, remoteNode: node });
        return client;
      },
    });
    const s = { node, addr, svc, dir: dd.root };
    sides.set(addr, s);
    t.teardown(() => svc.close());
    return s;
  };
  const a = await make(1);
  const b = await make(2);
  const hosts: Record<string, number> = { alpha: 1, bravo: 2, hang: 9 };
  const fakeDaemon = (tasks: TaskService | null): IpcDaemonApi =>
    ({
      version: 'test',
      services: { tasks },
      resolveTarget: async (text: string) => Addr.parseLoose(text) ?? new Addr(0, hosts[text] ?? 0xffff),
    }) as unknown as IpcDaemonApi;
  const serve = async (name: string, tasks: TaskService | null): Promise<Pilot> => {
    const ipc = new IpcServer({ path: join(root, `${name}.sock`), daemon: fakeDaemon(tasks) });
    await ipc.listen();
    const pilot = await Pilot.connect({ socket: ipc.path });
    t.teardown(async () => {
      await pilot.close();
      await ipc.close();
    });
    return pilot;
  };
  silent.add(new Addr(0, 9).toString());
  return { a, b, root, serve };
}

t.test('task ops over IPC: lifecycle, results, typed errors', async (t) => {
  const { a, b, root, serve } = await setup(t);
  const pa = await serve('a', a.svc);
  const pb = await serve('b', b.svc);

  // Submit by hostname: the record keeps B's canonical address (status updates are matched on it).
  const ids: string[] = [];
  for (const d of ['one', 'two', 'three']) {
    const r = await pa.tasks.submit('bravo', d);
    t.equal(r.status, 200, `submit ${d}`);
    ids.push(r.task_id);
  }
  const [t1, t2, t3] = ids as [string, string, string];
  t.same((await pa.tasks.list('submitted')).map((x) => [x.task_id, x.to_addr, x.status]), ids.map((id) => [id, b.addr, 'NEW']));
  t.same((await pb.tasks.list()).map((x) => [x.task_id, x.from_addr, x.status]), ids.map((id) => [id, a.addr, 'NEW']), 'default type is received');
  t.equal((await pb.tasks.get(t1)).task_description, 'one', 'task_get');
  t.notOk('queue_seq' in (await pb.tasks.accept(t1)), 'internal bookkeeping is not exposed');
  await pb.tasks.accept(t2);
  t.match(await pb.tasks.decline(t3, 'no'), { status: 'DECLINED', status_justification: 'no' });
  t.same((await pb.tasks.queue()).map((x) => x.task_id), [t1, t2]);

  const code = async (p: Promise<unknown>): Promise<{ code: string; hint: string | undefined }> => {
    try {
      await p;
    } catch (err) {
      t.type(err, PilotSdkError);
      return { code: (err as PilotSdkError).code, hint: (err as PilotSdkError).hint };
    }
    throw new Error('expected a rejection');
  };
  t.match(await code(pb.tasks.accept('nope')), { code: 'not_found', hint: /task list/ }, 'unknown id');
  t.match(await code(pb.tasks.get(t1, 'submitted')), { code: 'not_found' }, 'get on the wrong side');
  t.match(await code(pb.tasks.accept(t1)), { code: 'bad_state', hint: /NEW/ }, 'accept twice');
  t.match(await code(pb.tasks.decline(t1, 'late')), { code: 'bad_state' }, 'decline an accepted task');
  t.match(await code(pb.tasks.sendResults(t1, { text: 'x' })), { code: 'bad_state', hint: /execute/ }, 'results before execute');
  t.match(await code(pb.request('task_accept', {})), { code: 'bad_request' }, 'missing task_id');
  t.match(await code(pb.request('task_accept', { task_id: '' })), { code: 'bad_request' }, 'empty task_id');
  t.match(await code(pb.request('task_list', { type: 'both' })), { code: 'bad_request' }, 'bad type');
  t.match(await code(pb.request('task_submit', { peer: 'bravo', description: '' })), { code: 'bad_request' }, 'empty description');
  t.match(await code(pb.request('task_frobnicate', {})), { code: 'unknown_op' }, 'unknown task op');

  // Execute in accept order; results: exactly one kind.
  t.match(await pb.tasks.execute(), { task_id: t1, status: 'EXECUTING', task_description: 'one' });
  t.match(await code(pb.request('task_send_results', { task_id: t1 })), { code: 'bad_request' }, 'no result');
  t.match(await code(pb.request('task_send_results', { task_id: t1, result_text: 'a', file_path: '/x' })), { code: 'bad_request' }, 'two results');
  t.match(await code(pb.request('task_send_results', { task_id: t1, file_data: Buffer.from('x') })), { code: 'bad_request' }, 'file_data without filename');
  t.match(await code(pb.request('task_send_results', { task_id: t1, file_path: 'relative.txt' })), { code: 'bad_request' }, 'relative path');
  t.match(await code(pb.request('task_send_results', { task_id: t1, file_path: join(root, 'missing') })), { code: 'not_found' }, 'missing file');
  const huge = join(root, 'huge.bin');
  const fh = await open(huge, 'w');
  await fh.truncate(MAX_RESULT_FILE + 1); // sparse
  await fh.close();
  t.match(await code(pb.request('task_send_results', { task_id: t1, file_path: huge })), { code: 'bad_request' }, 'file over the wire limit');
  t.equal(b.svc.get('received', t1)?.status, 'EXECUTING', 'failed sends change nothing');

  const inline = randomBytes(50_000);
  t.match(await pb.tasks.sendResults(t1, { filename: '../../etc/out.bin', data: inline }), { status: 'COMPLETED' }, 'inline bytes');
  t.match(await code(pb.tasks.sendResults(t1, { text: 'again' })), { code: 'bad_state' }, 'results twice');

  t.equal((await pb.tasks.execute()).task_id, t2);
  const bigPath = join(root, 'big.bin');
  const big = randomBytes(1536 * 1024); // over one IPC message: the daemon reads it from the path
  await writeFile(bigPath, big);
  t.match(await pb.request('task_send_results', { task_id: t2, file_path: bigPath }), { status: 'COMPLETED' }, 'by path');
  t.match(await code(pb.tasks.execute()), { code: 'not_found', hint: /accept/ }, 'empty queue');

  await until(() => a.svc.get('submitted', t1)?.status === 'SUCCEEDED' && a.svc.get('submitted', t2)?.status === 'SUCCEEDED');
  const r1 = (await pa.tasks.get(t1, 'submitted')).result_path!;
  t.ok(r1.startsWith(join(a.dir, 'tasks', 'results')), `result stays in tasks/results (${r1})`);
  t.equal(sha(await readFile(r1)), sha(inline), 'inline result intact');
  t.equal(sha(await readFile((await pa.tasks.get(t2, 'submitted')).result_path!)), sha(big), 'by-path result intact');
  await until(() => a.svc.get('submitted', t3)?.status === 'DECLINED');
  t.equal((await pa.tasks.get(t3, 'submitted')).status_justification, 'no');
});

t.test('task_submit gives up on a peer that never answers', async (t) => {
  const { a, serve } = await setup(t);
  const pa = await serve('a', a.svc);
  const err = await pa.tasks.submit('hang', 'anyone?', { timeoutMs: 200 }).catch((e: unknown) => e);
  t.match(err, { code: 'timeout' });
  t.same(await pa.tasks.list('submitted'), [], 'nothing recorded');
});

t.test('task ops when the task service is disabled', async (t) => {
  const { serve } = await setup(t);
  const p = await serve('off', null);
  for (const op of ['task_list', 'task_queue', 'task_execute', 'task_accept']) {
    const err = await p.request(op, { task_id: 'x' }).catch((e: unknown) => e);
    t.match(err, { code: 'unavailable', hint: /services\.taskSubmit/ }, `${op} → unavailable with a hint`);
  }
  // Before the daemon has built its services.
  const d: TaskOpsDaemon = { resolveTarget: async () => new Addr(0, 1) };
  await t.rejects(taskOp(d, 'task_list', {}), { code: 'unavailable' });
});
