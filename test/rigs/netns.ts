/**
 * Real-NAT test rigs: Linux network namespaces joined by veth pairs, with NAT routers built from
 * nftables + conntrack. Everything a rig creates lives in namespaces it owns; no link ever reaches the
 * machine's own network, so the only traffic targets are addresses inside those namespaces.
 *
 * Topology:
 *   internet ns  — one bridge `inet`; every public host and every NAT's WAN side hangs off it through a
 *                  veth. All public addresses are /32 with an on-link default route, so any documentation
 *                  range (192.0.2/24, 198.51.100/24, 203.0.113/24) can be mixed on the one segment.
 *   NAT router ns — `wan` (public /32) and a bridge `lan` (router = first address of the LAN subnet);
 *                  the nftables table `ip natrig` implements the NAT type (see natRuleset()).
 *   host ns       — `eth0`, either on the internet bridge (public host) or a NAT's LAN (private host).
 *
 * Naming: every namespace is `<prefix>-<pid>-<rand>-<name>` so rigs of parallel test processes never
 * collide, and `sweepStale(prefix)` can tell leftovers of dead processes from live rigs. Interface names
 * are namespace-local (`eth0`, `wan`, `lan`, `p<n>`, `h<n>`), so they never collide either and stay short.
 */
import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { RigError } from './errors.js';
import { assertUnicast, formatCidr, nthHost, parseCidr, type Cidr } from './ipv4.js';
import { LineReader, type LineMatch } from './lines.js';
import { UdpAgent } from './agent.js';

/**
 * NAT behaviours (RFC 4787 terms: mapping / filtering):
 * - `full-cone`: endpoint-independent mapping, endpoint-independent filtering (anyone may send to a mapping).
 * - `cone`: endpoint-independent mapping, address-dependent filtering ("restricted cone": any port of an
 *   address the inside endpoint has sent to may reach it).
 * - `port-restricted`: endpoint-independent mapping, address-and-port-dependent filtering (plain conntrack).
 * - `symmetric`: endpoint-dependent mapping (a fresh random external port per destination), address-and-port
 *   dependent filtering.
 */
export type NatType = 'full-cone' | 'cone' | 'port-restricted' | 'symmetric';
export const NAT_TYPES: readonly NatType[] = ['full-cone', 'cone', 'port-restricted', 'symmetric'];

export interface ExecResult {
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  /** Written to the command's stdin. */
  input?: string;
  /** Kill the command after this long (default 15 s). */
  timeoutMs?: number;
}

export interface RigOptions {
  /** Namespace name prefix, `[a-z][a-z0-9]{0,11}` (default `natrig`). Use one per test file. */
  prefix?: string;
  /** Remove leftovers of dead processes with the same prefix first (default true). */
  sweep?: boolean;
}

export interface NatOptions {
  publicIp: string;
  /** Private subnet behind the NAT, e.g. `10.1.0.0/24`; the router takes the first address. */
  lan: string;
  type: NatType;
  /** UDP mapping timeout in seconds (conntrack `nf_conntrack_udp_timeout[_stream]` in the router's namespace). */
  udpTimeoutSec?: number;
}

/**
 * Link impairment. `lossPct` works everywhere (tc netem, or nftables `numgen` where netem is missing);
 * `delayMs`/`jitterMs` need `sch_netem`; `rateKbit` uses netem or `tbf`.
 */
export interface Impairment {
  delayMs?: number;
  jitterMs?: number;
  lossPct?: number;
  rateKbit?: number;
  /** `out` = what the namespace sends, `in` = what it receives, `both` (default). */
  direction?: 'in' | 'out' | 'both';
}

export interface ImpairmentSupport {
  netem: boolean;
  tbf: boolean;
  nftLoss: boolean;
}

/** One NAT binding as conntrack sees it in the router. */
export interface NatMapping {
  inside: { ip: string; port: number };
  remote: { ip: string; port: number };
  external: { ip: string; port: number };
  /** Seconds until conntrack forgets it. */
  ttlSec: number;
  /** Seen traffic both ways. */
  replied: boolean;
}

const DEFAULT_PREFIX = 'natrig';
const PREFIX_RE = /^[a-z][a-z0-9]{0,11}$/;
const NAME_RE = /^[a-zA-Z][a-zA-Z0-9_]{0,31}$/;
const NFT_TABLE = 'natrig';
const IMPAIR_TABLE = 'natrig_impair';

// ---------------------------------------------------------------------------------------------------
// Running commands

/** Runs a command, resolves with its output, rejects with RigError('command_failed') on non-zero exit. */
export function run(cmd: string, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const limit = 4 * 1024 * 1024; // bounded: rig commands print little
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      if (stdout.length < limit) stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < limit) stderr += d;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 15_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new RigError('command_failed', `${cmd} ${args.join(' ')}: ${err.message}`, { cause: err }));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve({ stdout, stderr });
      else {
        const how = signal ? `killed by ${signal}` : `exit code ${code}`;
        reject(new RigError('command_failed', `${cmd} ${args.join(' ')}: ${how}: ${stderr.trim() || stdout.trim()}`));
      }
    });
    child.stdin.on('error', () => {}); // command may exit before reading its input
    child.stdin.end(opts.input ?? '');
  });
}

