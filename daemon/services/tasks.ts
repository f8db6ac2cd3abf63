/**
 * Port 1003 task submission (wire reference §1.14, timers §1.12). One typed frame per connection:
 *   1 Submit       {task_id, task_description, from_addr, to_addr} → reply type 1 {task_id, status: 200|400, message}
 *   3 StatusUpdate {task_id, status, justification}                   (receiver → submitter)
 *   4 SendResults  {task_id, result_type, result_text?, filename?, file_data? (b64), completed_at,
 *                   time_idle_ms?, time_staged_ms?, time_cpu_ms?}     (receiver → submitter)
 *
 * Receiver side: a submit is accepted into `tasks/received/` as NEW only if the submitter's polo score is
 * ≥ ours; the user accepts (→ ACCEPTED, queued) or declines (→ DECLINED); NEW tasks not accepted within
 * 1 min become CANCELLED; the queue head expires after 1 h (→ EXPIRED, our polo −1); `next()` takes the head
 * (→ EXECUTING); `sendResults()` delivers results (→ COMPLETED). Submitter side: `tasks/submitted/` follows
 * the status updates; results are saved in `tasks/results/` (→ SUCCEEDED) and the polo reward is applied:
 * receiver +reward, submitter −1.
 *
 * Hardening over v1: status updates and results are only taken from the node the task was sent to, and a
 * submit's sender address is the authenticated peer, not what the JSON claims.
 */
import { randomUUID } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import type { Duplex } from 'node:stream';
import { join } from 'node:path';
import { Ports } from '../../transport/address.js';
import { sanitizeFileName, writeFileAtomic, writeNewFile } from '../datadir.js';
import { ConnectionSet, finish } from './conns.js';
import { MAX_TYPED_FRAME_PAYLOAD, TypedFrameDecoder, encodeTypedFrame, readFrames, type TypedFrame } from './frames.js';
import { ServiceError, silentLogger, type EventSink, type Service, type ServiceContext, type ServiceLogger } from './types.js';

export const TaskFrame = { Submit: 1, Result: 2, StatusUpdate: 3, SendResults: 4 } as const;

export const TASK_STATUSES = ['NEW', 'ACCEPTED', 'DECLINED', 'EXECUTING', 'COMPLETED', 'SUCCEEDED', 'CANCELLED', 'EXPIRED'] as const;
export type TaskStatus = (typeof TASK_STATUSES)[number];

/** v1 timers (§1.12). */
export const TASK_ACCEPT_TIMEOUT_MS = 60_000;
export const TASK_QUEUE_HEAD_TIMEOUT_MS = 3_600_000;
export const TASK_SWEEP_INTERVAL_MS = 10_000;

export interface SubmitRequest {
  task_id: string;
  task_description: string;
  from_addr: string;
  to_addr: string;
}
export interface SubmitResponse {
  task_id: string;
  status: 200 | 400;
  message: string;
}
export interface StatusUpdate {
  task_id: string;
  status: TaskStatus;
  justification: string;
}
export interface TaskResults {
  task_id: string;
  result_type: 'text' | 'file';
  result_text?: string;
  filename?: string;
  /** base64 (Go encodes []byte that way in JSON) */
  file_data?: string;
  completed_at: string;
  time_idle_ms?: number;
  time_staged_ms?: number;
  time_cpu_ms?: number;
}

/** What is persisted in tasks/{received,submitted}/<task_id>.json. Times are RFC3339 UTC. */
export interface TaskRecord {
  task_id: string;
  task_description: string;
  from_addr: string;
  to_addr: string;
  status: TaskStatus;
  status_justification?: string;
  created_at: string;
  accepted_at?: string;
  /** When the task became the head of the queue (head expiry runs from here). */
  staged_at?: string;
  execute_started_at?: string;
  completed_at?: string;
  time_idle_ms?: number;
  time_staged_ms?: number;
  time_cpu_ms?: number;
  result_path?: string;
  reward?: number;
  /** Position in the accept order (keeps the queue order across restarts even within one millisecond). */
  queue_seq?: number;
}

