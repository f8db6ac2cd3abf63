import { RegistryError } from './errors.js';

/** Value rules shared by handlers, snapshot import and the client (wire reference §1.10). */

const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const RESERVED_HOSTNAMES = new Set(['localhost', 'backbone', 'broadcast']);

/** Hostname: DNS-label-like, 1–63 chars, not reserved. Returns the reason it is invalid, or null. */
export function hostnameProblem(name: string): string | null {
  if (!LABEL.test(name)) return `invalid hostname "${clip(name)}": 1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit`;
  if (RESERVED_HOSTNAMES.has(name)) return `hostname "${name}" is reserved`;
  return null;
}

const TAG = /^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/;
export const MAX_TAGS = 10;

/** Normalise tags: strip one leading '#', lower-case, drop duplicates (order kept); reject invalid ones. */
export function normaliseTags(tags: readonly string[]): string[] {
  const out: string[] = [];
  for (const raw of tags) {
    const t = (raw.startsWith('#') ? raw.slice(1) : raw).toLowerCase();
    if (!TAG.test(t)) throw new RegistryError('bad_request', `invalid tag "${clip(raw)}": 1-32 characters of a-z, 0-9 and '-', starting and ending with a letter or digit`);
    if (!out.includes(t)) out.push(t);
  }
  if (out.length > MAX_TAGS) throw new RegistryError('bad_request', `at most ${MAX_TAGS} tags`);
  return out;
}

/** Network names follow the hostname label rule and may not be "backbone". */
export function networkNameProblem(name: string): string | null {
  if (!LABEL.test(name)) return `invalid network name "${clip(name)}": 1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit`;
  if (name === 'backbone') return 'network name "backbone" is reserved';
  return null;
}

export const MAX_ALLOWED_PORTS = 100;
export const MAX_MEMBERS_LIMIT = 10000;

/** Dedupe and sort a validated allowed_ports list. */
export function normalisePorts(ports: readonly number[]): number[] {
  return [...new Set(ports)].sort((a, b) => a - b);
}

export function clip(s: string, n = 64): string {
  return s.length > n ? `${s.slice(0, n)}…` : s;
}
