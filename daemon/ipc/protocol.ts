/**
 * The IPC wire contract between pilot-daemon and its clients (SDK, pilotctl). SPEC §8, wire reference §1.13.
 * This file is the *public* contract: `ctl/` imports only this module (and it imports nothing from the
 * daemon's internals), so the SDK and the daemon cannot drift apart.
 *
 * ## Framing
 * Unix stream socket, mode 0600. Every message is `length u32 BE ‖ command u8 ‖ payload`; `length` counts
 * command + payload, is ≥ 1 and ≤ {@link IPC_MAX_MESSAGE} (1 MiB). A bigger or empty frame is a protocol
 * violation: the peer drops the client ({@link IpcFrameDecoder} raises a typed {@link IpcError}).
 *
 * ## v1 commands 0x01–0x1E
 * Byte-compatible with v1 (layouts in {@link IpcCmd}), so Go SDK programs work against our daemon. v1 has
 * no request IDs: replies match requests by expected reply command in FIFO order, `Send`/`SendTo` have no
 * success reply, a `Dial` blocks that client's other v1 commands. We keep those semantics for v1 commands.
 *
 * ## Extensions 0x20–0x23 (this project)
 * - `0x20 Request  [request id u32 BE][msgpack map {op, ...args}]`           client → daemon
 * - `0x21 Response [request id u32 BE][msgpack map {ok:true, ...result} | {ok:false, code, message, hint?}]`
 * - `0x22 Event    [msgpack map {event, ...fields}]`                          daemon → client
 * - `0x23 Data     [conn u32 BE][bytes]`                                      both ways, after `hello {data_frames:true}`
 * msgpack is encoded with msgpackr `useRecords: false` (plain maps; binary fields are msgpack `bin`).
 *
 * ### Data frames
 * Stream bytes are the bulk of IPC traffic, so a client that says `data_frames: true` in `hello` (and gets
 * `data_frames: true` back) moves them as bare `0x23 Data` frames instead of msgpack: no encoding, and both
 * ends write the header and the payload buffers with one gathered write and read payloads as slices of
 * the socket's read buffers, without copying. A daemon→client Data frame is exactly a `data` event (same
 * receive-credit rules). A client→daemon Data frame is a `send` without a request id: it counts against
 * the send window, and the daemon acknowledges accepted bytes with `{event:"sent", conn, bytes}` (the
 * Response of a `send`); a Data frame that cannot be applied (unknown or closed connection, window
 * exceeded) is answered with `{event:"error", op:"data", conn, code, message}`, never dropped silently.
 *
 * ### No head-of-line blocking
 * - **Request IDs.** The client picks a fresh non-zero id per request; the daemon answers every request
 *   with exactly one Response carrying that id, in *any* order. A dial that waits 30 s for a SYN-ACK does
 *   not delay an `info` sent after it. Id 0 is a *notification*: no Response is sent; if it fails the daemon
 *   emits `{event:"error", op, code, message, conn?}` instead (used for `credit`).
 * - **Receive credit (daemon → client data).** Each connection has a receive credit in bytes, initially
 *   `recv_credit` from `dial`/`listen` (accepted connections inherit their listener's), default
 *   {@link IPC_DEFAULT_RECV_CREDIT}. The daemon emits `{event:"data", conn, data}` only while credit
 *   remains, each event ≤ min(credit, {@link IPC_MAX_DATA_CHUNK}) bytes, and subtracts what it sent. At 0 it
 *   stops reading that connection's stream, so the transport window closes and only *that* remote sender
 *   is back-pressured. The client grants more with `credit {conn, bytes}` (usually a notification) once
 *   its consumer has taken bytes; outstanding credit may not exceed {@link IPC_MAX_RECV_CREDIT}.
 *   `{event:"eof", conn}` follows the last data byte (remote FIN); `{event:"closed", conn, code?, reason?}`
 *   is the last event for a connection (RST, timeout, revoked trust, or after a local close).
 * - **Send window (client → daemon data).** `send {conn, data}` carries ≤ {@link IPC_MAX_DATA_CHUNK}
 *   bytes and is answered `{ok:true, accepted}` once the daemon handed the bytes to the connection's send
 *   buffer (the stream accepted them without exceeding its high-water mark). A client keeps at most
 *   `send_window` (from `hello`, default {@link IPC_DEFAULT_SEND_WINDOW}) unanswered bytes per connection
 *   and waits for replies beyond that: a stalled remote blocks only writes on its own connection. The
 *   daemon rejects sends beyond the window with `send_window_exceeded` (its memory stays bounded).
 *   Sends on one connection are applied in request order. `end {conn}` half-closes after queued sends;
 *   `close {conn}` closes (or aborts with `abort:true`).
 * - **Datagrams** are delivered as `{event:"datagram", port, src_addr, src_port, data}` only to the
 *   client that bound `port` with `datagram_bind` (v1 RecvFrom goes to every client); unreliable, so a
 *   client that does not read fast enough loses datagrams (counted), never stalls the daemon.
 * - A client whose socket stops draining (daemon-side write buffer above a hard cap) is disconnected.
 *
 * Addresses in the extension protocol are text (`N:NNNN.HHHH.LLLL`); node IDs are numbers.
 * The op catalogue {@link IpcOps} is an open interface: the daemon adds ops by declaration merging.
 */
import type { Writable } from 'node:stream';
import { Packr } from 'msgpackr';
import { Addr } from '../../transport/address.js';
import { PilotError } from '../../transport/errors.js';
import { ByteQueue } from './bytequeue.js';

// ---------------------------------------------------------------------------------------------------
// Constants

/** Largest message (command byte + payload) either side accepts (v1: 1 MiB). */
export const IPC_MAX_MESSAGE = 1 << 20;
/** Length prefix size. */
export const IPC_HEADER_LEN = 4;
/** Version of the extension protocol reported by `hello`. */
export const IPC_PROTOCOL_VERSION = 1;
/** Largest `data` in one `send` request or `data` event (keeps every message well under 1 MiB). */
export const IPC_MAX_DATA_CHUNK = 256 * 1024;
/** Receive credit a connection starts with unless `recv_credit` says otherwise. */
export const IPC_DEFAULT_RECV_CREDIT = 1024 * 1024;
/** Upper bound on outstanding receive credit per connection. */
export const IPC_MAX_RECV_CREDIT = 64 * 1024 * 1024;
/** Unanswered `send` bytes a client may have per connection unless `hello` says otherwise. */
export const IPC_DEFAULT_SEND_WINDOW = 1024 * 1024;

