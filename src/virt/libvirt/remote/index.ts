export { RemoteClient, DomainState, DomainAffect, DomainStats, ListDomainsFlags, DomainXmlFlags, BLOCK_RESIZE_BYTES } from './client.js';
export type { BlockInfo, CallOptions, DomainStatsRecord, Logger, RemoteClientOptions } from './client.js';
export { LibvirtError, LibvirtConnectionError, LibvirtTimeoutError, LibvirtProtocolError, VirErrorCode, VirErrorDomain } from './errors.js';
export { bytesToUuid, uuidToBytes, type RemoteDomain } from './protocol.js';
export { parseLibvirtUri, DEFAULT_SYSTEM_SOCKET, type ParsedUri } from './uri.js';
