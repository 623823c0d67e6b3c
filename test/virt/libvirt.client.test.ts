/**
 * The remote client against a scripted in-process server speaking libvirt's framing, so serial
 * matching, timeouts, reconnects and error replies are tested without libvirtd.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RemoteClient } from '../../src/virt/libvirt/remote/client.js';
import { LibvirtConnectionError, LibvirtError, LibvirtTimeoutError } from '../../src/virt/libvirt/remote/errors.js';
import {
  MessageFramer,
  MessageStatus,
  MessageType,
  PREFIX_BYTES,
  QEMU_PROGRAM,
  QemuProc,
  RemoteProc,
  decodeHeader,
  encodeMessage,
  readDomain,
  writeDomain,
  writeRemoteError,
  type MessageHeader,
} from '../../src/virt/libvirt/remote/protocol.js';
import { XdrReader, XdrWriter } from '../../src/virt/libvirt/remote/xdr.js';
import { RequestTimings, withTimings } from '../../src/util/timing.js';

type Handler = (h: MessageHeader, body: XdrReader, reply: (body?: Buffer, status?: number) => void) => void;

class FakeLibvirtd {
  server: net.Server;
  sockets = new Set<net.Socket>();
  procs: number[] = [];
  constructor(readonly path: string, public handler: Handler) {
    this.server = net.createServer((s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
      const f = new MessageFramer();
      s.on('data', (d) => {
        for (const m of f.push(d)) {
          const h = decodeHeader(m);
          this.procs.push(h.procedure);
          const reply = (body?: Buffer, status: number = MessageStatus.OK): void => {
            s.write(encodeMessage({ ...h, type: MessageType.REPLY, status }, body));
          };
          if (h.procedure === RemoteProc.CONNECT_OPEN || h.procedure === RemoteProc.CONNECT_CLOSE) reply();
          else this.handler(h, new XdrReader(m, PREFIX_BYTES), reply);
        }
      });
    });
  }
  listen(): Promise<void> {
    return new Promise((r) => this.server.listen(this.path, r));
  }
  dropClients(): void {
    for (const s of this.sockets) s.destroy();
  }
  close(): Promise<void> {
    this.dropClients();
    return new Promise((r) => this.server.close(() => r()));
  }
}

const DOM = { name: 'g1', uuid: Buffer.alloc(16, 0xab), id: 5 };

/** libvirtd's "Domain not found" (VIR_ERR_NO_DOMAIN, 42, from the QEMU driver, 10), as a remote_error body. */
function domainNotFound(): Buffer {
  const w = new XdrWriter();
  writeRemoteError(w, { code: 42, domain: 10, message: 'Domain not found', level: 2, str1: null, str2: null, str3: null, int1: 0, int2: 0 });
  return w.bytes();
}

/** A handler answering "Domain not found" to the `failing`-th call (0-based) and DOM to the others, `delayMs` later. */
function failingCall(failing: number, delayMs = 0): ConstructorParameters<typeof FakeLibvirtd>[1] {
  let n = 0;
  return (_h, _b, reply) => {
    if (n++ === failing) return reply(domainNotFound(), MessageStatus.ERROR);
    const w = new XdrWriter();
    writeDomain(w, DOM);
    if (delayMs > 0) setTimeout(() => reply(w.bytes()), delayMs);
    else reply(w.bytes());
  };
}

