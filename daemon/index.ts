// Public surface of the daemon folder: the Daemon and the parts it assembles.
export { Daemon, DaemonError, splitHostPort, type DaemonOptions } from './daemon.js';
export { IpcServer, toIpcError, type IpcDaemonApi, type IpcServerOptions } from './ipc-server.js';
export { Admission, type AdmissionOptions, type AdmissionPolicySource, type AdmissionRefusal } from './admission.js';
export { PeerManager, PeerError, parseEndpoint, type PeerManagerOptions, type PeerPath, type PeerRecord } from './peers.js';
export { loadDaemonConfig, ConfigError, type DaemonConfig } from './config.js';
export { DataDir } from './datadir.js';