const TASK_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const MAX_DESCRIPTION = 64 * 1024;
/** Result files travel base64 in JSON inside a 16 MiB frame. */
export const MAX_RESULT_FILE = 12 * 1024 * 1024 - 64 * 1024;

/** v1 reward: round((1 + log2(1 + cpu_min)) × max(0.4, 1 − idle_pen − staged_pen)), at least 1. */
export function taskReward(t: { time_idle_ms?: number; time_staged_ms?: number; time_cpu_ms?: number }): number {
  const cpuMin = Math.max(0, t.time_cpu_ms ?? 0) / 60_000;
  const idleS = Math.max(0, t.time_idle_ms ?? 0) / 1000;
  const stagedS = Math.max(0, t.time_staged_ms ?? 0) / 1000;
  const idlePen = Math.min(0.3, (0.3 * idleS) / 60);
  const stagedPen = Math.min(0.3, (0.3 * stagedS) / 600);
  const r = Math.round((1 + Math.log2(1 + cpuMin)) * Math.max(0.4, 1 - idlePen - stagedPen));
  return Math.max(1, r);
}

export function encodeTaskFrame(type: number, body: object): Buffer {
  return encodeTypedFrame(type, Buffer.from(JSON.stringify(body), 'utf8'));
}

function parseJsonObject(frame: TypedFrame): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(frame.payload.toString('utf8'));
  } catch {
    throw new ServiceError('bad_json', 'task frame is not valid JSON');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ServiceError('bad_json', 'task frame must be a JSON object');
  return v as Record<string, unknown>;
}

function taskId(v: unknown): string {
  if (typeof v !== 'string' || !TASK_ID_RE.test(v)) throw new ServiceError('bad_task', 'task_id must be 1-128 characters [A-Za-z0-9._-]');
  return v;
}

export function parseSubmitRequest(frame: TypedFrame): SubmitRequest {
  const o = parseJsonObject(frame);
  const desc = o.task_description;
  if (typeof desc !== 'string' || desc.length === 0 || desc.length > MAX_DESCRIPTION) throw new ServiceError('bad_task', 'task_description must be a non-empty string ≤ 64 KiB');
  return { task_id: taskId(o.task_id), task_description: desc, from_addr: String(o.from_addr ?? ''), to_addr: String(o.to_addr ?? '') };
}

export function parseSubmitResponse(frame: TypedFrame): SubmitResponse {
  const o = parseJsonObject(frame);
  if (o.status !== 200 && o.status !== 400) throw new ServiceError('bad_task', 'submit response status must be 200 or 400');
  return { task_id: String(o.task_id ?? ''), status: o.status, message: String(o.message ?? '') };
}

export function parseStatusUpdate(frame: TypedFrame): StatusUpdate {
  const o = parseJsonObject(frame);
  if (typeof o.status !== 'string' || !(TASK_STATUSES as readonly string[]).includes(o.status)) throw new ServiceError('bad_task', 'unknown task status');
  return { task_id: taskId(o.task_id), status: o.status as TaskStatus, justification: typeof o.justification === 'string' ? o.justification.slice(0, 4096) : '' };
}

export function parseTaskResults(frame: TypedFrame): TaskResults {
  const o = parseJsonObject(frame);
  const rt = o.result_type;
  if (rt !== 'text' && rt !== 'file') throw new ServiceError('bad_task', 'result_type must be text or file');
  const ms = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : undefined);
  const r: TaskResults = { task_id: taskId(o.task_id), result_type: rt, completed_at: typeof o.completed_at === 'string' ? o.completed_at : '' };
  if (rt === 'text') {
    if (typeof o.result_text !== 'string') throw new ServiceError('bad_task', 'text results need result_text');
    r.result_text = o.result_text;
  } else {
    if (typeof o.filename !== 'string' || typeof o.file_data !== 'string') throw new ServiceError('bad_task', 'file results need filename and file_data');
    r.filename = o.filename;
    r.file_data = o.file_data;
  }
  const idle = ms(o.time_idle_ms);
  const staged = ms(o.time_staged_ms);
  const cpu = ms(o.time_cpu_ms);
  if (idle !== undefined) r.time_idle_ms = idle;
  if (staged !== undefined) r.time_staged_ms = staged;
  if (cpu !== undefined) r.time_cpu_ms = cpu;
  return r;
}

