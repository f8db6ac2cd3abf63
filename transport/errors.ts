/**
 * Base class for every error this project raises on purpose. `code` is stable and machine-readable;
 * the message is for humans; `hint`, where one helps, says what to do about it (IPC replies and
 * pilotctl show it). Subclasses exist per concern so callers can `instanceof` them.
 */
export class PilotError extends Error {
  readonly code: string;
  readonly hint: string | undefined;
  constructor(code: string, message: string, options?: { cause?: unknown; hint?: string | undefined }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.hint = options?.hint;
  }
}

/** Bad text or binary address / port input. */
export class AddressError extends PilotError {}

/** Bad packet bytes (header, length, checksum). */
export class PacketError extends PilotError {}

/** Bad identity file or key material. */
export class IdentityError extends PilotError {}
