/**
 * IPC extension ops for task submission (port 1003, wire reference §1.14, §2 `pilotctl task …`; SPEC §8).
 * The IPC server hands every `task_*` request here; the daemon's TaskService does the work.
 *
 *   task_submit       {peer, description, timeout_ms?}          → {task_id, status: 200|400, message}
 *   task_list         {type?: 'received'|'submitted'}           → {type, tasks: TaskView[]}
 *   task_queue        {}                                        → {tasks: TaskView[]}  (accepted, head first)
 *   task_get          {task_id, type?}                          → TaskView
 *   task_accept       {task_id}                                 → TaskView  (NEW → ACCEPTED)
 *   task_decline      {task_id, justification?}                 → TaskView  (NEW → DECLINED)
 *   task_execute      {}                                        → TaskView  (queue head → EXECUTING)
 *   task_send_results {task_id, result_text | filename+file_data | file_path} → TaskView (EXECUTING → COMPLETED)
 *
 * Errors (codes as the client sees them after toIpcError): `bad_request` for bad arguments, `not_found` for
 * an unknown task id or an empty queue, `bad_state` for a transition the task's status does not allow,
 * `unavailable` when the daemon runs without the task service; each with a hint naming the next command.
 *
 * Submits go through the daemon (not straight from the client over a stream) so the daemon records the task
 * in tasks/submitted and can match the receiver's status updates and results to it.
 */
import { readFile, stat } from 'node:fs/promises';
import { basename, isAbsolute } from 'node:path';
import type { Addr } from '../../transport/address.js';
import { PilotError } from '../../transport/errors.js';
import { MAX_RESULT_FILE, type SubmitResponse, type TaskRecord, type TaskResultInput } from '../services/tasks.js';
import { arg, IpcError, IPC_MAX_MESSAGE, type IpcMap } from './protocol.js';

/** The part of TaskService the ops use. */
export interface TaskOpsService {
  submit(toAddr: string, description: string): Promise<SubmitResponse>;
  list(kind: 'received' | 'submitted'): TaskRecord[];
  queue(): TaskRecord[];
  get(kind: 'received' | 'submitted', id: string): TaskRecord | undefined;
  accept(id: string): Promise<TaskRecord>;
  decline(id: string, justification: string): Promise<TaskRecord>;
  next(): Promise<TaskRecord | null>;
  sendResults(id: string, result: TaskResultInput): Promise<TaskRecord>;
}

/** What the ops need from the daemon (the Daemon class satisfies it as is). */
export interface TaskOpsDaemon {
  /** Built-in services; `tasks` is null when the task service is disabled. Undefined before start. */
  readonly services?: { readonly tasks: TaskOpsService | null } | undefined;
  resolveTarget(text: string): Promise<Addr>;
}

export const TASK_OP_PREFIX = 'task_';
/** Max task description (the service's own limit, checked here to answer bad_request early). */
const MAX_DESCRIPTION = 64 * 1024;
const DEFAULT_SUBMIT_TIMEOUT_MS = 30_000;

export class TaskOpError extends PilotError {
  constructor(code: string, message: string, hint?: string) {
    super(code, message, { hint });
  }
}

/** Handle one `task_*` op. Throws PilotError subclasses with stable codes (see the module comment). */
export async function taskOp(d: TaskOpsDaemon, op: string, a: IpcMap): Promise<IpcMap> {
  const tasks = d.services?.tasks;
  if (!tasks) throw new TaskOpError('unavailable', 'task submission (port 1003) is disabled on this daemon', 'enable the task service in the daemon config (services.taskSubmit) and restart it');
  try {
    return await run(tasks, d, op, a);
  } catch (err) {
    throw withHint(err);
  }
}

async function run(tasks: TaskOpsService, d: TaskOpsDaemon, op: string, a: IpcMap): Promise<IpcMap> {
  switch (op) {
    case 'task_submit': {
      const peer = arg.string(a, 'peer', 300);
      const description = arg.string(a, 'description', MAX_DESCRIPTION);
      if (description === '') throw new IpcError('bad_value', 'description must not be empty');
      const timeout = arg.int(a, 'timeout_ms', 1, 600_000, DEFAULT_SUBMIT_TIMEOUT_MS);
      // The record keeps the canonical address: status updates are matched against the peer's address.
      const to = (await d.resolveTarget(peer)).toString();
      const r = await deadline(tasks.submit(to, description), timeout, `task submit to ${peer}`);
      return { task_id: r.task_id, status: r.status, message: r.message };
    }
    case 'task_list': {
      const type = kindArg(a);
      return { type, tasks: tasks.list(type).map(view) };
    }
    case 'task_queue':
      return { tasks: tasks.queue().map(view) };
    case 'task_get': {
      const id = idArg(a);
      const type = kindArg(a);
      const rec = tasks.get(type, id);
      if (!rec) throw new TaskOpError('not_found', `no ${type} task ${id}`, `list the tasks: pilotctl task list --type ${type}`);
      return view(rec);
    }
    case 'task_accept':
      return view(await tasks.accept(idArg(a)));
    case 'task_decline':
      return view(await tasks.decline(idArg(a), arg.string(a, 'justification', 4096, '')));
    case 'task_execute': {
      const rec = await tasks.next();
      if (!rec) throw new TaskOpError('not_found', 'no accepted task is waiting in the queue', 'accept a received task first: pilotctl task list, then pilotctl task accept --id ID');
      return view(rec);
    }
    case 'task_send_results': {
      const id = idArg(a);
      return view(await tasks.sendResults(id, await resultArg(a)));
    }
    default:
      throw new PilotError('unknown_op', `unknown op "${op.slice(0, 64)}"`);
  }
}