function inNs(ns: string, cmd: string, args: readonly string[], opts?: ExecOptions): Promise<ExecResult> {
  return run('ip', ['netns', 'exec', ns, cmd, ...args], opts);
}

/** Writes `/proc/sys/...` values inside a namespace (no dependency on procps' `sysctl`). */
async function setSysctls(ns: string, values: Record<string, string | number>, optional = false): Promise<void> {
  const script = Object.entries(values)
    .map(([k, v]) => {
      const path = `/proc/sys/${k.replace(/\./g, '/')}`;
      return optional ? `[ -e ${path} ] && echo ${v} > ${path}` : `echo ${v} > ${path}`;
    })
    .join('; ');
  await inNs(ns, 'sh', ['-ec', optional ? `${script}; true` : script]);
}

// ---------------------------------------------------------------------------------------------------
// Availability probing

/** Rig ids of throwaway probe namespaces in use by this process (so sweepStale leaves them alone). */
const liveProbeIds = new Set<string>();

/** `natrig-<pid>-<hex>-probe`: swept like any rig namespace if the process dies mid-probe. */
function probeNamespace(): string {
  const id = `${DEFAULT_PREFIX}-${process.pid}-${randomBytes(3).toString('hex')}`;
  liveProbeIds.add(id);
  return `${id}-probe`;
}

function probeDone(ns: string): Promise<void> {
  liveProbeIds.delete(ns.slice(0, -'-probe'.length));
  return run('ip', ['netns', 'del', ns]).then(() => {}, () => {});
}

let availability: Promise<{ ok: true } | { ok: false; reason: string }> | undefined;

/**
 * Whether rigs can be built here: Linux, root, `ip`/`nft`/`conntrack` installed, and namespaces + veth +
 * nftables NAT actually work (containers without CAP_SYS_ADMIN fail the last step). Cached per process.
 */
export function rigAvailable(): Promise<{ ok: true } | { ok: false; reason: string }> {
  availability ??= probeAvailability();
  return availability;
}

async function probeAvailability(): Promise<{ ok: true } | { ok: false; reason: string }> {
  if (process.platform !== 'linux') return { ok: false, reason: `NAT rigs need Linux network namespaces (platform is ${process.platform})` };
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    return { ok: false, reason: 'NAT rigs need root (network namespaces, nftables); run as root to include them' };
  }
  const tools: Array<[string, string[], string]> = [
    ['ip', ['-V'], 'iproute2'],
    ['nft', ['--version'], 'nftables'],
    ['conntrack', ['--version'], 'conntrack'],
  ];
  for (const [cmd, args, pkg] of tools) {
    try {
      await run(cmd, args);
    } catch {
      return { ok: false, reason: `\`${cmd}\` is not installed (Debian package ${pkg}: apt-get install -y ${pkg})` };
    }
  }
  const ns = probeNamespace();
  try {
    await run('ip', ['netns', 'add', ns]);
    await run('ip', ['-n', ns, 'link', 'add', 'name', 'va', 'type', 'veth', 'peer', 'name', 'vb']);
    await run('ip', ['-n', ns, 'link', 'add', 'name', 'br0', 'type', 'bridge']);
    // The real rulesets: proves nft NAT, dynamic maps and fully-random work on this kernel.
    for (const type of NAT_TYPES) {
      await inNs(ns, 'nft', ['-f', '-'], { input: natRuleset({ type, publicIp: '192.0.2.1', lan: '10.0.0.0/24', timeoutSec: 30 }) });
    }
    await inNs(ns, 'conntrack', ['-L'], {});
    return { ok: true };
  } catch (err) {
    return { ok: false, reason: `cannot build network namespaces here: ${(err as Error).message}` };
  } finally {
    await probeDone(ns);
  }
}

let impairSupport: Promise<ImpairmentSupport> | undefined;

/** What link impairment this kernel offers (probed once, in a throwaway namespace). */
export function impairmentSupport(): Promise<ImpairmentSupport> {
  impairSupport ??= (async () => {
    const ns = probeNamespace();
    const ok = (p: Promise<unknown>) => p.then(() => true, () => false);
    try {
      await run('ip', ['netns', 'add', ns]);
      await run('ip', ['-n', ns, 'link', 'add', 'name', 'd0', 'type', 'veth', 'peer', 'name', 'd1']);
      const netem = await ok(run('tc', ['-n', ns, 'qdisc', 'add', 'dev', 'd0', 'root', 'netem', 'delay', '1ms']));
      const tbf = await ok(run('tc', ['-n', ns, 'qdisc', 'add', 'dev', 'd1', 'root', 'tbf', 'rate', '1mbit', 'burst', '32kbit', 'latency', '400ms']));
      const nftLoss = await ok(inNs(ns, 'nft', ['-f', '-'], { input: impairNft('d0', 1, 'out') }));
      return { netem, tbf, nftLoss };
    } catch {
      return { netem: false, tbf: false, nftLoss: false };
    } finally {
      await probeDone(ns);
    }
  })();
  return impairSupport;
}

