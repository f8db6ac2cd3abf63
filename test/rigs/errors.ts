import { PilotError } from '../../transport/errors.js';

/**
 * Failures of the network-namespace rig itself (bad topology request, a command that failed inside a
 * namespace, a wait that timed out). `code` is stable: `invalid_name`, `invalid_address`, `duplicate`,
 * `unknown`, `command_failed`, `unsupported`, `closed`, `line_wait_failed`, `agent_failed`.
 */
export class RigError extends PilotError {}