function idArg(a: IpcMap): string {
  const id = arg.string(a, 'task_id', 128);
  if (id === '') throw new IpcError('bad_value', 'task_id is required');
  return id;
}

function kindArg(a: IpcMap): 'received' | 'submitted' {
  const t = arg.string(a, 'type', 16, 'received');
  if (t !== 'received' && t !== 'submitted') throw new IpcError('bad_value', 'type must be "received" or "submitted"');
  return t;
}

/** Exactly one of: result_text; filename + file_data (bytes, fits one IPC message); file_path (read here). */
async function resultArg(a: IpcMap): Promise<TaskResultInput> {
  const given = ['result_text', 'file_data', 'file_path'].filter((k) => a[k] !== undefined);
  if (given.length !== 1) throw new IpcError('bad_value', 'give exactly one of result_text, file_data (with filename) or file_path');
  if (a.result_text !== undefined) return { text: arg.string(a, 'result_text', IPC_MAX_MESSAGE) };
  if (a.file_data !== undefined) {
    const filename = arg.string(a, 'filename', 255);
    if (filename === '') throw new IpcError('bad_value', 'filename is required with file_data');
    return { filename, data: arg.bytes(a, 'file_data', IPC_MAX_MESSAGE) };
  }
  // A path the daemon reads itself: results larger than one IPC message. The socket is mode 0600, so the
  // client is the daemon's own user and can read the file anyway.
  const path = arg.string(a, 'file_path', 4096);
  if (!isAbsolute(path)) throw new IpcError('bad_value', 'file_path must be absolute');
  let size: number;
  try {
    const st = await stat(path);
    if (!st.isFile()) throw new IpcError('bad_value', `${path} is not a regular file`);
    size = st.size;
  } catch (err) {
    if (err instanceof IpcError) throw err;
    throw new TaskOpError('not_found', `cannot read result file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  if (size > MAX_RESULT_FILE) throw new IpcError('bad_value', `result file is ${size} bytes; the limit is ${MAX_RESULT_FILE}`);
  let data: Buffer;
  try {
    data = await readFile(path);
  } catch (err) {
    throw new TaskOpError('not_found', `cannot read result file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  return { filename: basename(path) || 'result', data };
}

/** A task record as IPC returns it: the persisted TaskRecord minus internal bookkeeping. */
function view(rec: TaskRecord): IpcMap {
  const { queue_seq: _seq, ...rest } = rec;
  const out: IpcMap = {};
  for (const [k, v] of Object.entries(rest)) if (v !== undefined) out[k] = v as string | number;
  return out;
}

/** Give the service's state errors a hint that names the command to run next. */
function withHint(err: unknown): unknown {
  if (!(err instanceof PilotError) || err.hint !== undefined) return err;
  switch (err.code) {
    case 'not_found':
      return new TaskOpError('not_found', err.message, 'list the tasks: pilotctl task list');
    case 'bad_state':
      return new TaskOpError('bad_state', err.message, 'check the task status: pilotctl task list (accept/decline need NEW, send-results needs EXECUTING: pilotctl task execute)');
    case 'frame_too_large':
      return new TaskOpError('bad_request', err.message, `results must stay under ${MAX_RESULT_FILE} bytes`);
    default:
      return err;
  }
}

async function deadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new TaskOpError('timeout', `${what}: no answer within ${ms} ms`, 'is the peer running and reachable? (pilotctl ping <peer>)')), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

declare module './protocol.js' {
  interface IpcOps {
    task_submit: { args: { peer: string; description: string; timeout_ms?: number }; result: { task_id: string; status: 200 | 400; message: string } };
    task_list: { args: { type?: 'received' | 'submitted' }; result: { type: 'received' | 'submitted'; tasks: IpcMap[] } };
    task_queue: { args: Record<string, never>; result: { tasks: IpcMap[] } };
    task_get: { args: { task_id: string; type?: 'received' | 'submitted' }; result: IpcMap };
    task_accept: { args: { task_id: string }; result: IpcMap };
    task_decline: { args: { task_id: string; justification?: string }; result: IpcMap };
    task_execute: { args: Record<string, never>; result: IpcMap };
    task_send_results: { args: { task_id: string; result_text?: string; filename?: string; file_data?: Uint8Array; file_path?: string }; result: IpcMap };
  }
}