describe('RemoteClient', () => {
  let dir: string;
  let sock: string;
  let srv: FakeLibvirtd | undefined;
  let client: RemoteClient | undefined;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'oe-rpc-'));
    sock = join(dir, 'sock');
  });
  afterEach(async () => {
    await client?.close();
    await srv?.close();
    client = undefined;
    srv = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  it('matches replies to calls by serial when they come back out of order', async () => {
    const held: Array<() => void> = [];
    srv = new FakeLibvirtd(sock, (h, body, reply) => {
      const dom = readDomain(body);
      const w = new XdrWriter().int(dom.id).int(1);
      held.push(() => reply(w.bytes()));
      if (held.length === 3) for (const f of held.reverse()) f();
    });
    await srv.listen();
    client = new RemoteClient({ uri: `qemu+unix:///system?socket=${sock}` });
    const got = await Promise.all([1, 2, 3].map((id) => client!.getState({ ...DOM, id })));
    expect(got.map((g) => g.state)).toEqual([1, 2, 3]);
  });

  it('turns a remote_error into a LibvirtError with libvirt code, domain and message', async () => {
    srv = new FakeLibvirtd(sock, (_h, _b, reply) => reply(domainNotFound(), MessageStatus.ERROR));
    await srv.listen();
    client = new RemoteClient({ uri: `qemu+unix:///system?socket=${sock}` });
    const err = await client.lookupByName('nope').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LibvirtError);
    expect(err).toMatchObject({ code: 42, domain: 10, message: 'Domain not found', procedure: 'DOMAIN_LOOKUP_BY_NAME' });
  });

  it('tells observeCall the procedure and duration of each call, a failed call included, and nothing of the handshake', async () => {
    srv = new FakeLibvirtd(sock, failingCall(0));
    await srv.listen();
    const seen: Array<[string, number]> = [];
    client = new RemoteClient({ uri: `qemu+unix:///system?socket=${sock}`, observeCall: (procedure, seconds) => seen.push([procedure, seconds]) });
    await expect(client.lookupByName('nope')).rejects.toBeInstanceOf(LibvirtError);
    await expect(client.lookupByName('g1')).resolves.toEqual(DOM);
    expect(seen.map(([p]) => p)).toEqual(['DOMAIN_LOOKUP_BY_NAME', 'DOMAIN_LOOKUP_BY_NAME']);
    for (const [, seconds] of seen) {
      expect(seconds).toBeGreaterThan(0);
      expect(seconds).toBeLessThan(5);
    }
  });

  it("adds each call's time, a failed one's too, to the current request's libvirt Server-Timing part, and nothing outside a request", async () => {
    // Answered 20 ms later: a call's part is at least that.
    srv = new FakeLibvirtd(sock, failingCall(1, 20));
    await srv.listen();
    client = new RemoteClient({ uri: `qemu+unix:///system?socket=${sock}` });
    // Outside a request (the connection's handshake included): no timings to add to.
    await client.lookupByName('g1');
    const t = new RequestTimings();
    // A call is the request's when it is made with the request's timings current (util/timing.ts).
    await expect(withTimings(t, () => client!.lookupByName('nope'))).rejects.toBeInstanceOf(LibvirtError);
    await withTimings(t, () => client!.lookupByName('g1'));
    const after = t.parts.libvirt;
    // Made with nothing current (after an await, say): not the request's.
    await client.lookupByName('g1');
    expect(t.parts.libvirt).toBe(after);
    expect(t.parts.libvirt).toBeGreaterThanOrEqual(19);
    expect(t.parts.libvirt).toBeLessThan(5_000);
    expect(Object.keys(t.parts)).toEqual(['libvirt']);
    expect(t.header()).toMatch(/^libvirt;dur=\d+\.\d{3}, total;dur=\d+\.\d{3}$/);
  });

  it('times a call out without breaking the calls after it', async () => {
    let n = 0;
    srv = new FakeLibvirtd(sock, (_h, _b, reply) => {
      if (n++ === 0) return; // never answers the first
      const w = new XdrWriter();
      writeDomain(w, DOM);
      reply(w.bytes());
    });
    await srv.listen();
    client = new RemoteClient({ uri: `qemu+unix:///system?socket=${sock}`, callTimeoutMs: 100 });
    await expect(client.lookupByName('a')).rejects.toBeInstanceOf(LibvirtTimeoutError);
    await expect(client.lookupByName('b')).resolves.toEqual(DOM);
  });

  it('fails the calls in flight when the connection breaks and reconnects on the next call', async () => {
    srv = new FakeLibvirtd(sock, () => srv!.dropClients());
    await srv.listen();
    client = new RemoteClient({ uri: `qemu+unix:///system?socket=${sock}` });
    await expect(client.lookupByName('a')).rejects.toBeInstanceOf(LibvirtConnectionError);
    srv.handler = (_h, _b, reply) => {
      const w = new XdrWriter();
      writeDomain(w, DOM);
      reply(w.bytes());
    };
    await expect(client.lookupByName('a')).resolves.toEqual(DOM);
    expect(srv.procs.filter((p) => p === RemoteProc.CONNECT_OPEN)).toHaveLength(2);
  });

  it('names the URI and socket when the socket cannot be reached', async () => {
    const uri = `qemu+unix:///system?socket=${join(dir, 'missing')}`;
    client = new RemoteClient({ uri });
    const err = (await client.connect().catch((e: unknown) => e)) as LibvirtConnectionError;
    expect(err).toBeInstanceOf(LibvirtConnectionError);
    expect(err.uri).toBe(uri);
    expect(err.message).toContain(uri);
    expect(err.message).toMatch(/ENOENT/);
  });

  it('refuses calls after close', async () => {
    srv = new FakeLibvirtd(sock, () => undefined);
    await srv.listen();
    client = new RemoteClient({ uri: `qemu+unix:///system?socket=${sock}` });
    await client.connect();
    await client.close();
    await expect(client.listAllDomains()).rejects.toThrow(/closed/);
    expect(srv.procs).toContain(RemoteProc.CONNECT_CLOSE);
  });

  it.each([
    ['a reply', '{"return":{}}'],
    ['no reply (a null remote_string)', null],
  ] as const)('sends qemu-agent-command as QEMU program procedure 3 (domain, command, timeout, flags) and decodes %s', async (_what, result) => {
    const seen: Array<{ program: number; version: number; dom: string; cmd: string; timeout: number; flags: number }> = [];
    srv = new FakeLibvirtd(sock, (h, body, reply) => {
      seen.push({ program: h.program, version: h.version, dom: readDomain(body).name, cmd: body.string(), timeout: body.int(), flags: body.uint() });
      expect(h.procedure).toBe(QemuProc.DOMAIN_AGENT_COMMAND);
      reply(new XdrWriter().optional(result, (w, v) => w.string(v)).bytes());
    });
    await srv.listen();
    client = new RemoteClient({ uri: `qemu+unix:///system?socket=${sock}` });
    expect(await client.qemuAgentCommand(DOM, '{"execute":"guest-ping"}', 3, 0)).toBe(result);
    expect(seen).toEqual([{ program: QEMU_PROGRAM, version: 1, dom: 'g1', cmd: '{"execute":"guest-ping"}', timeout: 3, flags: 0 }]);
    expect(QemuProc.DOMAIN_AGENT_COMMAND).toBe(3);
  });

  it.each([0, -1, -2, 1.5])('refuses an agent timeout of %s seconds before calling (only a positive wait is meaningful here)', async (t) => {
    srv = new FakeLibvirtd(sock, () => undefined);
    await srv.listen();
    client = new RemoteClient({ uri: `qemu+unix:///system?socket=${sock}` });
    await expect(client.qemuAgentCommand(DOM, '{"execute":"guest-ping"}', t)).rejects.toThrow(RangeError);
    expect(srv.procs).toEqual([]);
  });

  it('waits for an agent command as long as the agent timeout plus the margin for libvirtd, then times out', async () => {
    srv = new FakeLibvirtd(sock, () => undefined);
    await srv.listen();
    client = new RemoteClient({ uri: `qemu+unix:///system?socket=${sock}`, callTimeoutMs: 50 });
    const err = await client.qemuAgentCommand(DOM, '{"execute":"guest-ping"}', 1, 0, { timeoutMs: 100 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LibvirtTimeoutError);
    expect(err).toMatchObject({ procedure: 'QEMU_DOMAIN_AGENT_COMMAND', timeoutMs: 1100 });
  });
});
