import { describe, expect, it } from 'vitest';
import {
  MessageFramer,
  MessageStatus,
  MessageType,
  REMOTE_PROGRAM,
  TypedParamType,
  bytesToUuid,
  decodeHeader,
  encodeMessage,
  readDomain,
  readRemoteError,
  readTypedParam,
  uuidToBytes,
  writeDomain,
  writeRemoteError,
} from '../../src/virt/libvirt/remote/protocol.js';
import { parseLibvirtUri } from '../../src/virt/libvirt/remote/uri.js';
import { XdrError, XdrReader, XdrWriter } from '../../src/virt/libvirt/remote/xdr.js';

describe('XDR', () => {
  it('round-trips every primitive with 4-byte alignment', () => {
    const w = new XdrWriter(4);
    w.int(-5).uint(0xffffffff).bool(true).hyper(-(2n ** 40n)).uhyper(2 ** 53 - 1).double(1.5);
    w.string('vdb').string('').opaque(Buffer.from([1, 2, 3, 4, 5])).fixedOpaque(Buffer.alloc(16, 7), 16);
    w.optional('x', (x, v) => x.string(v)).optional(null, (x, v: string) => x.string(v));
    w.array([1, 2, 3], (x, v) => x.int(v));
    const buf = w.bytes();
    expect(buf.length % 4).toBe(0);
    const r = new XdrReader(buf);
    expect(r.int()).toBe(-5);
    expect(r.uint()).toBe(0xffffffff);
    expect(r.bool()).toBe(true);
    expect(r.hyperBig()).toBe(-(2n ** 40n));
    expect(r.uhyper()).toBe(2 ** 53 - 1);
    expect(r.double()).toBe(1.5);
    expect(r.string()).toBe('vdb');
    expect(r.string()).toBe('');
    expect([...r.opaque()]).toEqual([1, 2, 3, 4, 5]);
    expect(r.fixedOpaque(16).equals(Buffer.alloc(16, 7))).toBe(true);
    expect(r.optional((x) => x.string())).toBe('x');
    expect(r.optional((x) => x.string())).toBeNull();
    expect(r.array((x) => x.int())).toEqual([1, 2, 3]);
    expect(r.remaining).toBe(0);
  });

  it('pads strings to a multiple of four bytes with zeros', () => {
    const buf = new XdrWriter().string('abcde').bytes();
    expect([...buf]).toEqual([0, 0, 0, 5, 97, 98, 99, 100, 101, 0, 0, 0]);
  });

  it('refuses values out of range and truncated input', () => {
    expect(() => new XdrWriter().int(2 ** 31)).toThrow(XdrError);
    expect(() => new XdrWriter().uint(-1)).toThrow(XdrError);
    expect(() => new XdrReader(Buffer.from([0, 0, 0, 9, 1])).string()).toThrow(XdrError);
    const big = new XdrWriter().uhyper(2n ** 60n).bytes();
    expect(() => new XdrReader(big).uhyper()).toThrow(/does not fit/);
    expect(new XdrReader(big).uhyperBig()).toBe(2n ** 60n);
  });
});

