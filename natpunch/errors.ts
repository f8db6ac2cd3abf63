import { PilotError } from '../transport/errors.js';

/** Bad beacon datagram bytes (wire reference §1.9). Codes: empty, unknown_type, bad_length, bad_ip_length, bad_timestamp, bad_endpoint, bad_node_id. */
export class BeaconWireError extends PilotError {}

/** Beacon server misuse or lifecycle errors (bad options, listen failure, closed). */
export class BeaconError extends PilotError {}

/**
 * STUN codec or transaction failure (RFC 8489). Codes: too_short, not_stun, bad_length, bad_attribute,
 * bad_family, bad_fingerprint, unknown_required_attribute, no_mapped_address, error_response, timeout,
 * resolve_failed, closed, aborted, bad_server.
 */
export class StunError extends PilotError {
  /** For `error_response`: the STUN error code (e.g. 400) and reason phrase the server sent. */
  readonly stunCode?: number;
  readonly reason?: string;
  constructor(code: string, message: string, extra: { stunCode?: number; reason?: string; cause?: unknown } = {}) {
    super(code, message, extra.cause === undefined ? undefined : { cause: extra.cause });
    if (extra.stunCode !== undefined) this.stunCode = extra.stunCode;
    if (extra.reason !== undefined) this.reason = extra.reason;
  }
}

/** NAT traversal client misuse (codes: closed, node_changed, bad_option, bad_endpoint). */
export class NatError extends PilotError {}
