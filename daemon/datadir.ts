/**
 * Where pilot-daemon keeps its files (wire reference §1.15; an existing v1 `~/.pilot` keeps working):
 *
 *   <root>/identity.key          Ed25519 identity (v1 JSON), unless --identity points elsewhere
 *   <dir of identity>/trust.json trust store (v1 keeps it next to the identity file)
 *   <root>/inbox/                TEXT/JSON/BINARY messages received on port 1001
 *   <root>/received/             files received on port 1001
 *   <root>/tasks/{submitted,received,results}/
 *   <root>/admission.log         refused SYNs/datagrams (SPEC §5), JSON lines
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, unlink } from 'node:fs/promises';
import { homedir } from 'node:os';
import { basename, dirname, extname, join } from 'node:path';

export class DataDir {
  readonly root: string;
  readonly identityPath: string;
  readonly trustPath: string;
  readonly inboxDir: string;
  readonly receivedDir: string;
  readonly tasksDir: string;
  readonly tasksSubmittedDir: string;
  readonly tasksReceivedDir: string;
  readonly tasksResultsDir: string;
  readonly admissionLogPath: string;

  constructor(root: string, opts: { identityPath?: string } = {}) {
    this.root = root;
    this.identityPath = opts.identityPath || join(root, 'identity.key');
    this.trustPath = join(dirname(this.identityPath), 'trust.json');
    this.inboxDir = join(root, 'inbox');
    this.receivedDir = join(root, 'received');
    this.tasksDir = join(root, 'tasks');
    this.tasksSubmittedDir = join(this.tasksDir, 'submitted');
    this.tasksReceivedDir = join(this.tasksDir, 'received');
    this.tasksResultsDir = join(this.tasksDir, 'results');
    this.admissionLogPath = join(root, 'admission.log');
  }

  /** Create every directory (mode 0700; existing directories keep their mode). */
  async ensure(): Promise<void> {
    for (const d of [this.root, dirname(this.identityPath), this.inboxDir, this.receivedDir, this.tasksSubmittedDir, this.tasksReceivedDir, this.tasksResultsDir]) {
      await mkdir(d, { recursive: true, mode: 0o700 });
    }
  }
}

/** `$PILOT_DATA_DIR`, else `~/.pilot`. */
export function defaultDataDir(env: NodeJS.ProcessEnv = process.env, home: string = homedir()): string {
  return env.PILOT_DATA_DIR || join(home, '.pilot');
}

/** `YYYYMMDD-HHMMSS.mmm` in UTC (v1 file-name timestamp shape). */
export function fileTimestamp(d: Date): string {
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${d.getUTCFullYear()}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}-${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}.${p(d.getUTCMilliseconds(), 3)}`;
}

const MAX_NAME_BYTES = 200;

/**
 * Make a peer-supplied file name safe to create inside a directory: last path component only (both `/`
 * and `\`), no control or shell-hostile characters, no leading dots (so no hidden files, `.` or `..`),
 * bounded length with the extension kept. Never returns an empty string.
 */
export function sanitizeFileName(name: string): string {
  let s = String(name).normalize('NFC');
  const parts = s.split(/[/\\]/);
  s = parts[parts.length - 1] ?? '';
  // eslint-disable-next-line no-control-regex
  s = s.replace(/[\u0000-\u001f\u007f-\u009f<>:"|?*\u202a-\u202e\u2066-\u2069]/g, '_');
  s = s.trim().replace(/^[.\s]+/, '').replace(/[.\s]+$/, '');
  if (Buffer.byteLength(s) > MAX_NAME_BYTES) {
    const ext = extname(s);
    const keepExt = Buffer.byteLength(ext) <= 32 ? ext : '';
    let base = s.slice(0, s.length - keepExt.length);
    while (Buffer.byteLength(base) + Buffer.byteLength(keepExt) > MAX_NAME_BYTES) base = base.slice(0, -1);
    s = base + keepExt;
  }
  return s === '' ? 'file' : s;
}

/**
 * Create `<dir>/<stem><suffix><ext>` without overwriting anything: tries `stem+ext`, then `stem-1+ext`, …
 * (O_EXCL), writes `data` and fsyncs. Returns the path written.
 */
export async function writeNewFile(dir: string, stem: string, ext: string, data: Uint8Array, mode = 0o600): Promise<string> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  for (let i = 0; i < 1000; i++) {
    const path = join(dir, `${stem}${i === 0 ? '' : `-${i}`}${ext}`);
    let fh;
    try {
      fh = await open(path, 'wx', mode);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') continue;
      throw err;
    }
    try {
      await fh.writeFile(data);
      await fh.sync();
    } catch (err) {
      await fh.close().catch(() => {});
      await unlink(path).catch(() => {});
      throw err;
    }
    await fh.close();
    return path;
  }
  throw new Error(`no free file name for ${stem}${ext} in ${dir}`);
}

/** Replace `path` atomically: write a temp file beside it, fsync, rename over, fsync the directory. */
export async function writeFileAtomic(path: string, data: Uint8Array | string, mode = 0o600): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = join(dir, `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  const fh = await open(tmp, 'w', mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => {});
    await unlink(tmp).catch(() => {});
    throw err;
  }
  await fh.close();
  try {
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
  // Make the rename itself durable; not every platform allows opening a directory, so best effort.
  try {
    const d = await open(dir, 'r');
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  } catch {
    /* best effort */
  }
}
