import type { Duplex } from 'node:stream';
import type { DataDir } from '../datadir.js';
import { DataExchangeService } from './dataexchange.js';
import { EchoService } from './echo.js';
import { EventStreamService } from './eventstream.js';
import { TaskService } from './tasks.js';
import type { EventSink, Service, ServiceLogger } from './types.js';

export * from './types.js';
export * from './frames.js';
export * from './echo.js';
export * from './dataexchange.js';
export * from './eventstream.js';
export * from './tasks.js';

export interface BuiltinServiceSwitches {
  echo: boolean;
  dataExchange: boolean;
  eventStream: boolean;
  taskSubmit: boolean;
}

export interface BuiltinServiceDeps {
  dataDir: DataDir;
  self: () => { node: number; addr: string };
  getPoloScore: (node: number) => Promise<number>;
  adjustPoloScore: (node: number, delta: number) => Promise<void>;
  dial: (addr: string, port: number) => Promise<Duplex>;
  emit?: EventSink;
  logger?: ServiceLogger;
  now?: () => number;
}

export interface BuiltinServices {
  /** The enabled services, each to be bound on its `port`. */
  list: Service[];
  echo: EchoService | null;
  dataExchange: DataExchangeService | null;
  eventStream: EventStreamService | null;
  tasks: TaskService | null;
}

/** Build the enabled built-in services (config `services` switches, v1 `-no-*` flags). */
export function createBuiltinServices(on: BuiltinServiceSwitches, deps: BuiltinServiceDeps): BuiltinServices {
  const common = { ...(deps.logger ? { logger: deps.logger } : {}) };
  const withEmit = { ...common, ...(deps.emit ? { emit: deps.emit } : {}) };
  const echo = on.echo ? new EchoService(common) : null;
  const dataExchange = on.dataExchange
    ? new DataExchangeService({ ...withEmit, inboxDir: deps.dataDir.inboxDir, receivedDir: deps.dataDir.receivedDir, ...(deps.now ? { now: deps.now } : {}) })
    : null;
  const eventStream = on.eventStream ? new EventStreamService(withEmit) : null;
  const tasks = on.taskSubmit
    ? new TaskService({
        ...withEmit,
        dirs: { submitted: deps.dataDir.tasksSubmittedDir, received: deps.dataDir.tasksReceivedDir, results: deps.dataDir.tasksResultsDir },
        self: deps.self,
        getPoloScore: deps.getPoloScore,
        adjustPoloScore: deps.adjustPoloScore,
        dial: deps.dial,
        ...(deps.now ? { now: deps.now } : {}),
      })
    : null;
  const list = [echo, dataExchange, eventStream, tasks].filter((s): s is NonNullable<typeof s> => s !== null);
  return { list, echo, dataExchange, eventStream, tasks };
}
