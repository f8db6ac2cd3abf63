/**
 * The UDP test agent: a tiny program run inside a rig namespace (`host.udpAgent()`), driven by JSON lines
 * on stdin and reporting JSON lines on stdout. It holds any number of UDP sockets.
 *
 * Commands (stdin):
 *   {"cmd":"bind","id":"s1","port":0,"echo":false}   bind 0.0.0.0:port; echo=true makes it a STUN-like
 *                                                     "what's my address" server: every datagram is
 *                                                     answered with {"observed":{"ip","port"},"data":…}
 *   {"cmd":"send","id":"s1","ip":"…","port":1,"data":"…","repeat":1,"intervalMs":50}
 *   {"cmd":"stop","id":"s1"}                          cancel the socket's pending repeated sends
 *   {"cmd":"close","id":"s1"}
 *   {"cmd":"exit"}
 * Events (stdout):
 *   {"ev":"ready"}  {"ev":"bound","id","port"}  {"ev":"recv","id","from","port","data"}  {"ev":"closed","id"}
 *   {"ev":"stopped","id"}
 *   {"ev":"error","id"?,"error"}
 * Exits when stdin ends (so it never outlives its driver).
 */
import dgram from 'node:dgram';
import readline from 'node:readline';

interface Command {
  cmd?: unknown;
  id?: unknown;
  port?: unknown;
  echo?: unknown;
  ip?: unknown;
  data?: unknown;
  repeat?: unknown;
  intervalMs?: unknown;
}

const sockets = new Map<string, dgram.Socket>();
/** Repeated-send timers per socket id. */
const timers = new Map<string, Set<NodeJS.Timeout>>();

function stopSending(id: string): void {
  for (const t of timers.get(id) ?? []) clearInterval(t);
  timers.delete(id);
}

function emit(ev: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(ev) + '\n');
}

function str(v: unknown, what: string): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > 65_000) throw new Error(`${what} must be a non-empty string`);
  return v;
}

function int(v: unknown, what: string, min: number, max: number, dflt?: number): number {
  if (v === undefined && dflt !== undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new Error(`${what} must be an integer ${min}..${max}`);
  return v;
}

function handle(c: Command): void {
  switch (c.cmd) {
    case 'bind': {
      const id = str(c.id, 'id');
      if (sockets.has(id)) throw new Error(`socket ${id} exists`);
      const echo = c.echo === true;
      const s = dgram.createSocket('udp4');
      sockets.set(id, s);
      s.on('error', (err) => emit({ ev: 'error', id, error: err.message }));
      s.on('message', (msg, rinfo) => {
        const data = msg.toString('utf8');
        if (echo) {
          const reply = JSON.stringify({ observed: { ip: rinfo.address, port: rinfo.port }, data });
          s.send(reply, rinfo.port, rinfo.address);
        }
        emit({ ev: 'recv', id, from: rinfo.address, port: rinfo.port, data });
      });
      s.bind(int(c.port, 'port', 0, 65535, 0), '0.0.0.0', () => emit({ ev: 'bound', id, port: s.address().port }));
      return;
    }
    case 'send': {
      const id = str(c.id, 'id');
      const s = sockets.get(id);
      if (!s) throw new Error(`no socket ${id}`);
      const ip = str(c.ip, 'ip');
      const port = int(c.port, 'port', 1, 65535);
      const payload = Buffer.from(str(c.data, 'data'));
      const repeat = int(c.repeat, 'repeat', 1, 10_000, 1);
      const interval = int(c.intervalMs, 'intervalMs', 1, 60_000, 50);
      const once = (): void => {
        if (sockets.get(id) !== s) return;
        s.send(payload, port, ip, (err) => {
          if (err) emit({ ev: 'error', id, error: err.message });
        });
      };
      once();
      let left = repeat - 1;
      if (left > 0) {
        const timer = setInterval(() => {
          once();
          if (--left <= 0) {
            clearInterval(timer);
            timers.get(id)?.delete(timer);
          }
        }, interval);
        let set = timers.get(id);
        if (!set) timers.set(id, (set = new Set()));
        set.add(timer);
      }
      return;
    }
    case 'stop': {
      const id = str(c.id, 'id');
      stopSending(id);
      emit({ ev: 'stopped', id });
      return;
    }
    case 'close': {
      const id = str(c.id, 'id');
      stopSending(id);
      const s = sockets.get(id);
      sockets.delete(id);
      if (s) s.close(() => emit({ ev: 'closed', id }));
      else emit({ ev: 'closed', id });
      return;
    }
    case 'exit':
      shutdown();
      return;
    default:
      throw new Error(`unknown command ${JSON.stringify(c.cmd)}`);
  }
}

function shutdown(): void {
  for (const id of [...timers.keys()]) stopSending(id);
  for (const s of sockets.values()) s.close();
  sockets.clear();
  process.exit(0);
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  let cmd: Command;
  try {
    cmd = JSON.parse(line) as Command;
  } catch {
    emit({ ev: 'error', error: 'bad JSON command' });
    return;
  }
  try {
    handle(cmd);
  } catch (err) {
    emit({ ev: 'error', id: typeof cmd.id === 'string' ? cmd.id : undefined, error: (err as Error).message });
  }
});
rl.on('close', shutdown);
emit({ ev: 'ready' });