// ---------------------------------------------------------------------------------------------------
// nftables rulesets

/** Per-packet loss with nftables where netem is missing: netdev hooks on the interface itself. */
function impairNft(iface: string, lossPct: number, direction: 'in' | 'out' | 'both'): string {
  const threshold = Math.round(lossPct * 10_000); // numgen over 1e6 → 0.0001 % resolution
  const drop = threshold >= 1_000_000 ? 'counter drop' : `numgen random mod 1000000 < ${threshold} counter drop`;
  const lines: string[] = [];
  if (direction !== 'out') {
    lines.push(`table netdev ${IMPAIR_TABLE}`, `delete table netdev ${IMPAIR_TABLE}`, `table netdev ${IMPAIR_TABLE} {`,
      `  chain ingress_loss { type filter hook ingress device "${iface}" priority 0; policy accept; ${drop}; }`, '}');
  }
  if (direction !== 'in') {
    // netdev egress needs kernel >= 5.16; ip postrouting sees locally sent and forwarded packets alike.
    lines.push(`table ip ${IMPAIR_TABLE}`, `delete table ip ${IMPAIR_TABLE}`, `table ip ${IMPAIR_TABLE} {`,
      `  chain egress_loss { type filter hook postrouting priority 300; policy accept; oifname "${iface}" ${drop}; }`, '}');
  }
  return lines.join('\n') + '\n';
}

/** Endpoint-independent mapping (every type but symmetric). */
const isEim = (type: NatType): boolean => type !== 'symmetric';
/** Inbound packets may open flows through learned mappings (beyond conntrack's replies). */
const opensInbound = (type: NatType): boolean => type === 'full-cone' || type === 'cone';

/**
 * Rules of the `learn` chain: after source NAT, remember each inside endpoint's external port (`rev`,
 * `ports`), for the cone types the reverse (`eim`), and for `cone` whom it talked to (`permit`).
 */
function learnRules(type: NatType, timeoutSec: number): string[] {
  if (!isEim(type)) return [];
  const t = `${timeoutSec}s`;
  // Only flows the inside opened (direction original): on inbound-opened flows `ct reply proto-dst`
  // is the outside peer's port.
  const sel = 'oifname "wan" meta l4proto udp ct direction original';
  const rules = [
    `${sel} update @rev { ct original ip saddr . ct original proto-src timeout ${t} : ct reply ip daddr . ct reply proto-dst }`,
    `${sel} update @ports { ct reply proto-dst timeout ${t} }`,
  ];
  if (opensInbound(type)) {
    rules.push(`${sel} update @eim { ct reply proto-dst timeout ${t} : ct original ip saddr . ct original proto-src }`);
  }
  if (type === 'cone') rules.push(`${sel} update @permit { ct reply proto-dst . ip daddr timeout ${t} }`);
  return rules;
}

/**
 * The router's whole nftables table for a NAT type, replacing any previous one atomically.
 *
 * Mapping (UDP): an inside endpoint that already has a mapping is source-NATed to it again (`rev`), so it
 * keeps one external port towards every destination. A new endpoint keeps its own port (`masquerade`
 * preserves it when free) unless that port is already another endpoint's external port (`ports`), in
 * which case it gets a random one — plain masquerade would reuse it for other destinations ("port
 * overloading"), which is not endpoint-independent. `symmetric` uses `masquerade fully-random`: a fresh
 * random port for every new destination.
 *
 * Filtering: conntrack lets in only replies of flows the inside opened (address-and-port dependent).
 * `cone` also DNATs new inbound packets from any port of an address the inside endpoint has sent to
 * (`permit`), `full-cone` from anyone, both through `eim` (external port → inside endpoint).
 * Unsolicited inbound packets are dropped silently, as home routers do (no ICMP port unreachable).
 * Mapping entries expire after the UDP timeout without outbound traffic, like conntrack's.
 */
