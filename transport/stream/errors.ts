import { PilotError } from '../errors.js';

/**
 * Errors the stream engine raises. Stable codes:
 *  connection_refused  the peer answered our SYN with RST (no listener, backlog full, caps)
 *  dial_timeout        no SYN-ACK before the dial deadline
 *  dial_aborted        the caller's AbortSignal fired
 *  connection_reset    the peer reset an established connection
 *  peer_closed         the host tore down every connection with that peer (closePeer: revocation, tunnel loss)
 *  max_retransmits     data went unacknowledged through maxRetransmits timeouts (the peer is gone)
 *  idle_timeout        nothing heard from the peer for idleTimeoutMs
 *  stream_truncated    the peer's FIN arrived but bytes before it never did (a v1 sender stops retransmitting at FIN)
 *  host_closed         the host was closed
 *  port_in_use / no_ephemeral_port / invalid_argument  local API misuse or exhaustion
 *  ping_timeout        no pong before pingTimeoutMs
 */
export class StreamError extends PilotError {}