/** v1 command bytes (wire reference §1.13) and this project's extensions. */
export const IpcCmd = {
  Bind: 0x01, // C→D port(2)
  BindOK: 0x02, // D→C port(2)
  Dial: 0x03, // C→D addr(6) ‖ port(2)
  DialOK: 0x04, // D→C conn_id(4)
  Accept: 0x05, // D→C local port(2) ‖ conn_id(4) ‖ remote addr(6) ‖ remote port(2)  (DOC≠CODE: leading local port)
  Send: 0x06, // C→D conn_id(4) ‖ data   (no success reply)
  Recv: 0x07, // D→C conn_id(4) ‖ data
  Close: 0x08, // C→D conn_id(4)
  CloseOK: 0x09, // D→C conn_id(4)  (also unsolicited = remote closed)
  Error: 0x0a, // D→C code(2) ‖ UTF-8 message
  SendTo: 0x0b, // C→D dst addr(6) ‖ dst port(2) ‖ data
  RecvFrom: 0x0c, // D→C src addr(6) ‖ src port(2) ‖ dst port(2) ‖ data  (DOC≠CODE: dst port)
  Info: 0x0d, // C→D empty
  InfoOK: 0x0e, // D→C JSON
  Handshake: 0x0f, // C→D sub(1) ‖ …
  HandshakeOK: 0x10, // D→C JSON
  ResolveHostname: 0x11, // C→D hostname
  ResolveHostnameOK: 0x12, // D→C registry JSON
  SetHostname: 0x13, // C→D hostname ("" clears)
  SetHostnameOK: 0x14,
  SetVisibility: 0x15, // C→D 1 byte (1 = public)
  SetVisibilityOK: 0x16,
  Deregister: 0x17, // C→D empty
  DeregisterOK: 0x18,
  SetTags: 0x19, // C→D JSON array of strings
  SetTagsOK: 0x1a,
  SetWebhook: 0x1b, // C→D URL ("" clears)
  SetWebhookOK: 0x1c, // D→C {"webhook": url}
  SetTaskExec: 0x1d, // C→D 1 byte
  SetTaskExecOK: 0x1e,
  Request: 0x20,
  Response: 0x21,
  Event: 0x22,
  Data: 0x23,
} as const;
export type IpcCmdByte = (typeof IpcCmd)[keyof typeof IpcCmd];

/** Handshake (0x0F) sub-commands. */
export const HandshakeSub = { Send: 0x01, Approve: 0x02, Reject: 0x03, Pending: 0x04, Trusted: 0x05, Revoke: 0x06 } as const;

/** The only error code v1 daemons put in an Error message. */
export const IPC_V1_ERROR_CODE = 1;

// ---------------------------------------------------------------------------------------------------
// Errors

/**
 * Bad IPC bytes or values. Codes: `frame_too_large`, `empty_frame`, `decoder_failed`, `unknown_command`,
 * `bad_length`, `bad_utf8`, `bad_json`, `bad_msgpack`, `bad_envelope`, `bad_address`, `bad_value`,
 * `message_too_large`.
 */
export class IpcError extends PilotError {}

// ---------------------------------------------------------------------------------------------------
// Value types

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };
export type JsonObject = { [key: string]: JsonValue };

/** What an extension msgpack map may hold. */
export type IpcValue = null | boolean | number | string | Uint8Array | IpcValue[] | { [key: string]: IpcValue | undefined };
export type IpcMap = { [key: string]: IpcValue | undefined };

/** InfoOK JSON. v1 keys (all present from our daemon): node_id, address, hostname, uptime_secs, connections,
 * ports, peers, encrypted_peers, authenticated_peers, encrypt, identity, public_key, owner, bytes_sent,
 * bytes_recv, pkts_sent, pkts_recv, peer_list[], conn_list[]. Only node_id and address are checked on decode. */
export interface IpcInfo {
  node_id: number;
  address: string;
  [key: string]: JsonValue;
}

export interface HandshakePendingEntry {
  node_id: number;
  public_key: string;
  justification: string;
  /** unix seconds */
  received_at: number;
}
export interface HandshakeTrustedEntry {
  node_id: number;
  public_key: string;
  /** unix seconds */
  approved_at: number;
  mutual: boolean;
  network: number;
}
/** HandshakeOK JSON: one of three shapes (wire reference §1.13). */
export type HandshakeResult =
  | { status: 'sent' | 'approved' | 'rejected' | 'revoked'; node_id: number }
  | { pending: HandshakePendingEntry[] }
  | { trusted: HandshakeTrustedEntry[] };

export type HandshakeCommand =
  | { sub: 'send'; nodeId: number; justification: string }
  | { sub: 'approve'; nodeId: number }
  | { sub: 'reject'; nodeId: number; reason: string }
  | { sub: 'pending' }
  | { sub: 'trusted' }
  | { sub: 'revoke'; nodeId: number };

// ---------------------------------------------------------------------------------------------------
// Extension envelopes and op catalogue

/** Request envelope `{op, ...args}`. */
export type IpcRequestBody = { op: string } & IpcMap;
/** Response envelope. */
export type IpcResponseBody = IpcOkResponseBody | IpcErrorResponseBody;
export type IpcOkResponseBody = { ok: true } & IpcMap;
export interface IpcErrorResponseBody {
  ok: false;
  /** Stable machine-readable code, e.g. `timeout`, `refused`, `not_found`; see {@link IpcErrorCodes}. */
  code: string;
  message: string;
  hint?: string;
  [key: string]: IpcValue | undefined;
}
/** Event envelope `{event, ...fields}`. */
export type IpcEventBody = { event: string } & IpcMap;

