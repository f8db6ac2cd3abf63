/**
 * Typed SDK errors (SPEC §8: every error has a stable code and, where it helps, an actionable hint).
 * Codes the SDK raises itself: `not_running` (no daemon on the socket), `ipc_closed` (the IPC socket went
 * away), `protocol` (the daemon sent bytes we cannot decode), `timeout`, `invalid_argument`, `closed`
 * (object already closed). Daemon error responses keep the daemon's code (`refused`, `timeout`,
 * `unreachable`, `not_found`, `port_in_use`, `conn_closed`, `not_allowed`, `bad_request`, …).
 */
import { PilotError } from '../../transport/errors.js';

export class PilotSdkError extends PilotError {}

export const SdkErrorCodes = {
  NotRunning: 'not_running',
  IpcClosed: 'ipc_closed',
  Protocol: 'protocol',
  Timeout: 'timeout',
  InvalidArgument: 'invalid_argument',
  Closed: 'closed',
} as const;