export type TaskResultInput = { text: string } | { filename: string; data: Uint8Array } | { path: string };

export interface TaskServiceOptions {
  /** tasks/submitted, tasks/received, tasks/results. */
  dirs: { submitted: string; received: string; results: string };
  /** Our node ID and address text (known after registration). */
  self: () => { node: number; addr: string };
  /** Registry polo score of a node (v1 `get_polo_score`). */
  getPoloScore: (node: number) => Promise<number>;
  /** Registry `update_polo_score` delta. Failures are logged, never fatal. */
  adjustPoloScore: (node: number, delta: number) => Promise<void>;
  /** Open a stream to `addr` (address text) `port`. */
  dial: (addr: string, port: number) => Promise<Duplex>;
  emit?: EventSink;
  now?: () => number;
  newTaskId?: () => string;
  logger?: ServiceLogger;
  maxConnections?: number;
  /** Cap on tasks kept per side (received/submitted); oldest finished ones are forgotten first. */
  maxTasks?: number;
  /** Extra admission check for submitters (e.g. trust); default allow. */
  allowSubmitter?: (node: number) => boolean | Promise<boolean>;
  /** Timer functions (tests inject fakes). */
  setInterval?: (fn: () => void, ms: number) => { unref?: () => void };
  clearInterval?: (h: unknown) => void;
}

const FINAL: ReadonlySet<TaskStatus> = new Set(['DECLINED', 'COMPLETED', 'SUCCEEDED', 'CANCELLED', 'EXPIRED']);

export class TaskService implements Service {
  readonly name = 'tasksubmit';
  readonly port = Ports.TASK_SUBMIT;
  private readonly received = new Map<string, TaskRecord>();
  private readonly submitted = new Map<string, TaskRecord>();
  /** Accepted, not yet executing, in accept order. */
  private queueIds: string[] = [];
  private queueSeq = 0;
  private readonly conns: ConnectionSet;
  private readonly log: ServiceLogger;
  private readonly now: () => number;
  private readonly maxTasks: number;
  private timer: unknown = null;
  private readonly sending = new Set<string>();
  /** Serialises state changes + their file writes so concurrent ops never interleave. */
  private chain: Promise<unknown> = Promise.resolve();
  readonly stats = { submitsAccepted: 0, submitsRejected: 0, cancelled: 0, expired: 0, resultsReceived: 0, malformed: 0, notifyFailures: 0 };

  constructor(private readonly opts: TaskServiceOptions) {
    this.conns = new ConnectionSet(opts.maxConnections ?? 64);
    this.log = opts.logger ?? silentLogger;
    this.now = opts.now ?? Date.now;
    this.maxTasks = opts.maxTasks ?? 10_000;
  }

  /** Load persisted tasks (tolerates missing dirs and skips unreadable files). */
  async load(): Promise<void> {
    for (const [dir, map] of [
      [this.opts.dirs.received, this.received],
      [this.opts.dirs.submitted, this.submitted],
    ] as const) {
      let names: string[] = [];
      try {
        names = await readdir(dir);
      } catch {
        continue;
      }
      for (const n of names) {
        if (!n.endsWith('.json')) continue;
        try {
          const rec = JSON.parse(await readFile(join(dir, n), 'utf8')) as TaskRecord;
          if (typeof rec.task_id === 'string' && TASK_ID_RE.test(rec.task_id) && (TASK_STATUSES as readonly string[]).includes(rec.status)) map.set(rec.task_id, rec);
        } catch (err) {
          this.log.warn({ file: n, err: (err as Error).message }, 'tasks: skipping unreadable task file');
        }
      }
    }
    this.queueIds = [...this.received.values()]
      .filter((r) => r.status === 'ACCEPTED')
      .sort((a, b) => (a.queue_seq ?? 0) - (b.queue_seq ?? 0) || Date.parse(a.accepted_at ?? a.created_at) - Date.parse(b.accepted_at ?? b.created_at))
      .map((r) => r.task_id);
    for (const r of this.received.values()) this.queueSeq = Math.max(this.queueSeq, r.queue_seq ?? 0);
  }

