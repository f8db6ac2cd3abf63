export * from './protocol.js';
export { ByteQueue } from './bytequeue.js';