/** Codes the daemon uses in error responses (open set; clients must handle unknown codes). */
export const IpcErrorCodes = {
  BadRequest: 'bad_request',
  UnknownOp: 'unknown_op',
  NotFound: 'not_found',
  AlreadyExists: 'already_exists',
  PortInUse: 'port_in_use',
  Refused: 'refused',
  Timeout: 'timeout',
  Unreachable: 'unreachable',
  ConnClosed: 'conn_closed',
  SendWindowExceeded: 'send_window_exceeded',
  BadCredit: 'bad_credit',
  NotAllowed: 'not_allowed',
  Unavailable: 'unavailable',
  Registry: 'registry_error',
  Internal: 'internal',
} as const;

export interface ConnOpened {
  conn: number;
  local_port: number;
  remote_addr: string;
  remote_port: number;
}
export interface PeerSummary {
  node_id: number;
  address: string;
  endpoint: string;
  encrypted: boolean;
  authenticated: boolean;
  relay: boolean;
  [key: string]: IpcValue | undefined;
}
export interface ConnSummary {
  id: number;
  local_port: number;
  remote_addr: string;
  remote_port: number;
  state: string;
  [key: string]: IpcValue | undefined;
}
export type HandshakeStatusResult = { status: 'sent' | 'approved' | 'rejected' | 'revoked'; node_id: number };
type Empty = { [key: string]: never };
type OpenArgs = IpcMap;

/**
 * Op catalogue: `args` is what follows `op` in the request, `result` what follows `ok:true` in the
 * response. Open for extension by declaration merging:
 * `declare module '.../daemon/ipc/protocol.js' { interface IpcOps { my_op: { args: …; result: … } } }`.
 */
export interface IpcOps {
  /** Version negotiation; optional (defaults apply without it). */
  hello: {
    args: { version: number; client?: string; send_window?: number; data_frames?: boolean };
    result: { version: number; daemon: string; max_message: number; max_data_chunk: number; send_window: number; recv_credit: number; data_frames: boolean };
  };
  /** Open a stream; answered when established (or failed). */
  dial: { args: { addr: string; port: number; timeout_ms?: number; recv_credit?: number }; result: ConnOpened };
  /** Bind a stream listener; connections arrive as `accept` events. */
  listen: { args: { port: number; backlog?: number; recv_credit?: number }; result: { port: number } };
  unlisten: { args: { port: number }; result: Empty };
  /** Queue bytes on a connection; answered when accepted into its send buffer. */
  send: { args: { conn: number; data: Uint8Array }; result: { accepted: number } };
  /** Grant more receive credit (normally as a notification, request id 0). */
  credit: { args: { conn: number; bytes: number }; result: { credit: number } };
  /** Half-close after queued sends (FIN). */
  end: { args: { conn: number }; result: Empty };
  close: { args: { conn: number; abort?: boolean }; result: Empty };
  datagram_bind: { args: { port: number }; result: { port: number } };
  datagram_unbind: { args: { port: number }; result: Empty };
  datagram_send: { args: { addr: string; port: number; data: Uint8Array; src_port?: number }; result: Empty };
  info: { args: Empty; result: IpcMap };
  peers: { args: { search?: string }; result: { peers: PeerSummary[] } };
  connections: { args: Empty; result: { connections: ConnSummary[] } };
  /** Administrative close of any connection (pilotctl disconnect). */
  disconnect: { args: { id: number }; result: Empty };
  handshake_send: { args: { node: number; justification?: string }; result: HandshakeStatusResult };
  handshake_approve: { args: { node: number }; result: HandshakeStatusResult };
  handshake_reject: { args: { node: number; reason?: string }; result: HandshakeStatusResult };
  handshake_revoke: { args: { node: number }; result: HandshakeStatusResult };
  handshake_pending: { args: Empty; result: { pending: { [key: string]: IpcValue }[] } };
  handshake_trusted: { args: Empty; result: { trusted: { [key: string]: IpcValue }[] } };
  network_list: { args: OpenArgs; result: IpcMap };
  network_create: { args: OpenArgs; result: IpcMap };
  network_join: { args: OpenArgs; result: IpcMap };
  network_leave: { args: OpenArgs; result: IpcMap };
  network_members: { args: OpenArgs; result: IpcMap };
  stats: { args: Empty; result: IpcMap };
  /** Registry passthroughs (v1 0x11–0x1E as extension ops); results are the registry's reply minus `type`. */
  resolve_hostname: { args: { hostname: string }; result: IpcMap };
  set_hostname: { args: { hostname: string }; result: IpcMap };
  set_visibility: { args: { public: boolean }; result: IpcMap };
  set_tags: { args: { tags: string[] }; result: IpcMap };
  set_task_exec: { args: { enabled: boolean }; result: IpcMap };
  deregister: { args: Empty; result: IpcMap };
  set_webhook: { args: { url: string }; result: { webhook: string } };
  /** Control-protocol ping through the tunnel (`addr`: address, node ID or hostname). */
  ping: { args: { addr: string; size?: number }; result: { rtt_ms: number } };
  /** Address / node ID / hostname → address. */
  resolve: { args: { addr: string }; result: { address: string; node_id: number } };
  network_policy: { args: OpenArgs; result: IpcMap };
}
export type IpcOpName = keyof IpcOps;
export type IpcRequestOf<K extends IpcOpName> = { op: K } & IpcOps[K]['args'];
export type IpcResultOf<K extends IpcOpName> = { ok: true } & IpcOps[K]['result'];

/** Event catalogue, open for extension like {@link IpcOps}. */
export interface IpcEvents {
  accept: { port: number; conn: number; remote_addr: string; remote_port: number };
  data: { conn: number; data: Uint8Array };
  /** Bytes of client Data frames the connection accepted (releases send window). */
  sent: { conn: number; bytes: number };
  eof: { conn: number };
  closed: { conn: number; code?: string; reason?: string };
  datagram: { port: number; src_addr: string; src_port: number; data: Uint8Array };
  /** Trust changes (handshake received/approved/rejected, revoked by peer). */
  trust: { kind: string; node: number; justification?: string; reason?: string };
  /** Failure of a notification (request id 0). */
  error: { op: string; code: string; message: string; conn?: number };
}
export type IpcEventName = keyof IpcEvents;
export type IpcEventOf<K extends IpcEventName> = { event: K } & IpcEvents[K];

