// pilotctl task … end to end: a registry and two daemons (real processes); A submits tasks to B, B accepts,
// declines, executes and sends text and file results through pilotctl; A sees the outcome through the SDK.
import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { TaskInfo } from '../../ctl/index.js';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { ctl, PILOTCTL, startNetwork, tempDir, until } from './helpers.js';

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

t.test('task submit → accept / decline → execute → send-results (text, inline file, large file)', async (t) => {
  const { a, b } = await startNetwork(t, { trust: true });
  const A = (args: string[]) => ctl(t, a.socket, args);
  const B = (args: string[]) => ctl(t, b.socket, args);
  const aAddr = String((await a.pilot.info()).address);
  const bAddr = String((await b.pilot.info()).address);

  // All submits first: every result delivered costs the submitter 1 polo point, and B only takes tasks
  // from nodes whose score is at least its own.
  const ids: string[] = [];
  const first = await A(['task', 'submit', 'bravo', '--task', 'count the words']);
  t.equal(first.json.status, 'ok', `pilotctl task submit: ${first.stdout}`);
  ids.push(String(first.json.data?.task_id));
  for (const d of ['render the report', 'mine bitcoin', 'archive the logs']) {
    const r = await a.pilot.tasks.submit('bravo', d);
    t.equal(r.status, 200, `SDK submit "${d}": ${r.message}`);
    ids.push(r.task_id);
  }
  const [tText, tFile, tDecline, tBig] = ids as [string, string, string, string];

  t.same(
    (await a.pilot.tasks.list('submitted')).map((x) => [x.task_id, x.status, x.to_addr]),
    ids.map((id) => [id, 'NEW', bAddr]),
    'A keeps the submitted tasks (NEW, to B)',
  );
  const rec = await B(['task', 'list']);
  t.same(
    (rec.json.data?.tasks as TaskInfo[]).map((x) => [x.task_id, x.status, x.from_addr, x.task_description]),
    [
      [tText, 'NEW', aAddr, 'count the words'],
      [tFile, 'NEW', aAddr, 'render the report'],
      [tDecline, 'NEW', aAddr, 'mine bitcoin'],
      [tBig, 'NEW', aAddr, 'archive the logs'],
    ],
    'B received them as NEW from A',
  );

  // Accept three, decline one.
  const acc = await B(['task', 'accept', '--id', tText]);
  t.match(acc.json, { status: 'ok', data: { task_id: tText, status: 'ACCEPTED' } }, 'pilotctl task accept');
  for (const id of [tFile, tBig]) t.equal((await b.pilot.tasks.accept(id)).status, 'ACCEPTED', `SDK accept ${id}`);
  const dec = await B(['task', 'decline', '--id', tDecline, '--justification', 'not on my hardware']);
  t.equal(dec.json.data?.status, 'DECLINED', 'declined');
  const q = await B(['task', 'queue']);
  t.same((q.json.data?.tasks as TaskInfo[]).map((x) => x.task_id), [tText, tFile, tBig], 'queue: accepted tasks in accept order');

  // Human output: a table.
  const human = await promisify(execFile)(process.execPath, [PILOTCTL, '--socket', b.socket, 'task', 'queue']);
  t.match(human.stdout, /^TASK_ID\s+STATUS\s+FROM\s+DESCRIPTION\n/, 'human task queue: table header');
  t.match(human.stdout, new RegExp(`${tText}\\s+ACCEPTED\\s+${aAddr.replace(/\./g, '\\.')}\\s+count the words`), 'human task queue: row');

  // Typed errors.
  const unknown = await B(['task', 'accept', '--id', 'no-such-task']);
  t.match(unknown.json, { status: 'error', code: 'not_found' }, 'unknown id → not_found');
  t.equal(unknown.code, 1, 'non-zero exit');
  const again = await B(['task', 'accept', '--id', tText]);
  t.match(again.json, { status: 'error', code: 'invalid_argument', detail: 'bad_state' }, 'accepting an ACCEPTED task → bad_state');
  t.match(again.json.hint, /task list/, 'hint names the next command');
  await t.rejects(b.pilot.tasks.sendResults(tText, { text: 'too early' }), { code: 'bad_state' }, 'SDK: results before execute → bad_state');
  const neither = await B(['task', 'send-results', '--id', tText]);
  t.match(neither.json, { status: 'error', code: 'invalid_argument' }, 'send-results without --results/--file');
  await t.rejects(b.pilot.tasks.decline(tDecline, 'twice'), { code: 'bad_state' }, 'SDK: declining a DECLINED task → bad_state');
  await t.rejects(b.pilot.tasks.accept(''), { code: 'bad_request' }, 'SDK: empty id → bad_request');

  // Execute + text results.
  const ex1 = await B(['task', 'execute']);
  t.match(ex1.json.data, { task_id: tText, status: 'EXECUTING', task_description: 'count the words', from_addr: aAddr }, 'execute takes the head');
  const s1 = await B(['task', 'send-results', '--id', tText, '--results', '1234 words']);
  t.match(s1.json.data, { task_id: tText, status: 'COMPLETED' }, 'text results sent');

  // Execute + file results (small: inline in the IPC request; large: read by the daemon from its path).
  const dir = tempDir(t, 'pilotctl-task-files-');
  const small = randomBytes(200 * 1024);
  const big = randomBytes(3 * 1024 * 1024 + 7);
  await writeFile(join(dir, 'report.bin'), small);
  await writeFile(join(dir, 'logs.tar'), big);
  t.equal((await B(['task', 'execute'])).json.data?.task_id, tFile);
  t.match((await B(['task', 'send-results', '--id', tFile, '--file', join(dir, 'report.bin')])).json.data, { status: 'COMPLETED' });
  // The large file through the SDK (same { file } path pilotctl uses).
  t.equal((await b.pilot.tasks.execute()).task_id, tBig, 'SDK execute');
  t.equal((await b.pilot.tasks.sendResults(tBig, { file: join(dir, 'logs.tar') })).status, 'COMPLETED', 'large file results sent');

  const empty = await B(['task', 'execute']);
  t.match(empty.json, { status: 'error', code: 'not_found' }, 'execute on an empty queue → not_found');
  await t.rejects(b.pilot.tasks.sendResults(tBig, { file: join(dir, 'nope.bin') }), { code: 'not_found' }, 'missing result file → not_found');

  // A: statuses and results (status updates and results arrive asynchronously).
  const byId = async (): Promise<Map<string, TaskInfo>> => new Map((await a.pilot.tasks.list('submitted')).map((x) => [x.task_id, x]));
  await until(async () => {
    const m = await byId();
    return [tText, tFile, tBig].every((id) => m.get(id)?.status === 'SUCCEEDED') && m.get(tDecline)?.status === 'DECLINED';
  }, 15_000, 'A sees the outcomes');
  const m = await byId();
  t.equal(m.get(tDecline)?.status_justification, 'not on my hardware', 'A sees the decline justification');
  t.equal(await readFile(m.get(tText)!.result_path!, 'utf8'), '1234 words', 'text result saved on A');
  t.equal(sha(await readFile(m.get(tFile)!.result_path!)), sha(small), 'inline file result: hash verified');
  t.equal(sha(await readFile(m.get(tBig)!.result_path!)), sha(big), 'large file result: hash verified');
  t.ok(m.get(tText)!.result_path!.startsWith(join(a.dir, 'tasks', 'results')), 'results live in tasks/results');

  const listed = await A(['task', 'list', '--type', 'submitted']);
  t.match(listed.json.data, { type: 'submitted' }, 'pilotctl task list --type submitted');
  t.same(
    (listed.json.data?.tasks as TaskInfo[]).map((x) => x.status),
    ['SUCCEEDED', 'SUCCEEDED', 'DECLINED', 'SUCCEEDED'],
    'pilotctl shows the final statuses',
  );
  const bad = await A(['task', 'list', '--type', 'sideways']);
  t.match(bad.json, { status: 'error', code: 'invalid_argument' }, 'bad --type');
});
