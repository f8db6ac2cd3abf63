export { VirtualClock, settle } from './virtual-clock.js';
export { SimNetwork, DEFAULT_LINK, rng, type LinkConfig, type LinkStats, type Tap } from './link.js';