// ---------------------------------------------------------------------------------------------------
// Message union

export type IpcMessage =
  | { type: 'bind'; port: number }
  | { type: 'bind_ok'; port: number }
  | { type: 'dial'; addr: Addr; port: number }
  | { type: 'dial_ok'; connId: number }
  | { type: 'accept'; localPort: number; connId: number; remoteAddr: Addr; remotePort: number }
  | { type: 'send'; connId: number; data: Buffer }
  | { type: 'recv'; connId: number; data: Buffer }
  | { type: 'close'; connId: number }
  | { type: 'close_ok'; connId: number }
  | { type: 'error'; code: number; message: string }
  | { type: 'send_to'; addr: Addr; port: number; data: Buffer }
  | { type: 'recv_from'; srcAddr: Addr; srcPort: number; dstPort: number; data: Buffer }
  | { type: 'info' }
  | { type: 'info_ok'; info: IpcInfo }
  | { type: 'handshake'; command: HandshakeCommand }
  | { type: 'handshake_ok'; result: HandshakeResult }
  | { type: 'resolve_hostname'; hostname: string }
  | { type: 'resolve_hostname_ok'; result: JsonObject }
  | { type: 'set_hostname'; hostname: string }
  | { type: 'set_hostname_ok'; result: JsonObject }
  | { type: 'set_visibility'; public: boolean }
  | { type: 'set_visibility_ok'; result: JsonObject }
  | { type: 'deregister' }
  | { type: 'deregister_ok'; result: JsonObject }
  | { type: 'set_tags'; tags: string[] }
  | { type: 'set_tags_ok'; result: JsonObject }
  | { type: 'set_webhook'; url: string }
  | { type: 'set_webhook_ok'; result: JsonObject }
  | { type: 'set_task_exec'; enabled: boolean }
  | { type: 'set_task_exec_ok'; result: JsonObject }
  | { type: 'request'; id: number; body: IpcRequestBody }
  | { type: 'response'; id: number; body: IpcResponseBody }
  | { type: 'event'; body: IpcEventBody }
  | { type: 'data'; connId: number; data: Buffer };
export type IpcMessageType = IpcMessage['type'];

const JSON_REPLY_TYPES = {
  resolve_hostname_ok: IpcCmd.ResolveHostnameOK,
  set_hostname_ok: IpcCmd.SetHostnameOK,
  set_visibility_ok: IpcCmd.SetVisibilityOK,
  deregister_ok: IpcCmd.DeregisterOK,
  set_tags_ok: IpcCmd.SetTagsOK,
  set_webhook_ok: IpcCmd.SetWebhookOK,
  set_task_exec_ok: IpcCmd.SetTaskExecOK,
} as const;

// ---------------------------------------------------------------------------------------------------
// Encoding

