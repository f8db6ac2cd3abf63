import type { Duplex } from 'node:stream';
import { PilotError } from '../../transport/errors.js';

/** Who is on the other end of a service connection (filled in by the daemon from the session). */
export interface ServiceContext {
  /** Remote address text `N:NNNN.HHHH.LLLL`. */
  remote: string;
  /** Remote node ID. */
  remoteNode: number;
  /** Remote port, when known. */
  remotePort?: number;
}

/** A built-in service bound to a well-known port (wire reference §1.2, §1.14). */
export interface Service {
  readonly name: string;
  readonly port: number;
  /** Serve one connection; resolves when the service is done with it (it is closed by then). Never rejects. */
  handle(conn: Duplex, ctx: ServiceContext): Promise<void>;
  /** Close every connection this service still holds. */
  close(): Promise<void>;
}

/** Webhook-style event sink (daemon/webhook.ts `emit`). Must not throw or block. */
export type EventSink = (event: string, data: Record<string, unknown>) => void;

/** The subset of a pino logger the services use. */
export interface ServiceLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

export const silentLogger: ServiceLogger = { debug() {}, info() {}, warn() {} };

/**
 * Malformed or over-limit service input. Codes: `frame_too_large`, `topic_too_large`, `bad_frame`,
 * `bad_json`, `bad_task`, `bad_filename`, `too_many_connections`, `not_found`, `bad_state`, `rejected`.
 */
export class ServiceError extends PilotError {}
