/** The pilotctl command tree (built without side effects so tests can inspect it). */
import { Command } from 'commander';
import { registerCommCommands } from './comm.js';
import { registerNetworkCommands } from './network.js';
import { registerNodeCommands } from './node.js';
import { registerSetupCommands } from './setup.js';

export function buildProgram(): Command {
  const program = new Command('pilotctl')
    .description('Pilot Protocol control: talk to the local pilot-daemon (peers, trust, streams, files, pub/sub, bench)')
    .option('--json', 'machine-readable output (envelopes with stable error codes)')
    .option('--socket <path>', 'daemon IPC socket (default $PILOT_SOCKET, config, or <tmp>/pilot.sock)')
    .showHelpAfterError(false)
    .enablePositionalOptions(false);
  registerSetupCommands(program);
  registerNodeCommands(program);
  registerNetworkCommands(program);
  registerCommCommands(program);
  return program;
}