const packr = new Packr({ useRecords: false, moreTypes: false });
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Encode a message as it goes on the socket: length prefix ‖ command ‖ payload. */
export function encodeIpcMessage(m: IpcMessage): Buffer {
  const [cmd, parts] = bodyParts(m);
  let len = 1;
  for (const p of parts) len += p.length;
  if (len > IPC_MAX_MESSAGE) throw new IpcError('message_too_large', `IPC message of ${len} bytes exceeds ${IPC_MAX_MESSAGE}`);
  const out = Buffer.allocUnsafe(IPC_HEADER_LEN + len);
  out.writeUInt32BE(len, 0);
  out[4] = cmd;
  let off = 5;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Length prefix, command and conn of a Data frame carrying `length` bytes; the payload is written after it
 * as is (no copy). */
export function dataFrameHeader(conn: number, length: number): Buffer {
  if (length > IPC_MAX_DATA_CHUNK) throw new IpcError('message_too_large', `Data frame of ${length} bytes exceeds ${IPC_MAX_DATA_CHUNK}`);
  const h = Buffer.allocUnsafe(IPC_HEADER_LEN + 5);
  h.writeUInt32BE(5 + length, 0);
  h[4] = IpcCmd.Data;
  h.writeUInt32BE(conn >>> 0, 5);
  return h;
}

/** Write one Data frame: header and payload slices in one gathered (corked) write, no copy. */
export function writeDataFrame(sock: Pick<Writable, 'cork' | 'uncork' | 'write'>, conn: number, pieces: readonly Buffer[], length: number): void {
  sock.cork();
  sock.write(dataFrameHeader(conn, length));
  for (const p of pieces) sock.write(p);
  sock.uncork();
}

/** Encode without the length prefix (command ‖ payload), the unit {@link decodeIpcMessage} takes. */
export function encodeIpcBody(m: IpcMessage): Buffer {
  return encodeIpcMessage(m).subarray(IPC_HEADER_LEN);
}

function bodyParts(m: IpcMessage): [number, Uint8Array[]] {
  switch (m.type) {
    case 'bind':
      return [IpcCmd.Bind, [u16(m.port, 'port')]];
    case 'bind_ok':
      return [IpcCmd.BindOK, [u16(m.port, 'port')]];
    case 'dial':
      return [IpcCmd.Dial, [m.addr.toBytes(), u16(m.port, 'port')]];
    case 'dial_ok':
      return [IpcCmd.DialOK, [u32(m.connId, 'conn_id')]];
    case 'accept':
      return [IpcCmd.Accept, [u16(m.localPort, 'local port'), u32(m.connId, 'conn_id'), m.remoteAddr.toBytes(), u16(m.remotePort, 'remote port')]];
    case 'send':
      return [IpcCmd.Send, [u32(m.connId, 'conn_id'), m.data]];
    case 'recv':
      return [IpcCmd.Recv, [u32(m.connId, 'conn_id'), m.data]];
    case 'close':
      return [IpcCmd.Close, [u32(m.connId, 'conn_id')]];
    case 'close_ok':
      return [IpcCmd.CloseOK, [u32(m.connId, 'conn_id')]];
    case 'error':
      return [IpcCmd.Error, [u16(m.code, 'error code'), Buffer.from(m.message, 'utf8')]];
    case 'send_to':
      return [IpcCmd.SendTo, [m.addr.toBytes(), u16(m.port, 'port'), m.data]];
    case 'recv_from':
      return [IpcCmd.RecvFrom, [m.srcAddr.toBytes(), u16(m.srcPort, 'src port'), u16(m.dstPort, 'dst port'), m.data]];
    case 'info':
      return [IpcCmd.Info, []];
    case 'info_ok':
      return [IpcCmd.InfoOK, [json(m.info)]];
    case 'handshake':
      return [IpcCmd.Handshake, handshakeParts(m.command)];
    case 'handshake_ok':
      return [IpcCmd.HandshakeOK, [json(m.result)]];
    case 'resolve_hostname':
      return [IpcCmd.ResolveHostname, [Buffer.from(m.hostname, 'utf8')]];
    case 'set_hostname':
      return [IpcCmd.SetHostname, [Buffer.from(m.hostname, 'utf8')]];
    case 'set_visibility':
      return [IpcCmd.SetVisibility, [Buffer.of(m.public ? 1 : 0)]];
    case 'deregister':
      return [IpcCmd.Deregister, []];
    case 'set_tags':
      return [IpcCmd.SetTags, [json(m.tags)]];
    case 'set_webhook':
      return [IpcCmd.SetWebhook, [Buffer.from(m.url, 'utf8')]];
    case 'set_task_exec':
      return [IpcCmd.SetTaskExec, [Buffer.of(m.enabled ? 1 : 0)]];
    case 'resolve_hostname_ok':
    case 'set_hostname_ok':
    case 'set_visibility_ok':
    case 'deregister_ok':
    case 'set_tags_ok':
    case 'set_webhook_ok':
    case 'set_task_exec_ok':
      return [JSON_REPLY_TYPES[m.type], [json(m.result)]];
    case 'request':
      if (typeof m.body?.op !== 'string' || m.body.op === '') throw new IpcError('bad_envelope', 'request needs a non-empty op');
      return [IpcCmd.Request, [u32(m.id, 'request id'), pack(m.body)]];
    case 'response':
      if (typeof m.body?.ok !== 'boolean') throw new IpcError('bad_envelope', 'response needs ok');
      return [IpcCmd.Response, [u32(m.id, 'request id'), pack(m.body)]];
    case 'event':
      if (typeof m.body?.event !== 'string' || m.body.event === '') throw new IpcError('bad_envelope', 'event needs a non-empty event name');
      return [IpcCmd.Event, [pack(m.body)]];
    case 'data':
      return [IpcCmd.Data, [u32(m.connId, 'conn_id'), m.data]];
    default: {
      const never: never = m;
      throw new IpcError('bad_value', `unknown IPC message type ${(never as { type: string }).type}`);
    }
  }
}

function handshakeParts(c: HandshakeCommand): Uint8Array[] {
  switch (c.sub) {
    case 'send':
      return [Buffer.of(HandshakeSub.Send), u32(c.nodeId, 'node id'), Buffer.from(c.justification, 'utf8')];
    case 'approve':
      return [Buffer.of(HandshakeSub.Approve), u32(c.nodeId, 'node id')];
    case 'reject':
      return [Buffer.of(HandshakeSub.Reject), u32(c.nodeId, 'node id'), Buffer.from(c.reason, 'utf8')];
    case 'pending':
      return [Buffer.of(HandshakeSub.Pending)];
    case 'trusted':
      return [Buffer.of(HandshakeSub.Trusted)];
    case 'revoke':
      return [Buffer.of(HandshakeSub.Revoke), u32(c.nodeId, 'node id')];
    default: {
      const never: never = c;
      throw new IpcError('bad_value', `unknown handshake sub-command ${(never as { sub: string }).sub}`);
    }
  }
}

function u16(v: number, what: string): Buffer {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new IpcError('bad_value', `${what} out of range: ${v}`);
  const b = Buffer.allocUnsafe(2);
  b.writeUInt16BE(v, 0);
  return b;
}

function u32(v: number, what: string): Buffer {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new IpcError('bad_value', `${what} out of range: ${v}`);
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(v, 0);
  return b;
}

function json(v: unknown): Buffer {
  return Buffer.from(JSON.stringify(v), 'utf8');
}

function pack(v: IpcMap): Buffer {
  try {
    return packr.pack(v);
  } catch (err) {
    throw new IpcError('bad_value', `cannot msgpack-encode IPC map: ${(err as Error).message}`, { cause: err });
  }
}

// ---------------------------------------------------------------------------------------------------
// Decoding

/**
 * Decode one message body (command ‖ payload) as yielded by {@link IpcFrameDecoder}. Throws only
 * {@link IpcError}.
 */
export function decodeIpcMessage(frame: Uint8Array): IpcMessage {
  if (frame.length === 0) throw new IpcError('empty_frame', 'IPC message has no command byte');
  if (frame.length > IPC_MAX_MESSAGE) throw new IpcError('frame_too_large', `IPC message of ${frame.length} bytes exceeds ${IPC_MAX_MESSAGE}`);
  const buf = Buffer.isBuffer(frame) ? frame : Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength);
  const cmd = buf[0]!;
  const p = buf.subarray(1);
  switch (cmd) {
    case IpcCmd.Bind:
      exact(p, 2, 'Bind');
      return { type: 'bind', port: p.readUInt16BE(0) };
    case IpcCmd.BindOK:
      exact(p, 2, 'BindOK');
      return { type: 'bind_ok', port: p.readUInt16BE(0) };
    case IpcCmd.Dial:
      exact(p, 8, 'Dial');
      return { type: 'dial', addr: addr(p, 0), port: p.readUInt16BE(6) };
    case IpcCmd.DialOK:
      exact(p, 4, 'DialOK');
      return { type: 'dial_ok', connId: p.readUInt32BE(0) };
    case IpcCmd.Accept:
      exact(p, 14, 'Accept');
      return { type: 'accept', localPort: p.readUInt16BE(0), connId: p.readUInt32BE(2), remoteAddr: addr(p, 6), remotePort: p.readUInt16BE(12) };
    case IpcCmd.Send:
      atLeast(p, 4, 'Send');
      return { type: 'send', connId: p.readUInt32BE(0), data: p.subarray(4) };
    case IpcCmd.Recv:
      atLeast(p, 4, 'Recv');
      return { type: 'recv', connId: p.readUInt32BE(0), data: p.subarray(4) };
    case IpcCmd.Close:
      exact(p, 4, 'Close');
      return { type: 'close', connId: p.readUInt32BE(0) };
    case IpcCmd.CloseOK:
      exact(p, 4, 'CloseOK');
      return { type: 'close_ok', connId: p.readUInt32BE(0) };
    case IpcCmd.Error:
      atLeast(p, 2, 'Error');
      return { type: 'error', code: p.readUInt16BE(0), message: text(p.subarray(2), 'Error message') };
    case IpcCmd.SendTo:
      atLeast(p, 8, 'SendTo');
      return { type: 'send_to', addr: addr(p, 0), port: p.readUInt16BE(6), data: p.subarray(8) };
    case IpcCmd.RecvFrom:
      atLeast(p, 10, 'RecvFrom');
      return { type: 'recv_from', srcAddr: addr(p, 0), srcPort: p.readUInt16BE(6), dstPort: p.readUInt16BE(8), data: p.subarray(10) };
    case IpcCmd.Info:
      exact(p, 0, 'Info');
      return { type: 'info' };
    case IpcCmd.InfoOK:
      return { type: 'info_ok', info: infoJson(p) };
    case IpcCmd.Handshake:
      return { type: 'handshake', command: handshakeCommand(p) };
    case IpcCmd.HandshakeOK:
      return { type: 'handshake_ok', result: handshakeResult(p) };
    case IpcCmd.ResolveHostname:
      return { type: 'resolve_hostname', hostname: text(p, 'hostname') };
    case IpcCmd.ResolveHostnameOK:
      return { type: 'resolve_hostname_ok', result: objectJson(p, 'ResolveHostnameOK') };
    case IpcCmd.SetHostname:
      return { type: 'set_hostname', hostname: text(p, 'hostname') };
    case IpcCmd.SetHostnameOK:
      return { type: 'set_hostname_ok', result: objectJson(p, 'SetHostnameOK') };
    case IpcCmd.SetVisibility:
      exact(p, 1, 'SetVisibility');
      return { type: 'set_visibility', public: p[0] === 1 };
    case IpcCmd.SetVisibilityOK:
      return { type: 'set_visibility_ok', result: objectJson(p, 'SetVisibilityOK') };
    case IpcCmd.Deregister:
      exact(p, 0, 'Deregister');
      return { type: 'deregister' };
    case IpcCmd.DeregisterOK:
      return { type: 'deregister_ok', result: objectJson(p, 'DeregisterOK') };
    case IpcCmd.SetTags:
      return { type: 'set_tags', tags: tagsJson(p) };
    case IpcCmd.SetTagsOK:
      return { type: 'set_tags_ok', result: objectJson(p, 'SetTagsOK') };
    case IpcCmd.SetWebhook:
      return { type: 'set_webhook', url: text(p, 'webhook URL') };
    case IpcCmd.SetWebhookOK:
      return { type: 'set_webhook_ok', result: objectJson(p, 'SetWebhookOK') };
    case IpcCmd.SetTaskExec:
      exact(p, 1, 'SetTaskExec');
      return { type: 'set_task_exec', enabled: p[0] === 1 };
    case IpcCmd.SetTaskExecOK:
      return { type: 'set_task_exec_ok', result: objectJson(p, 'SetTaskExecOK') };
    case IpcCmd.Request: {
      atLeast(p, 5, 'Request');
      const body = unpackMap(p.subarray(4), 'Request');
      if (typeof body.op !== 'string' || body.op === '') throw new IpcError('bad_envelope', 'request map needs a non-empty string op');
      return { type: 'request', id: p.readUInt32BE(0), body: body as IpcRequestBody };
    }
    case IpcCmd.Response: {
      atLeast(p, 5, 'Response');
      const body = unpackMap(p.subarray(4), 'Response');
      if (body.ok === true) return { type: 'response', id: p.readUInt32BE(0), body: body as IpcOkResponseBody };
      if (body.ok !== false) throw new IpcError('bad_envelope', 'response map needs boolean ok');
      if (typeof body.code !== 'string' || typeof body.message !== 'string') throw new IpcError('bad_envelope', 'error response needs string code and message');
      if (body.hint !== undefined && typeof body.hint !== 'string') throw new IpcError('bad_envelope', 'error response hint must be a string');
      return { type: 'response', id: p.readUInt32BE(0), body: body as IpcErrorResponseBody };
    }
    case IpcCmd.Event: {
      atLeast(p, 1, 'Event');
      const body = unpackMap(p, 'Event');
      if (typeof body.event !== 'string' || body.event === '') throw new IpcError('bad_envelope', 'event map needs a non-empty string event');
      return { type: 'event', body: body as IpcEventBody };
    }
    case IpcCmd.Data:
      atLeast(p, 4, 'Data');
      return { type: 'data', connId: p.readUInt32BE(0), data: p.subarray(4) };
    default:
      throw new IpcError('unknown_command', `unknown command: 0x${cmd.toString(16).padStart(2, '0')}`);
  }
}

