/**
 * libvirt's RPC wire format (src/rpc/virnetprotocol.x, src/remote/remote_protocol.x,
 * src/remote/qemu_protocol.x), written from the protocol description.
 *
 * A message on the socket: a 4-byte big-endian length that counts itself, a 24-byte header
 * {program, version, procedure, type, serial, status}, then the XDR-encoded body: the call's
 * arguments, the reply's return value, or a `remote_error` when status is ERROR.
 */
import { XdrReader, XdrWriter } from './xdr.js';

export const REMOTE_PROGRAM = 0x20008086;
export const REMOTE_PROTOCOL_VERSION = 1;
export const QEMU_PROGRAM = 0x20008087;
export const QEMU_PROTOCOL_VERSION = 1;
/** The keepalive program ("keep"); the server only pings clients that advertised it, we answer anyway. */
export const KEEPALIVE_PROGRAM = 0x6b656570;
export const KEEPALIVE_PROC_PING = 1;
export const KEEPALIVE_PROC_PONG = 2;

/** virNetMessageType */
export const MessageType = {
  CALL: 0,
  REPLY: 1,
  MESSAGE: 2,
  STREAM: 3,
  CALL_WITH_FDS: 4,
  REPLY_WITH_FDS: 5,
  STREAM_HOLE: 6,
} as const;

/** virNetMessageStatus */
export const MessageStatus = { OK: 0, ERROR: 1, CONTINUE: 2 } as const;

export const HEADER_BYTES = 24;
/** Length word + header. */
export const PREFIX_BYTES = 4 + HEADER_BYTES;
/** VIR_NET_MESSAGE_MAX in libvirt 9 (32 MiB). */
export const MESSAGE_MAX = 32 * 1024 * 1024;

/** Procedure numbers from remote_protocol.x (enum remote_procedure). */
export const RemoteProc = {
  CONNECT_OPEN: 1,
  CONNECT_CLOSE: 2,
  DOMAIN_CREATE: 9,
  DOMAIN_CREATE_XML: 10,
  DOMAIN_DEFINE_XML: 11,
  DOMAIN_DESTROY: 12,
  DOMAIN_GET_XML_DESC: 14,
  DOMAIN_LOOKUP_BY_NAME: 23,
  DOMAIN_LOOKUP_BY_UUID: 24,
  DOMAIN_UNDEFINE: 35,
  AUTH_LIST: 66,
  SECRET_LOOKUP_BY_UUID: 141,
  SECRET_DEFINE_XML: 142,
  SECRET_SET_VALUE: 144,
  SECRET_UNDEFINE: 146,
  DOMAIN_IS_ACTIVE: 150,
  DOMAIN_IS_PERSISTENT: 151,
  DOMAIN_ATTACH_DEVICE_FLAGS: 160,
  DOMAIN_DETACH_DEVICE_FLAGS: 161,
  DOMAIN_GET_BLOCK_INFO: 194,
  DOMAIN_GET_STATE: 212,
  DOMAIN_BLOCK_RESIZE: 251,
  CONNECT_LIST_ALL_DOMAINS: 273,
  CONNECT_GET_ALL_DOMAIN_STATS: 344,
} as const;

/** Procedure numbers from qemu_protocol.x. */
export const QemuProc = {
  DOMAIN_MONITOR_COMMAND: 1,
  DOMAIN_AGENT_COMMAND: 3,
} as const;

/** The 24-byte header of a libvirt RPC message (virNetMessageHeader): program, version, procedure, MessageType, serial, MessageStatus. */
export interface MessageHeader {
  program: number;
  version: number;
  procedure: number;
  type: number;
  serial: number;
  status: number;
}

/** Encode a whole message (length word, header, body). */
export function encodeMessage(header: MessageHeader, body?: Uint8Array): Buffer {
  const bodyLen = body?.length ?? 0;
  const total = PREFIX_BYTES + bodyLen;
  const out = Buffer.allocUnsafe(total);
  out.writeUInt32BE(total, 0);
  out.writeUInt32BE(header.program >>> 0, 4);
  out.writeUInt32BE(header.version >>> 0, 8);
  out.writeInt32BE(header.procedure, 12);
  out.writeInt32BE(header.type, 16);
  out.writeUInt32BE(header.serial >>> 0, 20);
  out.writeInt32BE(header.status, 24);
  if (body && bodyLen > 0) Buffer.from(body.buffer, body.byteOffset, body.byteLength).copy(out, PREFIX_BYTES);
  return out;
}

/** Decode the header of a complete message `msg` (which starts with its length word). */
export function decodeHeader(msg: Buffer): MessageHeader {
  return {
    program: msg.readUInt32BE(4),
    version: msg.readUInt32BE(8),
    procedure: msg.readInt32BE(12),
    type: msg.readInt32BE(16),
    serial: msg.readUInt32BE(20),
    status: msg.readInt32BE(24),
  };
}

/** Splits a byte stream into complete messages. */
export class MessageFramer {
  private chunks: Buffer[] = [];
  private buffered = 0;

