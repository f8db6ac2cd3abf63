export { Pilot, defaultSocketPath, type PilotConnectOptions, type DialOptions, type PeerRef, type Result, type TrustEvent } from './pilot.js';
export { PilotConnection } from './connection.js';
export { PilotServer } from './server.js';
export { PilotDatagramSocket, type PilotDatagram } from './datagram.js';
export { PilotSdkError, SdkErrorCodes } from './errors.js';
export * from './services.js';
export { PilotNetworks, PilotKeys, joinFields, type JoinOptions, type CreateOptions, type CertPair, type NodeRef } from './networks.js';
export { PilotTasks, TASK_INLINE_FILE_MAX, type TaskInfo, type TaskResultsInput, type TaskSubmitResult, type TaskType } from './tasks.js';
