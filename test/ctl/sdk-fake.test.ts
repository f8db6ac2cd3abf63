// SDK framing, flow control and error logic against an in-process fake daemon built from the IPC codecs.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import {
  decodeIpcMessage,
  encodeIpcMessage,
  errorResponse,
  event,
  IpcFrameDecoder,
  okResponse,
  RecvCredit,
  type IpcMap,
} from '../../daemon/ipc/protocol.js';
import { Pilot, PilotSdkError } from '../../ctl/index.js';
import { buildProgram } from '../../ctl/commands/program.js';
import { toCliError } from '../../ctl/commands/common.js';

type Handler = (op: string, id: number, body: IpcMap, reply: (m: Parameters<typeof encodeIpcMessage>[0]) => void, sock: Socket) => void;

async function fakeDaemon(t: { teardown(fn: () => unknown): void }, handler: Handler, hello: IpcMap = {}): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'pilotctl-fake-'));
  const path = join(dir, 's.sock');
  const socks = new Set<Socket>();
  const server = createServer((sock) => {
    socks.add(sock);
    const dec = new IpcFrameDecoder();
    const reply = (m: Parameters<typeof encodeIpcMessage>[0]): void => void sock.write(encodeIpcMessage(m));
    sock.on('data', (c: Buffer) => {
      for (const f of dec.push(c)) {
        const m = decodeIpcMessage(f);
        if (m.type !== 'request') continue;
        const { op, ...body } = m.body;
        if (op === 'hello') reply(okResponse(m.id, { version: 1, daemon: 'fake', max_message: 1 << 20, max_data_chunk: 262144, send_window: 1 << 20, recv_credit: 1 << 20, ...hello }));
        else handler(op, m.id, body, reply, sock);
      }
    });
    sock.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(path, r));
  t.teardown(async () => {
    for (const s of socks) s.destroy();
    await new Promise((r) => server.close(r));
    rmSync(dir, { recursive: true, force: true });
  });
  return path;
}

const dialOk = (id: number, conn = 5) => okResponse(id, { conn, local_port: 49152, remote_addr: '0:0000.0000.0002', remote_port: 7 });

t.test('not_running when nothing listens', async (t) => {
  await t.rejects(Pilot.connect({ socket: join(tmpdir(), 'no-such-pilot.sock') }), { name: 'PilotSdkError', code: 'not_running' });
});

t.test('error responses become PilotSdkError with code and hint; out-of-order responses match by id', async (t) => {
  const held: Array<() => void> = [];
  const socket = await fakeDaemon(t, (op, id, body, reply) => {
    if (op === 'dial') reply(errorResponse(id, 'timeout', 'no SYN-ACK', 'is the peer trusted?'));
    else if (op === 'info') held.push(() => reply(okResponse(id, { node_id: 1, address: '0:0000.0000.0001', tag: body.tag ?? null })));
    else if (op === 'peers') {
      reply(okResponse(id, { peers: [{ node_id: 9 }] }));
      for (const h of held.splice(0)) h(); // answer the earlier info after the later peers
    }
  });
  const pilot = await Pilot.connect({ socket });
  t.teardown(() => pilot.close());
  const err = await pilot.dial('bravo', 7).catch((e: unknown) => e);
  t.ok(err instanceof PilotSdkError, 'typed error');
  t.equal((err as PilotSdkError).code, 'timeout', 'daemon code kept');
  t.equal((err as PilotSdkError).hint, 'is the peer trusted?', 'daemon hint kept');
  const infoP = pilot.info();
  const peers = await pilot.peers();
  t.same(peers, [{ node_id: 9 }], 'later request answered first');
  t.equal((await infoP).node_id, 1, 'earlier request still resolves');
  t.equal(toCliError(err).code, 'timeout', 'CLI maps timeout');
  t.equal(toCliError(new PilotSdkError('refused', 'x')).code, 'connection_failed', 'CLI maps refused → connection_failed');
  t.equal(toCliError(new PilotSdkError('port_in_use', 'x')).code, 'already_exists', 'CLI maps port_in_use → already_exists');
});

t.test('send window: never more than send_window unanswered bytes; writes wait', async (t) => {
  const window = 300_000;
  let outstanding = 0;
  let maxOutstanding = 0;
  let received = 0;
  const pendingReplies: Array<() => void> = [];
  const socket = await fakeDaemon(
    t,
    (op, id, body, reply) => {
      if (op === 'dial') reply(dialOk(id));
      else if (op === 'send') {
        const n = (body.data as Uint8Array).length;
        t.ok(n <= 262144, 'each send ≤ max data chunk');
        outstanding += n;
        maxOutstanding = Math.max(maxOutstanding, outstanding);
        pendingReplies.push(() => {
          outstanding -= n;
          received += n;
          reply(okResponse(id, { accepted: n }));
        });
      } else if (op === 'end' || op === 'close') reply(okResponse(id));
    },
    { send_window: window },
  );
  const pilot = await Pilot.connect({ socket });
  t.teardown(() => pilot.close());
  const conn = await pilot.dial('bravo', 7);
  const total = 2_000_000;
  const ok = conn.write(Buffer.alloc(total, 1));
  t.equal(ok, false, 'a write beyond the window reports back-pressure');
  await new Promise((r) => setTimeout(r, 50));
  t.ok(maxOutstanding <= window, `outstanding ${maxOutstanding} within the window while the daemon is slow`);
  t.ok(received === 0, 'nothing answered yet');
  // Release replies slowly; the writer advances only as replies come back.
  while (received < total) {
    const r = pendingReplies.shift();
    if (r) r();
    await new Promise((res) => setImmediate(res));
  }
  t.equal(received, total, 'all bytes sent');
  t.ok(maxOutstanding <= window, 'window respected throughout');
  conn.destroy();
});