  /** Start the 10 s sweep timer (v1 timeouts). */
  start(): void {
    if (this.timer) return;
    const si = this.opts.setInterval ?? ((fn: () => void, ms: number) => setInterval(fn, ms));
    const h = si(() => void this.sweep().catch((err: Error) => this.log.warn({ err: err.message }, 'tasks: sweep failed')), TASK_SWEEP_INTERVAL_MS);
    h.unref?.();
    this.timer = h;
  }

  async close(): Promise<void> {
    if (this.timer) (this.opts.clearInterval ?? ((h: unknown) => clearInterval(h as NodeJS.Timeout)))(this.timer);
    this.timer = null;
    this.conns.closeAll();
    await this.chain.catch(() => {});
  }

  // ----- inbound -----------------------------------------------------------------------------------

  async handle(conn: Duplex, ctx: ServiceContext): Promise<void> {
    if (!this.conns.add(conn)) {
      conn.destroy();
      return;
    }
    conn.on('error', (err) => this.log.debug({ remote: ctx.remote, err: err.message }, 'tasks connection error'));
    try {
      let frame: TypedFrame | undefined;
      for await (const f of readFrames(conn, new TypedFrameDecoder(MAX_TYPED_FRAME_PAYLOAD))) {
        frame = f;
        break; // one frame per connection
      }
      if (!frame) return void conn.destroy();
      switch (frame.type) {
        case TaskFrame.Submit: {
          const reply = await this.onSubmit(frame, ctx);
          if (!conn.destroyed) conn.write(encodeTaskFrame(TaskFrame.Submit, reply));
          break;
        }
        case TaskFrame.StatusUpdate:
          await this.onStatusUpdate(parseStatusUpdate(frame), ctx);
          break;
        case TaskFrame.SendResults:
          await this.onResults(parseTaskResults(frame), ctx);
          break;
        default:
          throw new ServiceError('bad_frame', `unsupported task frame type ${frame.type}`);
      }
      await finish(conn);
    } catch (err) {
      if (err instanceof ServiceError) {
        this.stats.malformed++;
        this.log.warn({ remote: ctx.remote, code: err.code, err: err.message }, 'tasks: bad input, closing');
      }
      conn.destroy();
    } finally {
      this.conns.delete(conn);
    }
  }

