/** Package entry (`import { Pilot } from 'pilot-node'`): the Node SDK over the daemon's IPC socket. */
export * from './sdk/index.js';
export { PilotError } from '../transport/errors.js';
