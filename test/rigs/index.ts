/** Public surface of the network-namespace NAT rigs (test infrastructure; Linux + root only). */
export {
  NetRig,
  Namespace,
  Host,
  Nat,
  NodeProcess,
  NAT_TYPES,
  rigAvailable,
  impairmentSupport,
  sweepStale,
  listRigNamespaces,
  natRuleset,
  run,
  type NatType,
  type NatOptions,
  type NatMapping,
  type RigOptions,
  type Impairment,
  type ImpairmentSupport,
  type ExecOptions,
  type ExecResult,
} from './netns.js';
export { UdpAgent, UdpSocket, type Datagram, type Endpoint } from './agent.js';
export { LineReader, waitForLine, type LineMatch } from './lines.js';
export { RigError } from './errors.js';
export { World, SILENCE_MS, type PunchResult } from './world.js';
