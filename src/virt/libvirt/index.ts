export { LibvirtDriver, type LibvirtDriverOptions } from './driver.js';
export { Host, type HostOptions } from './host.js';
export { Guest, toServerState, type LiveSizeMethod } from './guest.js';
export { METADATA_NS, buildDiskXml, parseDomainXml, type DomainDisk, type DomainInfo } from './domxml.js';
export { HostStorage } from './storage.js';
