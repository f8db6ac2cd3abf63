export * from './protocol.js';
export { ByteQueue } from './bytequeue.js';
export { taskOp, TaskOpError, TASK_OP_PREFIX, type TaskOpsDaemon, type TaskOpsService } from './task-ops.js';
