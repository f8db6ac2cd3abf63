import { RegistryError } from '../errors.js';

/**
 * Field validators for request objects. Every rejection is `bad_request` naming the field and what was
 * expected; nothing is coerced (v1 turned out-of-range numbers into 0, we refuse them).
 */
export type JsonObject = Record<string, unknown>;

export const MAX_NODE_ID = 0xffffffff;
export const MAX_NETWORK_ID = 0xffff;

function bad(field: string, expected: string, present: boolean): never {
  throw new RegistryError('bad_request', present ? `${field} must be ${expected}` : `missing field "${field}" (${expected})`);
}

export function reqInt(m: JsonObject, field: string, min: number, max: number): number {
  const v = m[field];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) bad(field, `an integer in ${min}..${max}`, v !== undefined);
  return v;
}

export function optInt(m: JsonObject, field: string, min: number, max: number): number | undefined {
  return m[field] === undefined || m[field] === null ? undefined : reqInt(m, field, min, max);
}

/** Node IDs are allocated from 1; 0 is never a node. */
export function reqNodeId(m: JsonObject, field = 'node_id'): number {
  return reqInt(m, field, 1, MAX_NODE_ID);
}

export function optNodeIdField(m: JsonObject, field = 'node_id'): number | undefined {
  return m[field] === undefined || m[field] === null ? undefined : reqNodeId(m, field);
}

export function reqNetworkId(m: JsonObject, field = 'network_id'): number {
  return reqInt(m, field, 0, MAX_NETWORK_ID);
}

export function reqString(m: JsonObject, field: string, max: number, min = 1): string {
  const v = m[field];
  if (typeof v !== 'string' || v.length < min || v.length > max) {
    bad(field, min === 0 ? `a string of at most ${max} characters` : `a string of ${min}..${max} characters`, v !== undefined);
  }
  return v;
}

export function optString(m: JsonObject, field: string, max: number, min = 0): string | undefined {
  return m[field] === undefined || m[field] === null ? undefined : reqString(m, field, max, min);
}

export function reqBool(m: JsonObject, field: string): boolean {
  const v = m[field];
  if (typeof v !== 'boolean') bad(field, 'a boolean', v !== undefined);
  return v;
}

export function optBool(m: JsonObject, field: string): boolean | undefined {
  return m[field] === undefined || m[field] === null ? undefined : reqBool(m, field);
}

export function reqStringArray(m: JsonObject, field: string, maxItems: number, maxLen: number): string[] {
  const v = m[field];
  if (!Array.isArray(v) || v.length > maxItems || !v.every((s) => typeof s === 'string' && s.length <= maxLen)) {
    bad(field, `an array of at most ${maxItems} strings of at most ${maxLen} characters`, v !== undefined);
  }
  return v as string[];
}

export function optIntArray(m: JsonObject, field: string, maxItems: number, min: number, max: number): number[] | undefined {
  const v = m[field];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.length > maxItems || !v.every((n) => typeof n === 'number' && Number.isInteger(n) && n >= min && n <= max)) {
    bad(field, `an array of at most ${maxItems} integers in ${min}..${max}`, true);
  }
  return v as number[];
}

/** Signature fields of a signed request: `signature` (b64, checked later) and optional `ts` (unix ms). */
export interface SignedFields {
  signature: string;
  ts: number | undefined;
}

const MAX_TS = 8.64e15; // JS Date range; rejects absurd values before any arithmetic
export function signedFields(m: JsonObject): SignedFields {
  const sig = m.signature;
  if (typeof sig !== 'string' || sig.length === 0) {
    throw new RegistryError('bad_signature', sig === undefined ? 'missing field "signature" (base64 Ed25519 signature)' : 'signature must be a base64 string');
  }
  if (sig.length > 128) throw new RegistryError('bad_signature', 'signature is too long to be an Ed25519 signature');
  const ts = m.ts;
  if (ts !== undefined && ts !== null && (typeof ts !== 'number' || !Number.isInteger(ts) || ts < 0 || ts > MAX_TS)) {
    throw new RegistryError('bad_request', 'ts must be an integer (unix milliseconds)');
  }
  return { signature: sig, ts: ts ?? undefined };
}

/** Admin token field, if present (compared in constant time elsewhere). */
export function optAdminToken(m: JsonObject): string | undefined {
  const v = m.admin_token;
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string' || v.length > 4096) throw new RegistryError('bad_request', 'admin_token must be a string');
  return v;
}

/** `host:port` with a port in 1..65535 (IPv6 hosts in brackets); returns the parts. */
export function parseHostPort(text: string, field: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^\s:[\]]*):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port < 1 || port > 65535) throw new RegistryError('bad_request', `${field} must be host:port with a port in 1..65535`);
  const host = m[1]!.startsWith('[') ? m[1]!.slice(1, -1) : m[1]!;
  return { host, port };
}