function exact(p: Buffer, n: number, what: string): void {
  if (p.length !== n) throw new IpcError('bad_length', `${what} payload must be ${n} bytes, got ${p.length}`);
}

function atLeast(p: Buffer, n: number, what: string): void {
  if (p.length < n) throw new IpcError('bad_length', `${what} payload needs at least ${n} bytes, got ${p.length}`);
}

function addr(p: Buffer, off: number): Addr {
  try {
    return Addr.read(p, off);
  } catch (err) {
    throw new IpcError('bad_address', (err as Error).message, { cause: err });
  }
}

function text(p: Buffer, what: string): string {
  try {
    return utf8.decode(p);
  } catch (err) {
    throw new IpcError('bad_utf8', `${what} is not valid UTF-8`, { cause: err });
  }
}

function parseJson(p: Buffer, what: string): unknown {
  const s = text(p, what);
  try {
    return JSON.parse(s) as unknown;
  } catch (err) {
    throw new IpcError('bad_json', `${what} is not valid JSON`, { cause: err });
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v) as unknown;
  return proto === Object.prototype || proto === null;
}

function objectJson(p: Buffer, what: string): JsonObject {
  const v = parseJson(p, what);
  if (!isPlainObject(v)) throw new IpcError('bad_json', `${what} must be a JSON object`);
  return v as JsonObject;
}