  private async onSubmit(frame: TypedFrame, ctx: ServiceContext): Promise<SubmitResponse> {
    let req: SubmitRequest;
    try {
      req = parseSubmitRequest(frame);
    } catch (err) {
      this.stats.submitsRejected++;
      const id = (() => {
        try {
          return String(parseJsonObject(frame).task_id ?? '');
        } catch {
          return '';
        }
      })();
      return { task_id: id, status: 400, message: (err as Error).message };
    }
    const reject = (message: string): SubmitResponse => {
      this.stats.submitsRejected++;
      return { task_id: req.task_id, status: 400, message };
    };
    if (this.opts.allowSubmitter && !(await this.opts.allowSubmitter(ctx.remoteNode))) return reject('submitter not allowed');
    let theirs: number;
    let ours: number;
    try {
      [theirs, ours] = await Promise.all([this.opts.getPoloScore(ctx.remoteNode), this.opts.getPoloScore(this.opts.self().node)]);
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'tasks: polo score lookup failed');
      return reject('cannot verify polo score');
    }
    if (theirs < ours) return reject(`polo score too low: ${theirs} < ${ours}`);
    return this.serial(async () => {
      if (this.received.has(req.task_id)) return reject('duplicate task_id');
      if (this.activeReceived() >= this.maxTasks) return reject('task queue full');
      if (req.from_addr && req.from_addr !== ctx.remote) this.log.warn({ claimed: req.from_addr, remote: ctx.remote }, 'tasks: from_addr differs from the peer; using the peer');
      const rec: TaskRecord = {
        task_id: req.task_id,
        task_description: req.task_description,
        from_addr: ctx.remote,
        to_addr: this.opts.self().addr,
        status: 'NEW',
        created_at: this.iso(),
      };
      this.received.set(rec.task_id, rec);
      this.prune(this.received);
      await this.persist('received', rec);
      this.stats.submitsAccepted++;
      this.opts.emit?.('task.received', { task_id: rec.task_id, from: ctx.remote });
      return { task_id: rec.task_id, status: 200, message: 'task received, awaiting acceptance' };
    });
  }

  private async onStatusUpdate(u: StatusUpdate, ctx: ServiceContext): Promise<void> {
    await this.serial(async () => {
      const rec = this.submitted.get(u.task_id);
      if (!rec || rec.to_addr !== ctx.remote) throw new ServiceError('not_found', `no task ${u.task_id} submitted to ${ctx.remote}`);
      if (FINAL.has(rec.status)) return;
      rec.status = u.status;
      if (u.justification) rec.status_justification = u.justification;
      await this.persist('submitted', rec);
    });
  }

  private async onResults(r: TaskResults, ctx: ServiceContext): Promise<void> {
    const rec = await this.serial(async () => {
      const rec = this.submitted.get(r.task_id);
      if (!rec || rec.to_addr !== ctx.remote) throw new ServiceError('not_found', `no task ${r.task_id} submitted to ${ctx.remote}`);
      if (rec.status === 'SUCCEEDED') throw new ServiceError('bad_state', `results for ${r.task_id} already received`);
      let path: string;
      if (r.result_type === 'text') {
        path = await writeNewFile(this.opts.dirs.results, r.task_id, '.txt', Buffer.from(r.result_text ?? '', 'utf8'));
      } else {
        const data = Buffer.from(r.file_data ?? '', 'base64');
        path = await writeNewFile(this.opts.dirs.results, `${r.task_id}-${sanitizeFileName(r.filename ?? 'result')}`, '', data);
      }
      rec.status = 'SUCCEEDED';
      rec.result_path = path;
      rec.completed_at = r.completed_at || this.iso();
      if (r.time_idle_ms !== undefined) rec.time_idle_ms = r.time_idle_ms;
      if (r.time_staged_ms !== undefined) rec.time_staged_ms = r.time_staged_ms;
      if (r.time_cpu_ms !== undefined) rec.time_cpu_ms = r.time_cpu_ms;
      rec.reward = taskReward(r);
      await this.persist('submitted', rec);
      return rec;
    });
    this.stats.resultsReceived++;
    this.opts.emit?.('task.results', { task_id: rec.task_id, from: ctx.remote, reward: rec.reward });
    await this.polo(ctx.remoteNode, rec.reward ?? 1);
    await this.polo(this.opts.self().node, -1);
  }

  // ----- user operations (pilotctl task …) ---------------------------------------------------------

  /** Submit a task to `toAddr`; the record is kept in tasks/submitted when the peer answers 200. */
  async submit(toAddr: string, description: string): Promise<SubmitResponse> {
    if (description.length === 0 || description.length > MAX_DESCRIPTION) throw new ServiceError('bad_task', 'task description must be 1 character to 64 KiB');
    const req: SubmitRequest = { task_id: (this.opts.newTaskId ?? randomUUID)(), task_description: description, from_addr: this.opts.self().addr, to_addr: toAddr };
    const conn = await this.opts.dial(toAddr, Ports.TASK_SUBMIT);
    let res: SubmitResponse | undefined;
    try {
      conn.write(encodeTaskFrame(TaskFrame.Submit, req));
      for await (const f of readFrames(conn, new TypedFrameDecoder(64 * 1024))) {
        res = parseSubmitResponse(f);
        break;
      }
    } finally {
      conn.destroy();
    }
    if (!res) throw new ServiceError('rejected', 'peer closed without answering the submit');
    if (res.status === 200) {
      await this.serial(async () => {
        const rec: TaskRecord = { ...req, status: 'NEW', created_at: this.iso() };
        this.submitted.set(rec.task_id, rec);
        this.prune(this.submitted);
        await this.persist('submitted', rec);
      });
    }
    return { ...res, task_id: res.task_id || req.task_id };
  }

  async accept(id: string): Promise<TaskRecord> {
    const rec = await this.serial(async () => {
      const rec = this.mustReceived(id, 'NEW');
      rec.status = 'ACCEPTED';
      rec.accepted_at = this.iso();
      rec.time_idle_ms = this.now() - Date.parse(rec.created_at);
      rec.queue_seq = ++this.queueSeq;
      this.queueIds.push(rec.task_id);
      if (this.queueIds.length === 1) rec.staged_at = rec.accepted_at;
      await this.persist('received', rec);
      return rec;
    });
    this.notify(rec, '');
    return rec;
  }

  async decline(id: string, justification: string): Promise<TaskRecord> {
    const rec = await this.serial(async () => {
      const rec = this.mustReceived(id, 'NEW');
      rec.status = 'DECLINED';
      rec.status_justification = justification.slice(0, 4096);
      await this.persist('received', rec);
      return rec;
    });
    this.notify(rec, rec.status_justification ?? '');
    return rec;
  }

  /** `task execute`: take the queue head (→ EXECUTING). null when the queue is empty. */
  async next(): Promise<TaskRecord | null> {
    const rec = await this.serial(async () => {
      const id = this.queueIds.shift();
      if (id === undefined) return null;
      const rec = this.received.get(id)!;
      const now = this.now();
      rec.status = 'EXECUTING';
      rec.execute_started_at = this.iso(now);
      rec.time_staged_ms = now - Date.parse(rec.accepted_at ?? rec.created_at);
      await this.persist('received', rec);
      await this.stageHead(now);
      return rec;
    });
    if (rec) this.notify(rec, '');
    return rec;
  }

  /** Deliver results of an EXECUTING task to its submitter (→ COMPLETED). */
  async sendResults(id: string, result: TaskResultInput): Promise<TaskRecord> {
    let input: { text: string } | { filename: string; data: Uint8Array };
    if ('path' in result) {
      const st = await stat(result.path);
      if (st.size > MAX_RESULT_FILE) throw new ServiceError('frame_too_large', `result file of ${st.size} bytes exceeds ${MAX_RESULT_FILE}`);
      const data = await readFile(result.path);
      input = { filename: result.path.split(/[/\\]/).pop() || 'result', data };
    } else {
      input = result;
    }
    const rec = this.mustReceived(id, 'EXECUTING');
    if (this.sending.has(id)) throw new ServiceError('bad_state', `results for ${id} are already being sent`);
    this.sending.add(id);
    try {
      return await this.deliverResults(rec, input);
    } finally {
      this.sending.delete(id);
    }
  }

  private async deliverResults(rec: TaskRecord, input: { text: string } | { filename: string; data: Uint8Array }): Promise<TaskRecord> {
    const now = this.now();
    const msg: TaskResults = {
      task_id: rec.task_id,
      result_type: 'text' in input ? 'text' : 'file',
      completed_at: this.iso(now),
      time_idle_ms: rec.time_idle_ms ?? 0,
      time_staged_ms: rec.time_staged_ms ?? 0,
      time_cpu_ms: now - Date.parse(rec.execute_started_at ?? rec.created_at),
    };
    if ('text' in input) msg.result_text = input.text;
    else {
      msg.filename = sanitizeFileName(input.filename);
      msg.file_data = Buffer.from(input.data).toString('base64');
    }
    const frame = encodeTaskFrame(TaskFrame.SendResults, msg); // throws frame_too_large before anything changes
    await this.sendFrame(rec.from_addr, frame);
    return this.serial(async () => {
      rec.status = 'COMPLETED';
      rec.completed_at = msg.completed_at;
      rec.time_cpu_ms = msg.time_cpu_ms!;
      await this.persist('received', rec);
      return rec;
    });
  }

  list(kind: 'received' | 'submitted'): TaskRecord[] {
    return [...(kind === 'received' ? this.received : this.submitted).values()].sort((a, b) => Date.parse(a.created_at) - Date.parse(b.created_at));
  }

  /** Accepted tasks waiting for execution, head first. */
  queue(): TaskRecord[] {
    return this.queueIds.map((id) => this.received.get(id)!);
  }

  get(kind: 'received' | 'submitted', id: string): TaskRecord | undefined {
    return (kind === 'received' ? this.received : this.submitted).get(id);
  }

  /** Apply the v1 timeouts at the current clock: NEW > 1 min → CANCELLED, queue head > 1 h → EXPIRED (polo −1). */
  async sweep(): Promise<void> {
    const changed = await this.serial(async () => {
      const now = this.now();
      const out: TaskRecord[] = [];
      for (const rec of this.received.values()) {
        if (rec.status === 'NEW' && now - Date.parse(rec.created_at) >= TASK_ACCEPT_TIMEOUT_MS) {
          rec.status = 'CANCELLED';
          rec.status_justification = 'not accepted within 1 minute';
          this.stats.cancelled++;
          await this.persist('received', rec);
          out.push(rec);
        }
      }
      for (;;) {
        const head = this.queueIds[0] ? this.received.get(this.queueIds[0]) : undefined;
        if (!head || now - Date.parse(head.staged_at ?? head.accepted_at ?? head.created_at) < TASK_QUEUE_HEAD_TIMEOUT_MS) break;
        this.queueIds.shift();
        head.status = 'EXPIRED';
        head.status_justification = 'not executed within 1 hour at the head of the queue';
        this.stats.expired++;
        await this.persist('received', head);
        await this.stageHead(now);
        out.push(head);
      }
      return out;
    });
    for (const rec of changed) {
      this.notify(rec, rec.status_justification ?? '');
      if (rec.status === 'EXPIRED') await this.polo(this.opts.self().node, -1);
    }
  }

  // ----- internals ---------------------------------------------------------------------------------

  /** The task now at the head of the queue starts its 1 h head timer. */
  private async stageHead(now: number): Promise<void> {
    const head = this.queueIds[0] ? this.received.get(this.queueIds[0]) : undefined;
    if (!head) return;
    head.staged_at = this.iso(now);
    await this.persist('received', head);
  }

  private mustReceived(id: string, status: TaskStatus): TaskRecord {
    const rec = this.received.get(id);
    if (!rec) throw new ServiceError('not_found', `no received task ${id}`);
    if (rec.status !== status) throw new ServiceError('bad_state', `task ${id} is ${rec.status}, not ${status}`);
    return rec;
  }

  private activeReceived(): number {
    let n = 0;
    for (const r of this.received.values()) if (!FINAL.has(r.status)) n++;
    return n;
  }

  /** Forget the oldest finished tasks beyond the cap (their files stay on disk). */
  private prune(map: Map<string, TaskRecord>): void {
    if (map.size <= this.maxTasks) return;
    for (const [id, r] of map) {
      if (map.size <= this.maxTasks) break;
      if (FINAL.has(r.status)) map.delete(id);
    }
  }

  /** Tell the submitter about a status change; best effort, off the caller's path. */
  private notify(rec: TaskRecord, justification: string): void {
    const update: StatusUpdate = { task_id: rec.task_id, status: rec.status, justification };
    this.sendFrame(rec.from_addr, encodeTaskFrame(TaskFrame.StatusUpdate, update)).catch((err: Error) => {
      this.stats.notifyFailures++;
      this.log.warn({ task: rec.task_id, to: rec.from_addr, err: err.message }, 'tasks: status update not delivered');
    });
  }

  private async sendFrame(addr: string, frame: Buffer): Promise<void> {
    const conn = await this.opts.dial(addr, Ports.TASK_SUBMIT);
    conn.on('error', () => {});
    await new Promise<void>((resolve, reject) => {
      conn.write(frame, (err) => (err ? reject(err) : resolve()));
    });
    await finish(conn);
  }

  private async polo(node: number, delta: number): Promise<void> {
    try {
      await this.opts.adjustPoloScore(node, delta);
    } catch (err) {
      this.log.warn({ node, delta, err: (err as Error).message }, 'tasks: polo score update failed');
    }
  }

  private persist(kind: 'received' | 'submitted', rec: TaskRecord): Promise<void> {
    return writeFileAtomic(join(kind === 'received' ? this.opts.dirs.received : this.opts.dirs.submitted, `${rec.task_id}.json`), JSON.stringify(rec, null, 2) + '\n');
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.chain.then(fn, fn);
    this.chain = p.catch(() => {});
    return p;
  }

  private iso(ms = this.now()): string {
    return new Date(ms).toISOString();
  }
}
