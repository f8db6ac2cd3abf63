import { PilotError } from '../errors.js';

/** Bad tunnel frame bytes (wire reference §1.4, §1.8). Codes are stable; see frames.ts. */
export class FrameError extends PilotError {}

/** Key material or AEAD failures (wire reference §1.5): `weak_key`, `bad_key`, `counter_exhausted`. */
export class TunnelCryptoError extends PilotError {}

/** Misuse of the Tunnel API (bad node id, bad endpoint, closed tunnel). */
export class TunnelError extends PilotError {}