export function natRuleset(o: { type: NatType; publicIp: string; lan: string; timeoutSec: number }): string {
  const t = `${o.timeoutSec}s`;
  const dyn = `flags dynamic,timeout; timeout ${t}; size 65536;`;
  const decls: string[] = [];
  const pre: string[] = [];
  const post: string[] = [];
  const out = `oifname "wan" ip saddr ${o.lan}`;
  if (isEim(o.type)) {
    decls.push(`map rev { type ipv4_addr . inet_service : ipv4_addr . inet_service; ${dyn} }`,
      `set ports { type inet_service; ${dyn} }`);
    post.push(`${out} meta l4proto udp snat ip to ip saddr . udp sport map @rev`,
      `${out} udp sport @ports masquerade random`);
  }
  if (opensInbound(o.type)) decls.push(`map eim { type inet_service : ipv4_addr . inet_service; ${dyn} }`);
  if (o.type === 'cone') decls.push(`set permit { type inet_service . ipv4_addr; ${dyn} }`);
  post.push(`${out} masquerade${o.type === 'symmetric' ? ' fully-random' : ''}`);
  if (o.type === 'full-cone') pre.push(`iifname "wan" ip daddr ${o.publicIp} dnat ip addr . port to udp dport map @eim`);
  if (o.type === 'cone') {
    pre.push(`iifname "wan" ip daddr ${o.publicIp} udp dport . ip saddr @permit dnat ip addr . port to udp dport map @eim`);
  }
  const chain = (head: string, rules: string[]) => [`  chain ${head}`, ...rules.map((r) => `    ${r}`), '  }'];
  const lines = [
    `table ip ${NFT_TABLE}`,
    `delete table ip ${NFT_TABLE}`,
    `table ip ${NFT_TABLE} {`,
    ...decls.map((d) => `  ${d}`),
    ...chain('prerouting { type nat hook prerouting priority dstnat; policy accept;', pre),
    ...chain('postrouting { type nat hook postrouting priority srcnat; policy accept;', post),
    ...chain('learn { type filter hook postrouting priority 200; policy accept;', learnRules(o.type, o.timeoutSec)),
    ...chain('forward { type filter hook forward priority filter; policy accept;', [
      'iifname "wan" ct state established,related accept',
      'iifname "wan" ct status dnat accept',
      'iifname "wan" drop',
    ]),
    ...chain('input { type filter hook input priority filter; policy accept;', [
      'iifname "wan" ct state established,related accept',
      'iifname "wan" drop',
    ]),
    '}',
  ];
  return lines.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------------
// Process-wide cleanup registry

const liveRigs = new Set<NetRig>();
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
const signalHandlers = new Map<NodeJS.Signals, () => void>();

function cleanupAllSync(): void {
  for (const rig of [...liveRigs]) rig.closeSync();
}

function installHooks(): void {
  process.on('exit', cleanupAllSync);
  for (const sig of SIGNALS) {
    const handler = (): void => {
      cleanupAllSync(); // also uninstalls the hooks (no live rigs left)
      // Re-raise so the default action (or other handlers, e.g. tap's) still runs with us out of the way.
      process.kill(process.pid, sig);
    };
    signalHandlers.set(sig, handler);
    process.on(sig, handler);
  }
}

function uninstallHooks(): void {
  process.removeListener('exit', cleanupAllSync);
  for (const [sig, handler] of signalHandlers) process.removeListener(sig, handler);
  signalHandlers.clear();
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function listNamespaces(): Promise<string[]> {
  const { stdout } = await run('ip', ['netns', 'list']);
  return stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter(Boolean);
}

/** Namespaces currently present whose name starts with `<prefix>-` (for tests and diagnostics). */
export async function listRigNamespaces(prefix = DEFAULT_PREFIX): Promise<string[]> {
  return (await listNamespaces()).filter((n) => n.startsWith(`${prefix}-`));
}

/**
 * Removes namespaces left by rigs whose process is gone (killed test runs): kills what still runs inside
 * them, then deletes them. Live rigs of other processes (and of this one) are left alone.
 * Returns the namespaces removed.
 */
export async function sweepStale(prefix = DEFAULT_PREFIX): Promise<string[]> {
  if (!PREFIX_RE.test(prefix)) throw new RigError('invalid_name', `bad rig prefix ${JSON.stringify(prefix)}`);
  const re = new RegExp(`^${prefix}-(\\d+)-([0-9a-f]+)-`);
  const mine = new Set([...liveRigs].map((r) => r.id).concat([...liveProbeIds]));
  const removed: string[] = [];
  for (const ns of await listNamespaces()) {
    const m = re.exec(ns);
    if (!m) continue;
    const pid = Number(m[1]);
    const rigId = `${prefix}-${m[1]}-${m[2]}`;
    const stale = pid === process.pid ? !mine.has(rigId) : !pidAlive(pid);
    if (!stale) continue;
    const { stdout } = await run('ip', ['netns', 'pids', ns]).catch(() => ({ stdout: '' }));
    for (const p of stdout.split(/\s+/).filter(Boolean)) {
      try {
        process.kill(Number(p), 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    await run('ip', ['netns', 'del', ns]).catch(() => {});
    removed.push(ns);
  }
  return removed;
}

// ---------------------------------------------------------------------------------------------------
// Namespaces, hosts, NATs

/** A running Node program inside a namespace, with its output split into lines. */
export class NodeProcess {
  readonly stdout: LineReader;
  readonly stderr: LineReader;
  /** Resolves with the exit code (or the signal name) when the process ends. */
  readonly exited: Promise<number | string>;

  constructor(readonly child: ChildProcess, label: string) {
    if (!child.stdout || !child.stderr) throw new RigError('command_failed', `${label}: stdout/stderr must be pipes`);
    this.stdout = new LineReader(child.stdout, `${label} stdout`);
    this.stderr = new LineReader(child.stderr, `${label} stderr`);
    this.exited = new Promise((resolve) => {
      if (child.exitCode !== null) resolve(child.exitCode);
      else child.once('exit', (code, signal) => resolve(code ?? signal ?? -1));
    });
  }

  /** Waits for an stdout line matching `match` (lines printed before the call count). */
  waitForLine(match: LineMatch, timeoutMs = 10_000, what?: string): Promise<string> {
    return this.stdout.next(match, timeoutMs, what);
  }

  /** Writes one line to the process's stdin. */
  writeLine(line: string): void {
    this.child.stdin?.write(line + '\n');
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves when it has exited. */
  async kill(graceMs = 2000): Promise<void> {
    await killChild(this.child, graceMs);
  }
}

async function killChild(child: ChildProcess, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const done = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await done;
  clearTimeout(timer);
}

/** One network namespace of a rig: run commands and processes inside it. */
export class Namespace {
  /** @internal */
  constructor(
    protected readonly rig: NetRig,
    /** Rig-local name (`alice`, `natA`, `internet`). */
    readonly name: string,
    /** The namespace name for `ip netns exec`. */
    readonly ns: string,
  ) {}

  /** Runs `cmd args` inside the namespace; rejects with RigError('command_failed') on non-zero exit. */
  exec(cmd: string, args: readonly string[] = [], opts: ExecOptions = {}): Promise<ExecResult> {
    this.rig.assertOpen();
    return inNs(this.ns, cmd, args, opts);
  }

  /**
   * Starts `cmd args` inside the namespace (`ip netns exec` execs it, so the pid is the command's own).
   * It is killed when the rig closes. With the default piped stdio, read its output (or use node()).
   */
  spawn(cmd: string, args: readonly string[] = [], opts: SpawnOptions = {}): ChildProcess {
    this.rig.assertOpen();
    const child = spawn('ip', ['netns', 'exec', this.ns, cmd, ...args], { stdio: 'pipe', ...opts });
    this.rig.track(child);
    return child;
  }

  /** Runs a Node script (`process.execPath`) inside the namespace with line-oriented output. */
  node(script: string, args: readonly string[] = [], opts: SpawnOptions = {}): NodeProcess {
    const child = this.spawn(process.execPath, [script, ...args], { ...opts, stdio: 'pipe' });
    return new NodeProcess(child, `${this.name}: node ${script.split('/').pop() ?? script}`);
  }

  /** Starts the rig's UDP test agent (a small Node program driving UDP sockets) in this namespace. */
  udpAgent(): Promise<UdpAgent> {
    return UdpAgent.start(this.node(agentScript()), this.name);
  }
}

function agentScript(): string {
  return fileURLToPath(new URL('./udp-agent.js', import.meta.url));
}

/** Where an interface's two ends live (for impairment of either direction). */
interface Link {
  ns: string;
  iface: string;
  peerNs: string;
  peerIface: string;
}

abstract class Attached extends Namespace {
  /** @internal */
  constructor(rig: NetRig, name: string, ns: string, protected readonly link: Link) {
    super(rig, name, ns);
  }

  /** Impairs this namespace's uplink (public host/private host: `eth0`; NAT router: `wan`). */
  async impair(imp: Impairment): Promise<void> {
    await this.rig.applyImpairment(this.link, imp);
  }

  /** Removes any impairment from the uplink (both directions). */
  async clearImpairment(): Promise<void> {
    await this.rig.clearImpairment(this.link);
  }
}

/** A host (public or behind a NAT). */
export class Host extends Attached {
  /** @internal */
  constructor(
    rig: NetRig,
    name: string,
    ns: string,
    link: Link,
    /** The host's own address (public, or private inside its NAT's LAN). */
    readonly ip: string,
    /** The NAT it sits behind, if any. */
    readonly nat: Nat | undefined,
  ) {
    super(rig, name, ns, link);
  }
}

/** A NAT router: WAN side on the internet bridge, LAN bridge with private hosts behind it. */
export class Nat extends Attached {
  private nextHost = 2;
  private currentType: NatType;
  private timeoutSec: number;

  /** @internal */
  constructor(
    rig: NetRig,
    name: string,
    ns: string,
    link: Link,
    readonly publicIp: string,
    /** LAN subnet, normalised (`10.1.0.0/24`). */
    readonly lan: string,
    /** Router address on the LAN (the hosts' default gateway). */
    readonly gateway: string,
    type: NatType,
    timeoutSec: number,
    private readonly lanCidr: Cidr,
  ) {
    super(rig, name, ns, link);
    this.currentType = type;
    this.timeoutSec = timeoutSec;
  }

  get type(): NatType {
    return this.currentType;
  }

  get udpTimeoutSec(): number {
    return this.timeoutSec;
  }

  /** @internal next private address on the LAN. */
  allocateAddress(): { ip: string; prefix: number; index: number } {
    const index = this.nextHost++;
    return { ip: nthHost(this.lanCidr, index), prefix: this.lanCidr.prefix, index };
  }

  /** @internal */
  async applyRules(): Promise<void> {
    await this.exec('nft', ['-f', '-'], {
      input: natRuleset({ type: this.currentType, publicIp: this.publicIp, lan: this.lan, timeoutSec: this.timeoutSec }),
    });
  }

  /**
   * Switches the NAT behaviour at runtime. By default existing mappings are flushed too, as a router
   * applying a new NAT configuration does; with `{ flush: false }` established flows keep the mapping
   * they were given (e.g. a symmetric random port) until they time out.
   */
  async setType(type: NatType, opts: { flush?: boolean } = {}): Promise<void> {
    if (!NAT_TYPES.includes(type)) throw new RigError('invalid_name', `unknown NAT type ${JSON.stringify(type)}`);
    this.currentType = type;
    await this.applyRules();
    if (opts.flush ?? true) await this.flushMappings();
  }

  /**
   * Forgets every NAT mapping now (conntrack table and learned cone mappings of this router only), as if
   * they had all timed out. Packets in flight afterwards are treated as new.
   */
  async flushMappings(): Promise<void> {
    await this.exec('conntrack', ['-F']);
    const flush: string[] = [];
    if (isEim(this.currentType)) flush.push(`flush map ip ${NFT_TABLE} rev`, `flush set ip ${NFT_TABLE} ports`);
    if (opensInbound(this.currentType)) flush.push(`flush map ip ${NFT_TABLE} eim`);
    if (this.currentType === 'cone') flush.push(`flush set ip ${NFT_TABLE} permit`);
    if (flush.length) await this.exec('nft', ['-f', '-'], { input: flush.join('\n') + '\n' });
  }

  /**
   * Sets the UDP mapping timeout: conntrack's `nf_conntrack_udp_timeout` and `…_stream` are per network
   * namespace, so this affects this router only. Existing entries pick it up on their next packet.
   */
  async setUdpTimeout(seconds: number): Promise<void> {
    if (!Number.isInteger(seconds) || seconds < 1 || seconds > 86_400) {
      throw new RigError('invalid_address', `UDP timeout must be 1..86400 s, got ${seconds}`);
    }
    this.timeoutSec = seconds;
    await setSysctls(this.ns, {
      'net.netfilter.nf_conntrack_udp_timeout': seconds,
      'net.netfilter.nf_conntrack_udp_timeout_stream': seconds,
    });
    const rules = learnRules(this.currentType, seconds);
    if (rules.length) {
      await this.exec('nft', ['-f', '-'], {
        input: [`flush chain ip ${NFT_TABLE} learn`, ...rules.map((r) => `add rule ip ${NFT_TABLE} learn ${r}`)].join('\n') + '\n',
      });
    }
  }

  /** Current UDP NAT mappings, as conntrack reports them in this router. */
  async mappings(): Promise<NatMapping[]> {
    const { stdout } = await this.exec('conntrack', ['-L', '-p', 'udp']);
    const out: NatMapping[] = [];
    for (const line of stdout.split('\n')) {
      // udp 17 28 src=10.1.0.2 dst=203.0.113.10 sport=4000 dport=3478 [UNREPLIED] src=203.0.113.10 dst=198.51.100.1 sport=3478 dport=4000 …
      const m = /^udp\s+\d+\s+(\d+)\s+src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+)(?: packets=\d+ bytes=\d+)?( \[UNREPLIED\])? src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+)/.exec(line);
      if (!m) continue;
      out.push({
        ttlSec: Number(m[1]),
        inside: { ip: m[2]!, port: Number(m[4]) },
        remote: { ip: m[3]!, port: Number(m[5]) },
        replied: !m[6],
        external: { ip: m[8]!, port: Number(m[10]) },
      });
    }
    return out;
  }
}

/** A whole topology. Create with `NetRig.create()`, always `close()` (t.teardown). */
export class NetRig {
  /** `<prefix>-<pid>-<rand>`; every namespace of the rig starts with it. */
  readonly id: string;
  readonly internet: Namespace;
  private readonly namespaces: string[] = [];
  private readonly children = new Set<ChildProcess>();
  private readonly hosts = new Map<string, Host>();
  private readonly nats = new Map<string, Nat>();
  private readonly impaired = new Set<string>(); // `${ns}/${iface}` with a qdisc or nft impairment
  private nextPort = 1;
  private closed = false;

  private constructor(readonly prefix: string) {
    this.id = `${prefix}-${process.pid}-${randomBytes(3).toString('hex')}`;
    this.internet = new Namespace(this, 'internet', `${this.id}-inet`);
  }

  static async create(opts: RigOptions = {}): Promise<NetRig> {
    const prefix = opts.prefix ?? DEFAULT_PREFIX;
    if (!PREFIX_RE.test(prefix)) {
      throw new RigError('invalid_name', `rig prefix must match ${PREFIX_RE} (got ${JSON.stringify(prefix)})`);
    }
    if (opts.sweep ?? true) await sweepStale(prefix);
    const rig = new NetRig(prefix);
    if (liveRigs.size === 0) installHooks();
    liveRigs.add(rig);
    try {
      await rig.addNamespace(rig.internet.ns);
      await run('ip', ['-n', rig.internet.ns, 'link', 'add', 'name', 'inet', 'type', 'bridge']);
      await run('ip', ['-n', rig.internet.ns, 'link', 'set', 'inet', 'up']);
    } catch (err) {
      await rig.close();
      throw err;
    }
    return rig;
  }

  /** @internal */
  assertOpen(): void {
    if (this.closed) throw new RigError('closed', `rig ${this.id} is closed`);
  }

  /** @internal */
  track(child: ChildProcess): void {
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    child.once('error', () => this.children.delete(child));
  }

  private async addNamespace(ns: string): Promise<void> {
    await run('ip', ['netns', 'add', ns]);
    this.namespaces.push(ns);
    await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    await setSysctls(ns, { 'net.ipv6.conf.all.disable_ipv6': 1, 'net.ipv6.conf.default.disable_ipv6': 1 });
    // br_netfilter may be on: bridged frames must not walk the IP hooks (our NAT rules are for routed traffic).
    await setSysctls(ns, { 'net.bridge.bridge-nf-call-iptables': 0, 'net.bridge.bridge-nf-call-arptables': 0 }, true);
  }

  private checkName(name: string): void {
    this.assertOpen();
    if (!NAME_RE.test(name)) throw new RigError('invalid_name', `rig member names must match ${NAME_RE} (got ${JSON.stringify(name)})`);
    if (this.hosts.has(name) || this.nats.has(name) || name === 'inet' || name === 'internet') {
      throw new RigError('duplicate', `rig ${this.id} already has a member named ${name}`);
    }
  }

  /** Plugs a new veth into the internet bridge; `iface` is its name inside `ns`. */
  private async attachToInternet(ns: string, iface: string, ip: string): Promise<Link> {
    const port = `p${this.nextPort++}`;
    await run('ip', ['link', 'add', 'name', iface, 'netns', ns, 'type', 'veth', 'peer', 'name', port, 'netns', this.internet.ns]);
    await run('ip', ['-n', this.internet.ns, 'link', 'set', port, 'master', 'inet', 'up']);
    await run('ip', ['-n', ns, 'addr', 'add', `${ip}/32`, 'dev', iface]);
    await run('ip', ['-n', ns, 'link', 'set', iface, 'up']);
    await run('ip', ['-n', ns, 'route', 'add', 'default', 'dev', iface]); // on-link: ARP for everyone on the segment
    return { ns, iface, peerNs: this.internet.ns, peerIface: port };
  }

  private usedPublicIp(ip: string): void {
    assertUnicast(ip);
    for (const h of this.hosts.values()) if (!h.nat && h.ip === ip) throw new RigError('duplicate', `public address ${ip} already in use`);
    for (const n of this.nats.values()) if (n.publicIp === ip) throw new RigError('duplicate', `public address ${ip} already in use`);
  }

  /** A host directly on the internet with a public address (registry, beacon, STUN server, public peer). */
  async addPublicHost(name: string, ip: string): Promise<Host> {
    this.checkName(name);
    this.usedPublicIp(ip);
    const ns = `${this.id}-${name}`;
    await this.addNamespace(ns);
    const link = await this.attachToInternet(ns, 'eth0', ip);
    const host = new Host(this, name, ns, link, ip, undefined);
    this.hosts.set(name, host);
    return host;
  }

  /** A NAT router with its WAN address on the internet and an empty LAN (add hosts with addPrivateHost). */
  async addNat(name: string, opts: NatOptions): Promise<Nat> {
    this.checkName(name);
    this.usedPublicIp(opts.publicIp);
    if (!NAT_TYPES.includes(opts.type)) throw new RigError('invalid_name', `unknown NAT type ${JSON.stringify(opts.type)}`);
    const cidr = parseCidr(opts.lan);
    const timeoutSec = opts.udpTimeoutSec ?? 30;
    const ns = `${this.id}-${name}`;
    await this.addNamespace(ns);
    const link = await this.attachToInternet(ns, 'wan', opts.publicIp);
    const gateway = nthHost(cidr, 1);
    await run('ip', ['-n', ns, 'link', 'add', 'name', 'lan', 'type', 'bridge']);
    await run('ip', ['-n', ns, 'addr', 'add', `${gateway}/${cidr.prefix}`, 'dev', 'lan']);
    await run('ip', ['-n', ns, 'link', 'set', 'lan', 'up']);
    await setSysctls(ns, {
      'net.ipv4.ip_forward': 1,
      // Answer ARP on the WAN only for the WAN address: the LAN must not be reachable from outside.
      'net.ipv4.conf.all.arp_ignore': 1,
      'net.netfilter.nf_conntrack_udp_timeout': timeoutSec,
      'net.netfilter.nf_conntrack_udp_timeout_stream': timeoutSec,
    });
    const nat = new Nat(this, name, ns, link, opts.publicIp, formatCidr(cidr), gateway, opts.type, timeoutSec, cidr);
    this.nats.set(name, nat);
    await nat.applyRules();
    return nat;
  }

  /** A host on a NAT's LAN with the next free private address (or `opts.ip`), default route via the NAT. */
  async addPrivateHost(name: string, nat: string | Nat, opts: { ip?: string } = {}): Promise<Host> {
    this.checkName(name);
    const router = typeof nat === 'string' ? this.nat(nat) : nat;
    const { ip, prefix, index } = router.allocateAddress();
    const addr = opts.ip ?? ip;
    const ns = `${this.id}-${name}`;
    await this.addNamespace(ns);
    const port = `h${index}`;
    await run('ip', ['link', 'add', 'name', 'eth0', 'netns', ns, 'type', 'veth', 'peer', 'name', port, 'netns', router.ns]);
    await run('ip', ['-n', router.ns, 'link', 'set', port, 'master', 'lan', 'up']);
    await run('ip', ['-n', ns, 'addr', 'add', `${addr}/${prefix}`, 'dev', 'eth0']);
    await run('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
    await run('ip', ['-n', ns, 'route', 'add', 'default', 'via', router.gateway]);
    const host = new Host(this, name, ns, { ns, iface: 'eth0', peerNs: router.ns, peerIface: port }, addr, router);
    this.hosts.set(name, host);
    return host;
  }

  host(name: string): Host {
    const h = this.hosts.get(name);
    if (!h) throw new RigError('unknown', `rig ${this.id} has no host ${name}`);
    return h;
  }

  nat(name: string): Nat {
    const n = this.nats.get(name);
    if (!n) throw new RigError('unknown', `rig ${this.id} has no NAT ${name}`);
    return n;
  }

  /** Every namespace this rig created, in creation order. */
  namespaceNames(): string[] {
    return [...this.namespaces];
  }

  /** @internal */
  async applyImpairment(link: Link, imp: Impairment): Promise<void> {
    this.assertOpen();
    const support = await impairmentSupport();
    const dir = imp.direction ?? 'both';
    const wantsNetem = (imp.delayMs ?? 0) > 0 || (imp.jitterMs ?? 0) > 0;
    if (wantsNetem && !support.netem) {
      throw new RigError('unsupported', 'delay/jitter need the sch_netem qdisc, which this kernel lacks (CONFIG_NET_SCH_NETEM)');
    }
    await this.clearImpairment(link);
    const ends = [
      ...(dir !== 'in' ? [{ ns: link.ns, iface: link.iface }] : []),
      ...(dir !== 'out' ? [{ ns: link.peerNs, iface: link.peerIface }] : []),
    ];
    if (support.netem) {
      const args: string[] = [];
      if (imp.delayMs) args.push('delay', `${imp.delayMs}ms`, ...(imp.jitterMs ? [`${imp.jitterMs}ms`] : []));
      if (imp.lossPct) args.push('loss', `${imp.lossPct}%`);
      if (imp.rateKbit) args.push('rate', `${imp.rateKbit}kbit`);
      if (!args.length) return;
      for (const e of ends) {
        await run('tc', ['-n', e.ns, 'qdisc', 'replace', 'dev', e.iface, 'root', 'netem', ...args]);
        this.impaired.add(`${e.ns}/${e.iface}`);
      }
      return;
    }
    if (imp.rateKbit) {
      if (!support.tbf) throw new RigError('unsupported', 'rate limiting needs sch_netem or sch_tbf');
      const burst = Math.max(32, Math.ceil(imp.rateKbit / 100)); // ≥ 10 ms worth, enough for MTU frames
      for (const e of ends) {
        await run('tc', ['-n', e.ns, 'qdisc', 'replace', 'dev', e.iface, 'root', 'tbf', 'rate', `${imp.rateKbit}kbit`, 'burst', `${burst}kbit`, 'latency', '200ms']);
        this.impaired.add(`${e.ns}/${e.iface}`);
      }
    }
    if (imp.lossPct) {
      if (!support.nftLoss) throw new RigError('unsupported', 'packet loss needs sch_netem or nftables numgen');
      // Both directions are done in the namespace itself (ingress + postrouting hooks on its interface).
      await inNs(link.ns, 'nft', ['-f', '-'], { input: impairNft(link.iface, imp.lossPct, dir) });
      this.impaired.add(`${link.ns}/${link.iface}`);
    }
  }

  /** @internal */
  async clearImpairment(link: Link): Promise<void> {
    for (const e of [{ ns: link.ns, iface: link.iface }, { ns: link.peerNs, iface: link.peerIface }]) {
      if (!this.impaired.delete(`${e.ns}/${e.iface}`)) continue;
      await run('tc', ['-n', e.ns, 'qdisc', 'del', 'dev', e.iface, 'root']).catch(() => {});
      await inNs(e.ns, 'nft', ['-f', '-'], {
        input: `table ip ${IMPAIR_TABLE}\ndelete table ip ${IMPAIR_TABLE}\ntable netdev ${IMPAIR_TABLE}\ndelete table netdev ${IMPAIR_TABLE}\n`,
      }).catch(() => {});
    }
  }

  /** Kills every process started in the rig, then deletes all its namespaces (and so every link). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.children].map((c) => killChild(c, 1000)));
    for (const ns of [...this.namespaces].reverse()) {
      await run('ip', ['netns', 'del', ns]).catch(() => {});
    }
    this.namespaces.length = 0;
    this.forget();
  }

  /** @internal Synchronous last-resort cleanup for process exit / signals. */
  closeSync(): void {
    this.closed = true;
    for (const c of this.children) {
      try {
        c.kill('SIGKILL');
      } catch {
        /* gone */
      }
    }
    for (const ns of [...this.namespaces].reverse()) {
      try {
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      } catch {
        /* already gone */
      }
    }
    this.namespaces.length = 0;
    this.forget();
  }

  private forget(): void {
    if (liveRigs.delete(this) && liveRigs.size === 0) uninstallHooks();
  }
}
