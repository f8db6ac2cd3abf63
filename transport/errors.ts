/**
 * Base class for every error this project raises on purpose. `code` is stable and machine-readable;
 * the message is for humans. Subclasses exist per concern so callers can `instanceof` them.
 */
export class PilotError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** Bad text or binary address / port input. */
export class AddressError extends PilotError {}

/** Bad packet bytes (header, length, checksum). */
export class PacketError extends PilotError {}

/** Bad identity file or key material. */
export class IdentityError extends PilotError {}
