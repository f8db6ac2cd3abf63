/**
 * `pilot.tasks`: task submission (port 1003, wire reference §1.14) through the daemon's `task_*` IPC ops
 * (daemon/ipc/task-ops.ts), so the daemon tracks every task, timeout and result.
 *
 *   const r = await pilot.tasks.submit('bravo', 'compress the logs');   // {task_id, status: 200|400, message}
 *   await pilot.tasks.accept(id);                                       // receiver: NEW → ACCEPTED (queued)
 *   const t = await pilot.tasks.execute();                              // queue head → EXECUTING
 *   await pilot.tasks.sendResults(t.task_id, { text: 'done' });         // or { file: path }, { filename, data }
 *   await pilot.tasks.list('submitted');                                // submitter: … SUCCEEDED, result_path
 */
import { readFile, stat } from 'node:fs/promises';
import { basename, resolve as resolvePath } from 'node:path';
import { IPC_MAX_MESSAGE, type IpcMap } from '../../daemon/ipc/protocol.js';
import type { TaskStatus } from '../../daemon/services/tasks.js';
import { PilotSdkError } from './errors.js';
import type { PeerRef, Result } from './pilot.js';

export type TaskType = 'received' | 'submitted';

/** A task as the daemon keeps it (tasks/{received,submitted}/<id>.json). Times are RFC3339 UTC. */
export interface TaskInfo {
  task_id: string;
  task_description: string;
  from_addr: string;
  to_addr: string;
  status: TaskStatus;
  status_justification?: string;
  created_at: string;
  accepted_at?: string;
  staged_at?: string;
  execute_started_at?: string;
  completed_at?: string;
  time_idle_ms?: number;
  time_staged_ms?: number;
  time_cpu_ms?: number;
  /** Submitter side: where the results were saved (tasks/results/). */
  result_path?: string;
  reward?: number;
}

export interface TaskSubmitResult {
  task_id: string;
  /** 200 = the peer took the task (NEW, awaiting its acceptance); 400 = refused (see message). */
  status: 200 | 400;
  message: string;
}

/** Results: text, a local file, or bytes with a file name. */
export type TaskResultsInput = { text: string } | { file: string } | { filename: string; data: Uint8Array };

/** Files up to this size travel inside the IPC request; bigger ones are read by the daemon from their path. */
export const TASK_INLINE_FILE_MAX = IPC_MAX_MESSAGE - 16 * 1024;

type Request = (op: string, args?: IpcMap) => Promise<Result>;

export class PilotTasks {
  constructor(private readonly request: Request) {}

  /** Submit a task to a peer through the daemon (it records it in tasks/submitted). */
  async submit(peer: PeerRef, description: string, opts: { timeoutMs?: number } = {}): Promise<TaskSubmitResult> {
    const r = await this.request('task_submit', {
      peer: String(peer),
      description,
      ...(opts.timeoutMs ? { timeout_ms: Math.max(1, Math.round(opts.timeoutMs)) } : {}),
    });
    return { task_id: String(r.task_id), status: r.status === 200 ? 200 : 400, message: String(r.message ?? '') };
  }

  async list(type: TaskType = 'received'): Promise<TaskInfo[]> {
    return ((await this.request('task_list', { type })).tasks ?? []) as unknown as TaskInfo[];
  }

  /** Accepted tasks waiting for execution, head first. */
  async queue(): Promise<TaskInfo[]> {
    return ((await this.request('task_queue')).tasks ?? []) as unknown as TaskInfo[];
  }

  async get(id: string, type: TaskType = 'received'): Promise<TaskInfo> {
    return (await this.request('task_get', { task_id: id, type })) as unknown as TaskInfo;
  }

  async accept(id: string): Promise<TaskInfo> {
    return (await this.request('task_accept', { task_id: id })) as unknown as TaskInfo;
  }

  async decline(id: string, justification = ''): Promise<TaskInfo> {
    return (await this.request('task_decline', { task_id: id, justification })) as unknown as TaskInfo;
  }

  /** Take the head of the queue (→ EXECUTING). Rejects `not_found` when nothing is queued. */
  async execute(): Promise<TaskInfo> {
    return (await this.request('task_execute')) as unknown as TaskInfo;
  }

  /** Send the results of an EXECUTING task to its submitter (→ COMPLETED). */
  async sendResults(id: string, results: TaskResultsInput): Promise<TaskInfo> {
    return (await this.request('task_send_results', { task_id: id, ...(await resultArgs(results)) })) as unknown as TaskInfo;
  }
}

async function resultArgs(r: TaskResultsInput): Promise<IpcMap> {
  if ('text' in r) return { result_text: r.text };
  if ('data' in r) return { filename: r.filename, file_data: r.data };
  const path = resolvePath(r.file);
  let size: number;
  try {
    const st = await stat(path);
    if (!st.isFile()) throw new PilotSdkError('invalid_argument', `${r.file} is not a regular file`);
    size = st.size;
  } catch (err) {
    if (err instanceof PilotSdkError) throw err;
    throw new PilotSdkError('not_found', `cannot read ${r.file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { hint: 'check the path of the result file' });
  }
  if (size > TASK_INLINE_FILE_MAX) return { file_path: path };
  return { filename: basename(path), file_data: await readFile(path) };
}
