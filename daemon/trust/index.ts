export * from './store.js';
export * from './handshake.js';
export * from './logic.js';
