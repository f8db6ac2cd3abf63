import { PilotError } from '../transport/errors.js';

/**
 * Stable error codes of the registry protocol (SPEC §6 "errors say why"). Servers put one of these in
 * the `code` field of every `{"type":"error"}` reply; clients raise `RegistryError` with the same code.
 * Client-side conditions (no server involved) use the `client_*`-free names at the bottom.
 */
export const ErrorCodes = [
  'bad_request', // malformed frame/JSON, missing field, wrong type, out-of-range value
  'unknown_type', // request `type` not in the catalogue
  'bad_signature', // signature missing, not base64, or does not verify
  'stale_signature', // |now − ts| above the freshness window
  'replayed_signature', // signature already used inside the freshness window
  'not_found', // node / network / hostname / trust pair does not exist (or is not visible to the caller)
  'forbidden', // authenticated but not allowed (privacy rule, backbone protection, non-member)
  'conflict', // name taken, already member, duplicate request, key in use
  'rate_limited', // token bucket for this IP and operation category is empty
  'too_large', // frame above the 1 MiB cap (connection is closed after the reply)
  'unauthorized', // admin token missing/wrong, or admin API disabled (no token configured)
  'limit_reached', // a configured cap (members, inbox, connections, ids) is full
  'unavailable', // server shutting down or its store failed (fail-stop)
  'internal', // bug; details are in the server log
  'enterprise_required', // a role-gated operation on a network without enterprise: true
  'key_expired', // the node's key passed its expiry: rotate it (or have an admin clear the expiry)
  'identity_refused', // an identity join rule refused the proof; the message starts with [<identity error code>]
  // client-side only
  'timeout', // no reply within the request timeout
  'connection_lost', // connection dropped with the request in flight (non-idempotent: not retried)
  'closed', // client was closed
  'tls_pin_mismatch', // server certificate does not match the pinned SHA-256 fingerprint
  'queue_full', // too many requests pending on this client
  'protocol', // server sent something that is not a valid reply
] as const;
export type ErrorCode = (typeof ErrorCodes)[number];

/** An error reply from the registry, or a client-side failure talking to it. */
export class RegistryError extends PilotError {
  declare readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

const known = new Set<string>(ErrorCodes);
export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && known.has(value);
}