  /** Feed bytes; returns every complete message now available (each including its length word). */
  push(data: Buffer): Buffer[] {
    this.chunks.push(data);
    this.buffered += data.length;
    const out: Buffer[] = [];
    for (;;) {
      if (this.buffered < 4) break;
      const head = this.peek(4);
      const len = head.readUInt32BE(0);
      if (len < PREFIX_BYTES || len > MESSAGE_MAX) {
        throw new Error(`invalid libvirt message length ${len}`);
      }
      if (this.buffered < len) break;
      out.push(this.take(len));
    }
    return out;
  }

  private peek(n: number): Buffer {
    const first = this.chunks[0];
    if (first && first.length >= n) return first;
    const joined = Buffer.concat(this.chunks);
    this.chunks = [joined];
    return joined;
  }

  private take(n: number): Buffer {
    const joined = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const msg = joined.subarray(0, n);
    const rest = joined.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered -= n;
    return msg;
  }
}

// ---------------------------------------------------------------------------------------------
// Shared types

/** remote_nonnull_domain */
export interface RemoteDomain {
  name: string;
  /** 16 raw bytes. */
  uuid: Buffer;
  /** -1 when not running. */
  id: number;
}

export const UUID_BYTES = 16;

/** Encode a remote_nonnull_domain (name, 16-byte UUID, id). */
export function writeDomain(w: XdrWriter, d: RemoteDomain): void {
  w.string(d.name);
  w.fixedOpaque(d.uuid, UUID_BYTES);
  w.int(d.id);
}

/** Decode a remote_nonnull_domain (name, 16-byte UUID, id). Throws XdrError if the data is truncated. */
export function readDomain(r: XdrReader): RemoteDomain {
  return { name: r.string(), uuid: r.fixedOpaque(UUID_BYTES), id: r.int() };
}

/** remote_nonnull_network (only skipped over, inside remote_error). */
function readNetwork(r: XdrReader): { name: string; uuid: Buffer } {
  return { name: r.string(), uuid: r.fixedOpaque(UUID_BYTES) };
}

/** remote_error, as the server sends it on status ERROR. */
export interface RemoteErrorBody {
  code: number;
  domain: number;
  message: string | null;
  level: number;
  str1: string | null;
  str2: string | null;
  str3: string | null;
  int1: number;
  int2: number;
}

/** Decode a remote_error (the body of a reply with status ERROR); its domain and network fields are read and dropped. */
export function readRemoteError(r: XdrReader): RemoteErrorBody {
  const code = r.int();
  const domain = r.int();
  const message = r.optional((x) => x.string());
  const level = r.int();
  r.optional(readDomain);
  const str1 = r.optional((x) => x.string());
  const str2 = r.optional((x) => x.string());
  const str3 = r.optional((x) => x.string());
  const int1 = r.int();
  const int2 = r.int();
  r.optional(readNetwork);
  return { code, domain, message, level, str1, str2, str3, int1, int2 };
}

/** Encode a remote_error without its domain and network fields (both absent); for test servers. */
export function writeRemoteError(w: XdrWriter, e: RemoteErrorBody): void {
  w.int(e.code);
  w.int(e.domain);
  w.optional(e.message, (x, v) => x.string(v));
  w.int(e.level);
  w.bool(false);
  w.optional(e.str1, (x, v) => x.string(v));
  w.optional(e.str2, (x, v) => x.string(v));
  w.optional(e.str3, (x, v) => x.string(v));
  w.int(e.int1);
  w.int(e.int2);
  w.bool(false);
}

/** virTypedParameterType */
export const TypedParamType = { INT: 1, UINT: 2, LLONG: 3, ULLONG: 4, DOUBLE: 5, BOOLEAN: 6, STRING: 7 } as const;

/** A virTypedParameter's value: INT, UINT and DOUBLE as number, LLONG and ULLONG as bigint, BOOLEAN as boolean, STRING as string. */
export type TypedParamValue = number | bigint | boolean | string;

/** remote_typed_param: a field name and a discriminated value. 64-bit integers come back as bigint. */
export function readTypedParam(r: XdrReader): [string, TypedParamValue] {
  const field = r.string();
  const type = r.int();
  let value: TypedParamValue;
  switch (type) {
    case TypedParamType.INT:
      value = r.int();
      break;
    case TypedParamType.UINT:
      value = r.uint();
      break;
    case TypedParamType.LLONG:
      value = r.hyperBig();
      break;
    case TypedParamType.ULLONG:
      value = r.uhyperBig();
      break;
    case TypedParamType.DOUBLE:
      value = r.double();
      break;
    case TypedParamType.BOOLEAN:
      value = r.int() !== 0;
      break;
    case TypedParamType.STRING:
      value = r.string();
      break;
    default:
      throw new Error(`unknown typed parameter type ${type} for ${field}`);
  }
  return [field, value];
}

/** UUID text (8-4-4-4-12 hex) to 16 bytes; null when not a UUID. */
export function uuidToBytes(uuid: string): Buffer | null {
  const hex = uuid.replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) return null;
  if (uuid.includes('-') && !/^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/.test(uuid)) {
    return null;
  }
  return Buffer.from(hex, 'hex');
}

/** 16 UUID bytes as lowercase 8-4-4-4-12 text (libvirt's and our server ids' spelling). */
export function bytesToUuid(b: Buffer): string {
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
