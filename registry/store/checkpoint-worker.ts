import Database from 'better-sqlite3';
import { parentPort, workerData } from 'node:worker_threads';

/**
 * WAL checkpoints off the event loop (see checkpointer.ts). Own connection to the store's file; every
 * `intervalMs` a PASSIVE checkpoint copies committed WAL frames into the database file and fsyncs it.
 * PASSIVE never takes the writer lock, so the registry's commits never wait for it. Frames appended
 * while it ran are picked up by an immediate second pass (small by then): the WAL only restarts from
 * its beginning once everything in it is checkpointed. Reports each pass as `{checkpointed, log}`.
 */
interface Options {
  path: string;
  intervalMs: number;
}

const { path, intervalMs } = workerData as Options;
const db = new Database(path, { timeout: 0 });
db.pragma('synchronous = NORMAL'); // checkpoints fsync the database file regardless

interface Result {
  busy: number;
  log: number;
  checkpointed: number;
}

let timer: NodeJS.Timeout | null = null;
function pass(): void {
  let r: Result | undefined;
  for (let i = 0; i < 3; i++) {
    r = (db.pragma('wal_checkpoint(PASSIVE)') as Result[])[0]!;
    if (r.busy !== 0 || r.checkpointed >= r.log) break;
  }
  parentPort!.postMessage({ log: r!.log, checkpointed: r!.checkpointed });
  timer = setTimeout(pass, intervalMs);
}
timer = setTimeout(pass, intervalMs);

parentPort!.on('message', (m: string) => {
  if (m !== 'stop') return;
  if (timer) clearTimeout(timer);
  db.close();
  parentPort!.close();
});
