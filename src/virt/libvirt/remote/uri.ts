/**
 * libvirt connection URIs this client speaks: local unix-socket transports only.
 *   qemu:///system                         → /run/libvirt/libvirt-sock
 *   qemu+unix:///system?socket=/path/sock  → /path/sock
 * The name sent in CONNECT_OPEN is the URI without transport and client-side parameters
 * (what libvirt's own remote driver sends): `qemu:///system`.
 */

export const DEFAULT_SYSTEM_SOCKET = '/run/libvirt/libvirt-sock';

/** A libvirt URI resolved to the local unix socket to dial and the name to send in CONNECT_OPEN. */
export interface ParsedUri {
  /** The URI as given (for messages). */
  uri: string;
  /** Unix socket path to connect to. */
  socketPath: string;
  /** Name passed to CONNECT_OPEN. */
  name: string;
}

/** `sessionRuntimeDir`: $XDG_RUNTIME_DIR, for `qemu:///session` without a `socket` parameter. */
export function parseLibvirtUri(uri: string, sessionRuntimeDir?: string): ParsedUri {
  const m = /^([a-z0-9]+)(?:\+([a-z0-9]+))?:\/\/([^/?#]*)(\/[^?#]*)?(?:\?([^#]*))?$/i.exec(uri);
  if (!m) throw new Error(`not a libvirt URI: ${uri}`);
  const driver = m[1]!;
  const transport = m[2]?.toLowerCase();
  const host = m[3] ?? '';
  const path = m[4] ?? '/';
  const query = new URLSearchParams(m[5] ?? '');
  if (transport !== undefined && transport !== 'unix') {
    throw new Error(`libvirt transport '${transport}' is not supported (only local unix sockets): ${uri}`);
  }
  if (host !== '' && host !== 'localhost') {
    throw new Error(`remote libvirt hosts are not supported (only local unix sockets): ${uri}`);
  }
  let socketPath = query.get('socket') ?? undefined;
  if (socketPath === undefined) {
    if (path === '/session') {
      if (sessionRuntimeDir === undefined) throw new Error(`give the session socket as ?socket=PATH: ${uri}`);
      socketPath = `${sessionRuntimeDir}/libvirt/libvirt-sock`;
    } else {
      socketPath = DEFAULT_SYSTEM_SOCKET;
    }
  }
  // Client-side parameters are not part of the name the server sees.
  const clientParams = new Set(['socket', 'name', 'no_verify', 'no_tty', 'pkipath', 'keyfile', 'mode', 'proxy', 'command', 'netcat']);
  const serverQuery = new URLSearchParams();
  for (const [k, v] of query) if (!clientParams.has(k)) serverQuery.append(k, v);
  const qs = serverQuery.toString();
  const name = query.get('name') ?? `${driver}://${path}${qs ? `?${qs}` : ''}`;
  return { uri, socketPath, name };
}