function infoJson(p: Buffer): IpcInfo {
  const v = objectJson(p, 'InfoOK');
  if (typeof v.node_id !== 'number' || typeof v.address !== 'string') throw new IpcError('bad_json', 'InfoOK needs numeric node_id and string address');
  return v as IpcInfo;
}

function tagsJson(p: Buffer): string[] {
  const v = parseJson(p, 'SetTags');
  if (!Array.isArray(v) || !v.every((t) => typeof t === 'string')) throw new IpcError('bad_json', 'SetTags payload must be a JSON array of strings');
  return v as string[];
}

function handshakeCommand(p: Buffer): HandshakeCommand {
  atLeast(p, 1, 'Handshake');
  const sub = p[0]!;
  const rest = p.subarray(1);
  switch (sub) {
    case HandshakeSub.Send:
      atLeast(rest, 4, 'Handshake send');
      return { sub: 'send', nodeId: rest.readUInt32BE(0), justification: text(rest.subarray(4), 'justification') };
    case HandshakeSub.Approve:
      exact(rest, 4, 'Handshake approve');
      return { sub: 'approve', nodeId: rest.readUInt32BE(0) };
    case HandshakeSub.Reject:
      atLeast(rest, 4, 'Handshake reject');
      return { sub: 'reject', nodeId: rest.readUInt32BE(0), reason: text(rest.subarray(4), 'reason') };
    case HandshakeSub.Pending:
      exact(rest, 0, 'Handshake pending');
      return { sub: 'pending' };
    case HandshakeSub.Trusted:
      exact(rest, 0, 'Handshake trusted');
      return { sub: 'trusted' };
    case HandshakeSub.Revoke:
      exact(rest, 4, 'Handshake revoke');
      return { sub: 'revoke', nodeId: rest.readUInt32BE(0) };
    default:
      throw new IpcError('unknown_command', `unknown handshake sub-command: 0x${sub.toString(16).padStart(2, '0')}`);
  }
}

const HANDSHAKE_STATUSES = new Set(['sent', 'approved', 'rejected', 'revoked']);

function handshakeResult(p: Buffer): HandshakeResult {
  const v = objectJson(p, 'HandshakeOK');
  if (typeof v.status === 'string') {
    if (!HANDSHAKE_STATUSES.has(v.status) || typeof v.node_id !== 'number') throw new IpcError('bad_json', 'HandshakeOK status reply needs a known status and numeric node_id');
    return { status: v.status as HandshakeStatusResult['status'], node_id: v.node_id };
  }
  if (Array.isArray(v.pending)) {
    return {
      pending: v.pending.map((e) => {
        const o = entry(e, 'pending');
        return { node_id: o.node_id, public_key: str(o.public_key), justification: str(o.justification), received_at: num(o.received_at) };
      }),
    };
  }
  if (Array.isArray(v.trusted)) {
    return {
      trusted: v.trusted.map((e) => {
        const o = entry(e, 'trusted');
        return { node_id: o.node_id, public_key: str(o.public_key), approved_at: num(o.approved_at), mutual: o.mutual === true, network: num(o.network) };
      }),
    };
  }
  throw new IpcError('bad_json', 'HandshakeOK needs status, pending or trusted');
}

function entry(e: unknown, what: string): Record<string, unknown> & { node_id: number } {
  if (!isPlainObject(e) || typeof e.node_id !== 'number') throw new IpcError('bad_json', `HandshakeOK ${what} entry needs numeric node_id`);
  return e as Record<string, unknown> & { node_id: number };
}

function str(v: unknown): string {
  return typeof v === 'string' ? v : '';
}

function num(v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : 0;
}

function unpackMap(p: Buffer, what: string): IpcMap {
  let v: unknown;
  try {
    v = packr.unpack(p);
  } catch (err) {
    throw new IpcError('bad_msgpack', `${what} payload is not valid msgpack: ${(err as Error)?.message ?? String(err)}`, { cause: err });
  }
  if (!isPlainObject(v)) throw new IpcError('bad_envelope', `${what} payload must be a msgpack map`);
  return v as IpcMap;
}

// ---------------------------------------------------------------------------------------------------
// Streaming frame decoder

/** A Data frame's payload as slices of the received chunks (not copied into one buffer). */
export interface IpcDataFrame {
  conn: number;
  pieces: Buffer[];
  length: number;
}

/**
 * Splits a byte stream into IPC messages (command ‖ payload, without the length prefix). After a
 * violation (`frame_too_large`, `empty_frame`) it stays failed: the owner must drop the client.
 */
export class IpcFrameDecoder {
  private readonly queue = new ByteQueue();
  private failed: IpcError | null = null;

  constructor(private readonly maxMessage = IPC_MAX_MESSAGE) {}

  /** Bytes buffered but not yet returned as a frame. */
  get buffered(): number {
    return this.queue.length;
  }

  /** Feed a chunk; returns every frame completed by it (possibly none). Throws {@link IpcError}. */
  push(chunk: Uint8Array): Buffer[] {
    return this.frames(chunk, false) as Buffer[];
  }

  /** As {@link push}, but Data frames (0x23) come as {@link IpcDataFrame}s, in order with the others. */
  pushSplittingData(chunk: Uint8Array): Array<Buffer | IpcDataFrame> {
    return this.frames(chunk, true);
  }