describe('libvirt RPC framing', () => {
  it('encodes the length word (counting itself) and the 24-byte header', () => {
    const body = new XdrWriter().uint(7).bytes();
    const msg = encodeMessage({ program: REMOTE_PROGRAM, version: 1, procedure: 251, type: MessageType.CALL, serial: 42, status: MessageStatus.OK }, body);
    expect(msg.readUInt32BE(0)).toBe(msg.length);
    expect(msg.length).toBe(28 + 4);
    expect(decodeHeader(msg)).toEqual({ program: 0x20008086, version: 1, procedure: 251, type: 0, serial: 42, status: 0 });
  });

  it('reassembles messages split across and merged within chunks', () => {
    const a = encodeMessage({ program: REMOTE_PROGRAM, version: 1, procedure: 1, type: 1, serial: 1, status: 0 }, new XdrWriter().string('hello').bytes());
    const b = encodeMessage({ program: REMOTE_PROGRAM, version: 1, procedure: 2, type: 1, serial: 2, status: 0 });
    const all = Buffer.concat([a, b]);
    const f = new MessageFramer();
    const got: Buffer[] = [];
    for (let i = 0; i < all.length; i += 3) got.push(...f.push(all.subarray(i, i + 3)));
    expect(got.map((m) => decodeHeader(m).serial)).toEqual([1, 2]);
    expect(got[0]!.equals(a)).toBe(true);
    const f2 = new MessageFramer();
    expect(f2.push(all).length).toBe(2);
  });

  it('rejects a nonsense length word', () => {
    expect(() => new MessageFramer().push(Buffer.from([0, 0, 0, 3]))).toThrow(/invalid libvirt message length/);
  });

  it('round-trips a domain and a remote_error', () => {
    const dom = { name: 'guest-1', uuid: uuidToBytes('11111111-2222-3333-4444-555555555555')!, id: 3 };
    const w = new XdrWriter();
    writeDomain(w, dom);
    writeRemoteError(w, { code: 42, domain: 10, message: 'Domain not found', level: 2, str1: 'a', str2: null, str3: null, int1: -1, int2: 0 });
    const r = new XdrReader(w.bytes());
    expect(readDomain(r)).toEqual(dom);
    expect(readRemoteError(r)).toEqual({ code: 42, domain: 10, message: 'Domain not found', level: 2, str1: 'a', str2: null, str3: null, int1: -1, int2: 0 });
    expect(r.remaining).toBe(0);
  });

  it('decodes typed parameters of every type', () => {
    const w = new XdrWriter();
    w.string('block.count').int(TypedParamType.UINT).uint(2);
    w.string('block.0.capacity').int(TypedParamType.ULLONG).uhyper(1n << 40n);
    w.string('block.0.name').int(TypedParamType.STRING).string('vdb');
    w.string('x').int(TypedParamType.BOOLEAN).int(1);
    const r = new XdrReader(w.bytes());
    expect([readTypedParam(r), readTypedParam(r), readTypedParam(r), readTypedParam(r)]).toEqual([
      ['block.count', 2],
      ['block.0.capacity', 1n << 40n],
      ['block.0.name', 'vdb'],
      ['x', true],
    ]);
  });

  it('converts UUIDs both ways and refuses malformed ones', () => {
    const u = '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0';
    expect(bytesToUuid(uuidToBytes(u)!)).toBe(u);
    expect(uuidToBytes('not-a-uuid')).toBeNull();
    expect(uuidToBytes('0f1e2d3c4b5a69788796a5b4c3d2e1f0')).not.toBeNull();
    expect(uuidToBytes('0f1e2d3c-4b5a69788796-a5b4c3d2e1f0')).toBeNull();
  });
});

describe('libvirt URIs', () => {
  it('uses the system socket for qemu:///system', () => {
    expect(parseLibvirtUri('qemu:///system')).toEqual({ uri: 'qemu:///system', socketPath: '/run/libvirt/libvirt-sock', name: 'qemu:///system' });
  });

  it('takes the socket from qemu+unix URIs and leaves it out of the name', () => {
    const p = parseLibvirtUri('qemu+unix:///system?socket=/tmp/lab/libvirt-sock');
    expect(p.socketPath).toBe('/tmp/lab/libvirt-sock');
    expect(p.name).toBe('qemu:///system');
  });

  it('refuses remote transports and hosts', () => {
    expect(() => parseLibvirtUri('qemu+ssh://host/system')).toThrow(/not supported/);
    expect(() => parseLibvirtUri('qemu://otherhost/system')).toThrow(/not supported/);
    expect(() => parseLibvirtUri('nonsense')).toThrow(/not a libvirt URI/);
  });
});
