import { Worker } from 'node:worker_threads';

export interface CheckpointProgress {
  /** passes completed */
  passes: number;
  /** frames in the WAL and how many of them are in the database file, as of the last pass */
  log: number;
  checkpointed: number;
}

/**
 * Runs the store's WAL checkpoints on a worker thread (checkpoint-worker.ts). SQLite's automatic
 * checkpoint runs inside whichever commit pushes the WAL past 1000 pages: it copies those pages and
 * fsyncs the database file on the event loop, 20–40 ms every few MiB written (measured during the
 * last-seen flush at 5,000 heartbeats/s). If the worker fails, `onFailure` turns the automatic
 * checkpoint back on so the WAL stays bounded.
 */
export class WalCheckpointer {
  readonly progress: CheckpointProgress = { passes: 0, log: 0, checkpointed: 0 };
  private readonly worker: Worker;
  private stopping = false;
  private readonly exited: Promise<void>;

  constructor(path: string, intervalMs: number, onFailure: (err: Error) => void) {
    this.worker = new Worker(new URL('./checkpoint-worker.js', import.meta.url), { workerData: { path, intervalMs } });
    this.worker.unref();
    this.worker.on('message', (m: { log: number; checkpointed: number }) => {
      this.progress.passes++;
      this.progress.log = m.log;
      this.progress.checkpointed = m.checkpointed;
    });
    let failed = false;
    const fail = (err: Error): void => {
      if (this.stopping || failed) return;
      failed = true;
      onFailure(err);
    };
    this.worker.on('error', fail);
    this.exited = new Promise((resolve) =>
      this.worker.once('exit', (code) => {
        fail(new Error(`checkpoint worker exited (${code})`));
        resolve();
      }),
    );
  }

  /** Stop after the pass in progress (the worker closes its connection first). */
  async stop(): Promise<void> {
    this.stopping = true;
    this.worker.ref(); // an unref'd worker would not keep the process alive until it has exited
    this.worker.postMessage('stop');
    await this.exited;
  }
}
