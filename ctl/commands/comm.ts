/** Data commands: connect, send/recv, files and messages, pub/sub, datagrams, ping, traceroute, bench, tasks. */
import { readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { bench, publish, sendFile, sendMessage, serveDiscard, subscribe, Ports } from '../sdk/services.js';
import type { TaskInfo, TaskType } from '../sdk/tasks.js';
import type { PilotConnection } from '../sdk/connection.js';
import { action, CliError, mib, parseDuration, parseIntArg, table, within, type Ctx } from './common.js';

/** Read from `conn` until the first data or EOF (v1 one-shot reply). */
function firstReply(conn: PilotConnection): Promise<string> {
  return new Promise((resolve, reject) => {
    const onData = (c: Buffer): void => done(c.toString());
    const onEnd = (): void => done('');
    const onErr = (e: Error): void => {
      off();
      reject(e);
    };
    const off = (): void => {
      conn.off('data', onData);
      conn.off('end', onEnd);
      conn.off('error', onErr);
      conn.pause();
    };
    const done = (s: string): void => {
      off();
      resolve(s);
    };
    conn.on('data', onData);
    conn.on('end', onEnd);
    conn.on('error', onErr);
    conn.resume(); // an explicitly paused stream does not restart on a new 'data' listener
  });
}

async function dataDir(ctx: Ctx): Promise<string> {
  const info = await (await ctx.pilot()).info();
  if (typeof info.data_dir !== 'string') throw new CliError('unavailable', 'the daemon does not report its data directory');
  return info.data_dir;
}

export function registerCommCommands(program: Command): void {
  program
    .command('connect <peer> [port]')
    .description('open a stream: one request/response with --message, else interactive stdin/stdout (default port 1000)')
    .option('--message <m>', 'send this and print the reply')
    .option('--timeout <d>', 'dial and reply timeout', '30s')
    .action(
      action(async (ctx: Ctx, peer: string, port: string | undefined, o: { message?: string; timeout: string }) => {
        const ms = parseDuration(o.timeout);
        const p = port === undefined ? 1000 : parseIntArg(port, 'port', 1, 65535);
        const conn = await (await ctx.pilot()).dial(peer, p, { timeoutMs: ms });
        if (o.message !== undefined) {
          const reply = firstReply(conn);
          conn.write(o.message);
          const r = await within(ms, 'reply', reply);
          conn.destroy();
          ctx.ok({ peer, port: p, sent: o.message, response: r }, r);
          return;
        }
        process.stdin.pipe(conn);
        conn.pipe(process.stdout);
        await new Promise<void>((resolve) => conn.on('close', () => resolve()));
      }),
    );

  program
    .command('send <peer> <port>')
    .description('send data to a port and print the first reply')
    .requiredOption('--data <m>', 'data to send')
    .option('--timeout <d>', 'timeout', '30s')
    .action(
      action(async (ctx: Ctx, peer: string, port: string, o: { data: string; timeout: string }) => {
        const ms = parseDuration(o.timeout);
        const p = parseIntArg(port, 'port', 1, 65535);
        const conn = await (await ctx.pilot()).dial(peer, p, { timeoutMs: ms });
        const reply = firstReply(conn);
        conn.write(o.data);
        const r = await within(ms, 'reply', reply);
        conn.destroy();
        ctx.ok({ peer, port: p, sent: Buffer.byteLength(o.data), response: r }, r);
      }),
    );

  program
    .command('recv <port>')
    .description('accept streams on a port and print each received message')
    .option('--count <n>', 'messages to receive', '1')
    .option('--timeout <d>', 'give up after', '30s')
    .action(
      action(async (ctx: Ctx, port: string, o: { count: string; timeout: string }) => {
        const p = parseIntArg(port, 'port', 1, 65535);
        const count = parseIntArg(o.count, 'count', 1, 1_000_000);
        const server = await (await ctx.pilot()).listen(p);
        const messages: Array<{ from: string; data: string }> = [];
        const done = new Promise<void>((resolve) => {
          server.on('connection', (conn: PilotConnection) => {
            const chunks: Buffer[] = [];
            let n = 0;
            const flush = (): void => {
              if (chunks.length === 0) return;
              const m = { from: conn.remote, data: Buffer.concat(chunks).toString() };
              chunks.length = 0;
              if (messages.length >= count) return;
              messages.push(m);
              if (!ctx.json) ctx.line(m, `${m.from}: ${m.data}`);
              if (messages.length >= count) resolve();
            };
            conn.on('data', (c: Buffer) => {
              chunks.push(c);
              n += c.length;
              // One message per received burst (v1 prints each read).
              setImmediate(flush);
            });
            conn.on('end', () => {
              flush();
              conn.end();
            });
            conn.on('error', () => undefined);
            void n;
          });
        });
        try {
          await within(parseDuration(o.timeout), 'recv', done);
        } finally {
          await server.close();
        }
        if (ctx.json) ctx.ok({ port: p, messages });
      }),
    );

  program
    .command('send-file <peer> <path>')
    .description('send a file through the data exchange (port 1001); the peer saves it under received/')
    .option('--timeout <d>', 'timeout', '60s')
    .action(
      action(async (ctx: Ctx, peer: string, path: string, o: { timeout: string }) => {
        const size = (await stat(path).catch(() => null))?.size;
        if (size === undefined) throw new CliError('not_found', `no such file: ${path}`, { hint: 'check the path' });
        const r = await sendFile(await ctx.pilot(), peer, path, { timeoutMs: parseDuration(o.timeout), onProgress: ctx.progress('send-file') });
        ctx.ok({ peer, filename: r.filename, bytes: r.bytes, sha256: r.sha256, reply: r.reply }, `sent ${r.filename} (${r.bytes} bytes, sha256 ${r.sha256}): ${r.reply}`);
      }),
    );

  program
    .command('send-message <peer>')
    .description('send a message to the peer\'s inbox (data exchange, port 1001)')
    .requiredOption('--data <d>', 'message')
    .option('--type <t>', 'text | json | binary', 'text')
    .option('--timeout <d>', 'timeout', '30s')
    .action(
      action(async (ctx: Ctx, peer: string, o: { data: string; type: string; timeout: string }) => {
        if (!['text', 'json', 'binary'].includes(o.type)) throw new CliError('invalid_argument', `--type must be text, json or binary, not ${o.type}`);
        const r = await sendMessage(await ctx.pilot(), peer, o.data, o.type as 'text', { timeoutMs: parseDuration(o.timeout) });
        ctx.ok({ peer, type: r.type, bytes: r.bytes, reply: r.reply }, r.reply);
      }),
    );

  program
    .command('subscribe <peer> <topic>')
    .description('subscribe to a topic on the peer\'s event stream (port 1002; "*" = all); NDJSON with --json')
    .option('--count <n>', 'stop after n events')
    .option('--timeout <d>', 'stop after this long')
    .action(
      action(async (ctx: Ctx, peer: string, topic: string, o: { count?: string; timeout?: string }) => {
        const count = o.count === undefined ? Infinity : parseIntArg(o.count, 'count', 1, 1_000_000);
        const sub = await subscribe(await ctx.pilot(), peer, topic);
        const events: Array<{ topic: string; data: string }> = [];
        const run = (async () => {
          for await (const e of sub.events) {
            const ev = { topic: e.topic, data: e.payload.toString() };
            if (count === Infinity) ctx.line(ev, `[${ev.topic}] ${ev.data}`);
            else {
              events.push(ev);
              if (!ctx.json) ctx.line(ev, `[${ev.topic}] ${ev.data}`);
            }
            if (events.length >= count) break;
          }
        })();
        try {
          if (o.timeout) await within(parseDuration(o.timeout), 'subscribe', run).catch((e: unknown) => {
            if ((e as CliError).code !== 'timeout' || events.length === 0) throw e;
          });
          else await run;
        } finally {
          sub.close();
        }
        if (count !== Infinity && ctx.json) ctx.ok({ topic, events });
      }),
    );

  program
    .command('publish <peer> <topic>')
    .description('publish an event on the peer\'s event stream (port 1002)')
    .requiredOption('--data <d>', 'payload')
    .action(
      action(async (ctx: Ctx, peer: string, topic: string, o: { data: string }) => {
        const r = await publish(await ctx.pilot(), peer, topic, o.data);
        ctx.ok({ peer, ...r }, `published ${r.bytes} bytes on ${topic}`);
      }),
    );

  program
    .command('listen <port>')
    .description('receive datagrams on a port')
    .option('--count <n>', 'stop after n datagrams')
    .option('--timeout <d>', 'stop after this long')
    .action(
      action(async (ctx: Ctx, port: string, o: { count?: string; timeout?: string }) => {
        const p = parseIntArg(port, 'port', 1, 65535);
        const count = o.count === undefined ? Infinity : parseIntArg(o.count, 'count', 1, 1_000_000);
        const sock = await (await ctx.pilot()).datagram(p);
        const got: Array<{ from: string; port: number; data: string }> = [];
        const run = (async () => {
          for await (const d of sock) {
            const m = { from: d.addr, port: d.port, data: d.data.toString() };
            got.push(m);
            if (!ctx.json || count === Infinity) ctx.line(m, `${m.from}:${m.port}: ${m.data}`);
            if (got.length >= count) break;
          }
        })();
        try {
          if (o.timeout) await within(parseDuration(o.timeout), 'listen', run);
          else await run;
        } finally {
          await sock.close();
        }
        if (count !== Infinity && ctx.json) ctx.ok({ port: p, datagrams: got });
      }),
    );

  program
    .command('broadcast')
    .description('network broadcast (not available, as in v1)')
    .action(
      action(async () => {
        throw new CliError('unavailable', 'broadcast is not available', { hint: 'send to each peer, or use publish/subscribe' });
      }),
    );

  program
    .command('ping <peer>')
    .description('measure round-trip time to a peer')
    .option('--count <n>', 'probes', '4')
    .option('--timeout <d>', 'per-probe timeout', '30s')
    .action(
      action(async (ctx: Ctx, peer: string, o: { count: string; timeout: string }) => {
        const n = parseIntArg(o.count, 'count', 1, 1000);
        const ms = parseDuration(o.timeout);
        const pilot = await ctx.pilot();
        const target = await pilot.resolve(peer);
        const rtts: number[] = [];
        for (let i = 0; i < n; i++) {
          if (i > 0) await new Promise((r) => setTimeout(r, 1000));
          const rtt = await within(ms, 'ping', pilot.ping(peer));
          rtts.push(rtt);
          if (!ctx.json) ctx.line({}, `reply from ${target.address}: time=${rtt.toFixed(2)} ms`);
        }
        const stats = { peer: target.address, count: n, rtt_ms: rtts, min_ms: Math.min(...rtts), avg_ms: rtts.reduce((a, b) => a + b, 0) / n, max_ms: Math.max(...rtts) };
        ctx.ok(stats, `${n} probes: min ${stats.min_ms.toFixed(2)} / avg ${stats.avg_ms.toFixed(2)} / max ${stats.max_ms.toFixed(2)} ms`);
      }),
    );

  program
    .command('traceroute <peer>')
    .description('connection setup time plus three round trips over the echo port')
    .option('--timeout <d>', 'timeout', '30s')
    .action(
      action(async (ctx: Ctx, peer: string, o: { timeout: string }) => {
        const ms = parseDuration(o.timeout);
        const pilot = await ctx.pilot();
        const t0 = performance.now();
        const conn = await pilot.dial(peer, Ports.Echo, { timeoutMs: ms });
        const setup = performance.now() - t0;
        const samples: number[] = [];
        for (let i = 0; i < 3; i++) {
          const s = performance.now();
          const r = firstReply(conn);
          conn.write(`probe-${i}`);
          await within(ms, 'traceroute', r);
          samples.push(performance.now() - s);
        }
        conn.destroy();
        const res = { peer: conn.remoteAddr, setup_ms: setup, rtt_ms: samples };
        ctx.ok(res, `${res.peer}: setup ${setup.toFixed(2)} ms, rtt ${samples.map((x) => x.toFixed(2)).join(' / ')} ms`);
      }),
    );

  program
    .command('bench [peer] [size_mb]')
    .description('throughput through the daemon (encrypted): echo round trip on port 7, or --one-way to a discard listener (port 9) that the peer runs with `pilotctl bench --serve`; SHA-256 verified')
    .option('--one-way', 'one-way to the peer\'s discard listener instead of echo')
    .option('--port <p>', 'override the target port')
    .option('--serve', 'run the discard listener for one-way benches (until interrupted or --timeout)')
    .option('--bytes <n>', 'size in bytes (overrides size_mb)')
    .option('--timeout <d>', 'timeout', '120s')
    .action(
      action(async (ctx: Ctx, peer: string | undefined, sizeMb: string | undefined, o: { oneWay?: boolean; port?: string; serve?: boolean; bytes?: string; timeout: string }) => {
        const pilot = await ctx.pilot();
        const port = o.port === undefined ? undefined : parseIntArg(o.port, 'port', 1, 65535);
        if (o.serve) {
          const server = await serveDiscard(pilot, port ?? Ports.Discard, (r) => ctx.line({ event: 'bench', ...r }, `${r.remote}: ${mib(r.bytes)} sha256 ${r.sha256}`));
          if (!ctx.json) process.stderr.write(`discard listener on port ${server.port}\n`);
          await new Promise<void>((resolve) => {
            process.once('SIGINT', resolve);
            process.once('SIGTERM', resolve);
            if (o.timeout !== '120s') setTimeout(resolve, parseDuration(o.timeout));
          });
          await server.close();
          return;
        }
        if (!peer) throw new CliError('invalid_argument', 'bench needs a peer', { hint: 'pilotctl bench <peer> [size_mb]' });
        const bytes = o.bytes !== undefined ? parseIntArg(o.bytes, 'bytes', 1, 2 ** 40) : Math.round(Number(sizeMb ?? '1') * 1024 * 1024);
        if (!Number.isFinite(bytes) || bytes <= 0) throw new CliError('invalid_argument', `bad size ${sizeMb}`);
        const r = await bench(pilot, peer, bytes, { oneWay: o.oneWay === true, ...(port ? { port } : {}), timeoutMs: parseDuration(o.timeout), onProgress: ctx.progress(`bench ${o.oneWay ? 'one-way' : 'echo'}`) });
        if (!r.verified) throw new CliError('internal', `bench data mismatch (sha256 ${r.sha256})`, { hint: 'data was corrupted in transit: report this' });
        ctx.ok({ peer, ...r }, `${r.mode}: ${mib(r.bytes)} in ${r.seconds.toFixed(2)} s = ${r.mb_per_s.toFixed(1)} MB/s (sha256 verified)`);
      }),
    );

  // ----- local files -----------------------------------------------------------------------------
  const listDir = async (dir: string): Promise<Array<{ name: string; bytes: number; modified: string }>> => {
    const names = await readdir(dir).catch(() => [] as string[]);
    const out = [];
    for (const name of names.sort()) {
      const s = await stat(join(dir, name)).catch(() => null);
      if (s?.isFile()) out.push({ name, bytes: s.size, modified: s.mtime.toISOString() });
    }
    return out;
  };
  program
    .command('received')
    .description('list files received through the data exchange')
    .option('--clear', 'delete them')
    .action(
      action(async (ctx: Ctx, o: { clear?: boolean }) => {
        const dir = join(await dataDir(ctx), 'received');
        const files = await listDir(dir);
        if (o.clear) for (const f of files) await rm(join(dir, f.name), { force: true });
        ctx.ok({ dir, files, cleared: o.clear === true }, () => (o.clear ? `cleared ${files.length} files` : table(files)));
      }),
    );
  program
    .command('inbox')
    .description('list messages received through the data exchange')
    .option('--clear', 'delete them')
    .action(
      action(async (ctx: Ctx, o: { clear?: boolean }) => {
        const dir = join(await dataDir(ctx), 'inbox');
        const files = await listDir(dir);
        const messages: Record<string, unknown>[] = [];
        for (const f of files) {
          try {
            messages.push(JSON.parse(await readFile(join(dir, f.name), 'utf8')) as Record<string, unknown>);
          } catch {
            /* skip unreadable */
          }
        }
        if (o.clear) for (const f of files) await rm(join(dir, f.name), { force: true });
        ctx.ok({ dir, messages, cleared: o.clear === true }, () => (o.clear ? `cleared ${files.length} messages` : table(messages.map((m) => ({ type: m.type, from: m.from, data: m.data, received_at: m.received_at })))));
      }),
    );

  // ----- tasks (through the daemon's task_* IPC ops) -------------------------------------------------
  const task = program.command('task').description('task submission (port 1003)');
  const short = (s: unknown, n = 48): string => {
    const t = String(s ?? '').replace(/\s+/g, ' ');
    return t.length > n ? `${t.slice(0, n - 1)}…` : t;
  };
  const taskRows = (tasks: TaskInfo[], type: TaskType): string =>
    table(
      tasks.map((x) => ({
        task_id: x.task_id,
        status: x.status,
        [type === 'received' ? 'from' : 'to']: type === 'received' ? x.from_addr : x.to_addr,
        description: short(x.task_description),
        ...(type === 'submitted' ? { result: x.result_path ?? '', justification: short(x.status_justification, 40) } : {}),
      })),
    );
  task
    .command('submit <peer>')
    .description('submit a task to a peer')
    .requiredOption('--task <d>', 'task description')
    .option('--timeout <d>', 'timeout', '30s')
    .action(
      action(async (ctx: Ctx, peer: string, o: { task: string; timeout: string }) => {
        const r = await (await ctx.pilot()).tasks.submit(peer, o.task, { timeoutMs: parseDuration(o.timeout) });
        if (r.status !== 200) throw new CliError('unavailable', `task refused: ${r.message}`, { hint: 'the peer declined (polo score or task execution disabled)' });
        ctx.ok(r, `task ${r.task_id} submitted: ${r.message}`);
      }),
    );
  task
    .command('list')
    .description('list tasks')
    .option('--type <t>', 'received | submitted', 'received')
    .action(
      action(async (ctx: Ctx, o: { type: string }) => {
        if (o.type !== 'received' && o.type !== 'submitted') throw new CliError('invalid_argument', '--type must be received or submitted');
        const type: TaskType = o.type;
        const tasks = await (await ctx.pilot()).tasks.list(type);
        ctx.ok({ type, tasks }, () => taskRows(tasks, type));
      }),
    );
  task
    .command('queue')
    .description('list accepted tasks waiting to be executed (head first)')
    .action(
      action(async (ctx: Ctx) => {
        const tasks = await (await ctx.pilot()).tasks.queue();
        ctx.ok({ tasks }, () => taskRows(tasks, 'received'));
      }),
    );
  task
    .command('accept')
    .description('accept a received task (NEW → ACCEPTED, queued)')
    .requiredOption('--id <id>', 'task id')
    .action(
      action(async (ctx: Ctx, o: { id: string }) => {
        const r = await (await ctx.pilot()).tasks.accept(o.id);
        ctx.ok(r, `task ${r.task_id} accepted and queued; start it with: pilotctl task execute`);
      }),
    );
  task
    .command('decline')
    .description('decline a received task (NEW → DECLINED)')
    .requiredOption('--id <id>', 'task id')
    .option('--justification <text>', 'reason sent to the submitter', '')
    .action(
      action(async (ctx: Ctx, o: { id: string; justification: string }) => {
        const r = await (await ctx.pilot()).tasks.decline(o.id, o.justification);
        ctx.ok(r, `task ${r.task_id} declined`);
      }),
    );
  task
    .command('execute')
    .description('start the next accepted task (head of the queue → EXECUTING)')
    .action(
      action(async (ctx: Ctx) => {
        const r = await (await ctx.pilot()).tasks.execute();
        ctx.ok(r, `executing task ${r.task_id} from ${r.from_addr}:\n${r.task_description}\nsend the results with: pilotctl task send-results --id ${r.task_id} --results TEXT | --file PATH`);
      }),
    );
  task
    .command('send-results')
    .description('send the results of an executing task to its submitter (→ COMPLETED)')
    .requiredOption('--id <id>', 'task id')
    .option('--results <text>', 'text results')
    .option('--file <path>', 'a result file')
    .action(
      action(async (ctx: Ctx, o: { id: string; results?: string; file?: string }) => {
        if ((o.results === undefined) === (o.file === undefined)) throw new CliError('invalid_argument', 'give exactly one of --results TEXT or --file PATH');
        const r = await (await ctx.pilot()).tasks.sendResults(o.id, o.results !== undefined ? { text: o.results } : { file: o.file! });
        ctx.ok(r, `results of task ${r.task_id} sent to ${r.from_addr} (${r.status})`);
      }),
    );
}