t.test('receive credit: daemon may only send granted bytes; a paused reader grants nothing', async (t) => {
  const credit = 64 * 1024;
  let daemonCredit: RecvCredit | null = null;
  let push: ((n: number) => void) | null = null;
  let grants = 0;
  const socket = await fakeDaemon(t, (op, id, body, reply) => {
    if (op === 'dial') {
      daemonCredit = new RecvCredit(body.recv_credit as number);
      reply(dialOk(id));
      push = (n: number) => {
        // Send as much as credit allows (RecvCredit.consume throws if the SDK over-granted).
        let left = n;
        while (left > 0) {
          const k = daemonCredit!.nextChunk(left);
          if (k === 0) break;
          daemonCredit!.consume(k);
          reply(event('data', { conn: 5, data: Buffer.alloc(k, 7) }));
          left -= k;
        }
      };
    } else if (op === 'credit') {
      grants += body.bytes as number;
      daemonCredit!.grant(body.bytes as number);
      if (id !== 0) reply(okResponse(id, { credit: daemonCredit!.available }));
    } else if (op === 'close') reply(okResponse(id));
  });
  const pilot = await Pilot.connect({ socket, recvCredit: credit });
  t.teardown(() => pilot.close());
  const conn = await pilot.dial('bravo', 7);
  conn.pause();
  push!(1_000_000);
  await new Promise((r) => setTimeout(r, 50));
  t.equal(daemonCredit!.available, 0, 'daemon used up the initial credit');
  t.equal(conn.readableLength, credit, 'exactly the credit was delivered to the paused reader');
  t.equal(grants, 0, 'no credit granted while the reader is paused');
  let got = 0;
  conn.on('data', (c: Buffer) => (got += c.length));
  conn.resume();
  for (let i = 0; i < 100 && got < 500_000; i++) {
    push!(1_000_000);
    await new Promise((r) => setTimeout(r, 5));
  }
  t.ok(got >= 500_000, `reading resumes the flow (${got} bytes)`);
  t.ok(grants > 0, 'credit granted as the reader consumed');
  conn.destroy();
});

t.test('closed with a code destroys the stream with that error; garbage from the daemon fails requests', async (t) => {
  const socket = await fakeDaemon(t, (op, id, _body, reply, sock) => {
    if (op === 'dial') {
      reply(dialOk(id));
      setTimeout(() => reply(event('closed', { conn: 5, code: 'conn_closed', reason: 'trust revoked' })), 10);
    } else if (op === 'info') sock.write(Buffer.from([0, 0, 0, 2, 0x21, 0xff]));
  });
  const pilot = await Pilot.connect({ socket });
  t.teardown(() => pilot.close());
  const conn = await pilot.dial('bravo', 7);
  const err = await new Promise<Error>((r) => conn.on('error', r));
  t.equal((err as PilotSdkError).code, 'conn_closed', 'stream error carries the close code');
  t.match(err.message, /trust revoked/, 'and the reason');
  await t.rejects(pilot.info(), { code: 'protocol' }, 'undecodable response → protocol error');
  t.equal(pilot.closed, true, 'client is closed after a protocol violation');
});

t.test('every pilotctl command has a description and help', async (t) => {
  const program = buildProgram();
  const all: string[] = [];
  const walk = (c: typeof program, prefix: string): void => {
    for (const s of c.commands) {
      const name = `${prefix}${s.name()}`;
      all.push(name);
      t.ok(s.description().length > 0, `${name} has a description`);
      t.match(s.helpInformation(), /Usage: /, `${name} --help`);
      walk(s, `${name} `);
    }
  };
  walk(program, '');
  for (const want of ['init', 'config', 'context', 'daemon start', 'daemon stop', 'daemon status', 'info', 'peers', 'connections', 'disconnect', 'set-hostname', 'clear-hostname', 'find', 'set-tags', 'clear-tags', 'set-public', 'set-private', 'handshake', 'approve', 'reject', 'untrust', 'pending', 'trust', 'connect', 'send', 'recv', 'send-file', 'send-message', 'subscribe', 'publish', 'listen', 'ping', 'traceroute', 'bench', 'received', 'inbox', 'set-webhook', 'deregister', 'task submit', 'task list', 'network create', 'network join', 'network leave', 'network list', 'network members']) {
    t.ok(all.includes(want), `command ${want} exists`);
  }
});
