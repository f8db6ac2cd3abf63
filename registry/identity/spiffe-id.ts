/**
 * SPIFFE IDs (SPIFFE-ID spec §2) and the admission patterns a network's rule lists.
 *
 * Pattern semantics (path-segment aware, no partial-segment wildcards):
 *   spiffe://td/a/b     exactly that ID
 *   spiffe://td/a/*     one more non-empty segment:  /a/x  (not /a, not /a/x/y)
 *   spiffe://td/a/**    one or more further segments: /a/x, /a/x/y (not /a itself)
 *   spiffe://td/** every workload ID in the trust domain (but not the bare trust-domain ID)
 * `*` may appear in any segment position; `**` only as the last segment. A segment like `agent-*` is refused
 * at parse time rather than silently treated as a literal.
 */

export interface SpiffeId {
  trustDomain: string;
  /** Path segments, without the leading slash; empty for the trust-domain ID itself. */
  segments: string[];
  /** Canonical text form. */
  id: string;
}

const TD_RE = /^[a-z0-9._-]+$/;
const SEG_RE = /^[A-Za-z0-9._-]+$/;
const MAX_ID = 2048;
const MAX_TD = 255;

/** Parse a SPIFFE ID; returns the reason on failure (callers wrap it in their own typed error). */
export function parseSpiffeId(text: unknown): SpiffeId | string {
  if (typeof text !== 'string') return 'SPIFFE ID must be a string';
  if (text.length > MAX_ID) return 'SPIFFE ID longer than 2048 bytes';
  if (!text.startsWith('spiffe://')) return 'SPIFFE ID must start with "spiffe://" (lower-case scheme)';
  const rest = text.slice('spiffe://'.length);
  const slash = rest.indexOf('/');
  const td = slash < 0 ? rest : rest.slice(0, slash);
  if (td.length === 0) return 'SPIFFE ID has an empty trust domain';
  if (td.length > MAX_TD) return 'SPIFFE trust domain longer than 255 characters';
  // This rejects ports, user info, upper case, percent-encoding, query and fragment in one go.
  if (!TD_RE.test(td)) return 'SPIFFE trust domain may contain only a-z 0-9 . - _';
  if (slash < 0) return { trustDomain: td, segments: [], id: text };
  const path = rest.slice(slash + 1);
  if (path.length === 0) return 'SPIFFE ID must not end with "/"';
  const segments = path.split('/');
  for (const s of segments) {
    if (s.length === 0) return 'SPIFFE ID path has an empty segment';
    if (s === '.' || s === '..') return 'SPIFFE ID path must not contain "." or ".." segments';
    if (!SEG_RE.test(s)) return 'SPIFFE ID path segments may contain only A-Z a-z 0-9 . - _';
  }
  return { trustDomain: td, segments, id: text };
}

export function isValidTrustDomain(td: unknown): td is string {
  return typeof td === 'string' && td.length > 0 && td.length <= MAX_TD && TD_RE.test(td);
}

export interface SpiffePattern {
  text: string;
  trustDomain: string;
  /** Literal segments, '*' (exactly one) or a final '**' (one or more). */
  segments: string[];
}

export function parseSpiffePattern(text: unknown): SpiffePattern | string {
  if (typeof text !== 'string') return 'pattern must be a string';
  if (text.length > MAX_ID) return 'pattern longer than 2048 bytes';
  if (!text.startsWith('spiffe://')) return 'pattern must start with "spiffe://"';
  const rest = text.slice('spiffe://'.length);
  const slash = rest.indexOf('/');
  const td = slash < 0 ? rest : rest.slice(0, slash);
  if (!isValidTrustDomain(td)) return 'pattern has an invalid trust domain (wildcards are not allowed there)';
  if (slash < 0) return { text, trustDomain: td, segments: [] };
  const path = rest.slice(slash + 1);
  if (path.length === 0) return 'pattern must not end with "/"';
  const segments = path.split('/');
  for (let i = 0; i < segments.length; i++) {
    const s = segments[i]!;
    if (s === '*') continue;
    if (s === '**') {
      if (i !== segments.length - 1) return '"**" is allowed only as the last segment';
      continue;
    }
    if (s.includes('*')) return `"${s}": "*" must be a whole segment`;
    if (s.length === 0 || s === '.' || s === '..' || !SEG_RE.test(s)) return `"${s}" is not a valid SPIFFE path segment`;
  }
  return { text, trustDomain: td, segments };
}

export function matchSpiffePattern(p: SpiffePattern, id: SpiffeId): boolean {
  if (p.trustDomain !== id.trustDomain) return false;
  const ps = p.segments;
  const is = id.segments;
  for (let i = 0; i < ps.length; i++) {
    const s = ps[i]!;
    if (s === '**') return is.length > i; // one or more remaining segments
    if (i >= is.length) return false;
    if (s !== '*' && s !== is[i]) return false;
  }
  return is.length === ps.length;
}