  private frames(chunk: Uint8Array, splitData: boolean): Array<Buffer | IpcDataFrame> {
    if (this.failed) throw this.failed;
    this.queue.push(chunk);
    const out: Array<Buffer | IpcDataFrame> = [];
    while (this.queue.length >= IPC_HEADER_LEN) {
      const len = this.queue.readUInt32BE(0);
      if (len === 0) return this.fail(new IpcError('empty_frame', 'IPC frame of length 0'));
      if (len > this.maxMessage) return this.fail(new IpcError('frame_too_large', `IPC frame of ${len} bytes exceeds ${this.maxMessage}`));
      if (this.queue.length < IPC_HEADER_LEN + len) break;
      if (splitData && len >= 5 && this.queue.byteAt(IPC_HEADER_LEN) === IpcCmd.Data) {
        const conn = this.queue.readUInt32BE(IPC_HEADER_LEN + 1);
        this.queue.skip(IPC_HEADER_LEN + 5);
        out.push({ conn, pieces: this.queue.takeSlices(len - 5), length: len - 5 });
        continue;
      }
      this.queue.skip(IPC_HEADER_LEN);
      out.push(this.queue.take(len));
    }
    return out;
  }

  private fail(err: IpcError): never {
    this.failed = err;
    this.queue.clear();
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------------
// Envelope helpers (shared by SDK and daemon so both validate arguments the same way)

export function request<K extends IpcOpName>(id: number, op: K, args: IpcOps[K]['args']): IpcMessage {
  return { type: 'request', id, body: { ...(args as IpcMap), op } as IpcRequestBody };
}

export function okResponse(id: number, result: IpcMap = {}): IpcMessage {
  return { type: 'response', id, body: { ...result, ok: true } as IpcOkResponseBody };
}

export function errorResponse(id: number, code: string, message: string, hint?: string): IpcMessage {
  const body: IpcErrorResponseBody = { ok: false, code, message };
  if (hint !== undefined) body.hint = hint;
  return { type: 'response', id, body };
}

export function event<K extends IpcEventName>(name: K, fields: IpcEvents[K]): IpcMessage {
  return { type: 'event', body: { ...(fields as IpcMap), event: name } as IpcEventBody };
}

/** Argument validation for op handlers: each throws IpcError('bad_value') naming the argument. */
export const arg = {
  int(m: IpcMap, key: string, min: number, max: number, fallback?: number): number {
    const v = m[key];
    if (v === undefined && fallback !== undefined) return fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      throw new IpcError('bad_value', `${key} must be an integer in [${min}, ${max}]`);
    }
    return v;
  },
  string(m: IpcMap, key: string, maxLen: number, fallback?: string): string {
    const v = m[key];
    if (v === undefined && fallback !== undefined) return fallback;
    if (typeof v !== 'string' || v.length > maxLen) throw new IpcError('bad_value', `${key} must be a string of at most ${maxLen} characters`);
    return v;
  },
  bool(m: IpcMap, key: string, fallback?: boolean): boolean {
    const v = m[key];
    if (v === undefined && fallback !== undefined) return fallback;
    if (typeof v !== 'boolean') throw new IpcError('bad_value', `${key} must be a boolean`);
    return v;
  },
  bytes(m: IpcMap, key: string, maxLen: number): Buffer {
    const v = m[key];
    if (!(v instanceof Uint8Array) || v.length > maxLen) throw new IpcError('bad_value', `${key} must be binary of at most ${maxLen} bytes`);
    return Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  },
  addr(m: IpcMap, key: string): Addr {
    const v = m[key];
    if (typeof v !== 'string') throw new IpcError('bad_value', `${key} must be an address string`);
    try {
      return Addr.parse(v);
    } catch (err) {
      throw new IpcError('bad_address', `${key}: ${(err as Error).message}`, { cause: err });
    }
  },
};

// ---------------------------------------------------------------------------------------------------
// Flow-control bookkeeping (the same arithmetic on both sides of the socket)

/**
 * Receive credit of one connection, kept by the daemon: how many more bytes it may put into `data`
 * events. The SDK keeps the mirror image (what it granted minus what it received).
 */
export class RecvCredit {
  private credit: number;

  constructor(initial = IPC_DEFAULT_RECV_CREDIT) {
    if (!Number.isInteger(initial) || initial < 0 || initial > IPC_MAX_RECV_CREDIT) throw new IpcError('bad_credit', `initial credit out of range: ${initial}`);
    this.credit = initial;
  }

  get available(): number {
    return this.credit;
  }

  /** Add credit from a `credit` request. Throws IpcError('bad_credit') for bad or excessive grants. */
  grant(bytes: number): number {
    if (!Number.isInteger(bytes) || bytes <= 0) throw new IpcError('bad_credit', `credit grant must be a positive integer, got ${bytes}`);
    if (this.credit + bytes > IPC_MAX_RECV_CREDIT) throw new IpcError('bad_credit', `outstanding credit would exceed ${IPC_MAX_RECV_CREDIT} bytes`);
    this.credit += bytes;
    return this.credit;
  }

  /** Size of the next `data` event given `pending` buffered bytes (0 = must wait for credit). */
  nextChunk(pending: number): number {
    return Math.min(this.credit, IPC_MAX_DATA_CHUNK, pending);
  }

  /** Record a `data` event of `n` bytes. */
  consume(n: number): void {
    if (n > this.credit) throw new IpcError('bad_credit', `data event of ${n} bytes exceeds the remaining credit ${this.credit}`);
    this.credit -= n;
  }
}

/**
 * Unanswered `send` bytes of one connection. The SDK waits while `!canSend(n)`; the daemon calls
 * `admit(n)` per request (throws `send_window_exceeded` when a client ignores the window) and
 * `release(n)` when it answers the request.
 */
export class SendWindow {
  private outstanding = 0;

  constructor(readonly window = IPC_DEFAULT_SEND_WINDOW) {}

  get inFlight(): number {
    return this.outstanding;
  }

  /** A send of `n` bytes fits now (an empty window always admits one chunk, so progress is guaranteed). */
  canSend(n: number): boolean {
    return this.outstanding === 0 || this.outstanding + n <= this.window;
  }

  admit(n: number): void {
    if (n > IPC_MAX_DATA_CHUNK) throw new IpcError('send_window_exceeded', `send of ${n} bytes exceeds the ${IPC_MAX_DATA_CHUNK}-byte chunk limit`);
    if (!this.canSend(n)) throw new IpcError('send_window_exceeded', `${this.outstanding + n} unanswered bytes exceed the ${this.window}-byte send window`);
    this.outstanding += n;
  }

  release(n: number): void {
    this.outstanding = Math.max(0, this.outstanding - n);
  }
}
