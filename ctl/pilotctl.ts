#!/usr/bin/env node
/**
 * `pilotctl`: the Pilot CLI over the daemon's IPC socket (SPEC §1, §8; v1 command set of wire reference §2).
 * Global `--json` prints one envelope `{status:"ok",data}` / `{status:"error",code,message,hint}` per
 * command (streaming commands without a bound print NDJSON records); exit code 0 on success, 1 on error.
 */
import { Command, CommanderError } from 'commander';
import { Ctx } from './commands/common.js';
import { buildProgram } from './commands/program.js';

async function main(): Promise<void> {
  const program = buildProgram();
  const json = process.argv.includes('--json');
  const configure = (cmd: Command): void => {
    cmd.exitOverride();
    if (json) cmd.configureOutput({ writeErr: () => undefined });
    for (const c of cmd.commands) configure(c);
  };
  configure(program);
  try {
    await program.parseAsync(process.argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.help' || err.code === 'commander.version') return;
      if (json) new Ctx({ json: true }).fail(err);
      process.exitCode = err.exitCode || 1;
      return;
    }
    new Ctx({ json }).fail(err);
  }
}

void main();
