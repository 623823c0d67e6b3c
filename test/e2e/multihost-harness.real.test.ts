/**
 * The multi-host harness itself (test/support/multihost.ts, netns.ts), before any role runs on
 * it: two hypervisor hosts in network namespaces, each with its own libvirtd and a real guest,
 * a control namespace the test reaches only through an in-namespace helper, and a teardown that
 * leaves nothing behind. Never addresses a namespace's IP from the root namespace.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { existsSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { labLoopDevices, pidAlive, run, virsh } from '../../src/lab/index.js';
import { describeReal } from '../support/real.js';
import { sizeHistory } from '../support/guestWatch.js';
import { startMultiHost, whyNoMultiHost, type MultiHost } from '../support/multihost.js';
import { listNetns, netnsNameOf, rootHasRouteFor } from '../support/netns.js';

const MiB = 1024 * 1024;
const TUNNEL_SCRIPT = fileURLToPath(new URL('../support/netns-tunnel.mjs', import.meta.url));

const why = await whyNoMultiHost();

describeReal(why)('multi-host harness start that fails half way', () => {
  it('removes the namespaces and the run dir it had made, and throws', async () => {
    const ours = async (): Promise<string[]> => [
      ...(await listNetns()).filter((n) => n.startsWith(`oe${process.pid}`)),
      ...readdirSync(tmpdir()).filter((n) => n.startsWith(`oe-mh-${process.pid}-`) || n.startsWith(`oe${process.pid}`)),
    ];
    const before = await ours();
    let seen: string[] = [];
    // A cache dir below a plain file (ENOTDIR; not below /proc, where Node 20's recursive mkdir
    // loops forever): the topology comes up, then the libvirtds and the image fail.
    const file = join(tmpdir(), `oe${process.pid}-not-a-dir`);
    writeFileSync(file, '');
    try {
      const failing = startMultiHost({ cacheDir: join(file, 'cache'), log: (m) => (seen = [...seen, m]) });
      await expect(failing).rejects.toThrow();
    } finally {
      rmSync(file, { force: true });
    }
    expect(seen.some((m) => /^topology oe\d+[a-z] /.test(m))).toBe(true);
    expect(await ours()).toEqual(before);
  }, 60_000);
});

describeReal(why)('multi-host harness (two hosts in network namespaces, a libvirtd and a TCG guest each)', () => {
  let mh: MultiHost | undefined;
  const t0 = Date.now();
  const log = (m: string): void => console.log(`[multihost +${((Date.now() - t0) / 1000).toFixed(1)}s] ${m}`);
  const M = (): MultiHost => {
    if (!mh) throw new Error('multi-host harness did not start');
    return mh;
  };
  /** Every pid the harness or this test started, gathered as they appear, checked gone after close. */
  const pids = new Map<number, string>();

  beforeAll(async () => {
    mh = await startMultiHost({ log });
    log(`timings ${JSON.stringify(mh.timings)}`);
  }, 300_000);

  afterAll(async () => {
    const problems = (await mh?.close()) ?? [];
    if (problems.length) throw new Error(`cleanup: ${problems.join('; ')}`);
  }, 120_000);

  it('builds the topology inside namespaces only: the root namespace gets no link, address or route for the subnet', async () => {
    const { topo } = M();
    expect(netnsNameOf()).toBeUndefined();
    const names = await listNetns();
    for (const role of ['ctl', 'h1', 'h2']) {
      const m = topo.member(role);
      expect(names).toContain(m.ns);
      const addr = await run('ip', ['-n', m.ns, '-4', '-o', 'addr', 'show', 'dev', 'eth0']);
      expect(addr.stdout).toContain(`inet ${m.address}/24`);
      const lo = await run('ip', ['-n', m.ns, '-o', 'link', 'show', 'lo']);
      expect(lo.stdout).toMatch(/[<,]UP[,>]/);
      const [cmd, args] = topo.wrap(role, 'ip', ['netns', 'identify']);
      expect((await run(cmd, args)).stdout.trim()).toBe(m.ns);
      // Only the default route (out of the machine) would carry it: the reason never to send one.
      expect(await rootHasRouteFor(m.address)).toBe(false);
    }
    const rootLinks = (await run('ip', ['-o', 'link', 'show'])).stdout;
    expect(rootLinks).not.toMatch(/\bp-(ctl|h1|h2)\b|\bbr0\b/);
    expect((await run('ip', ['-4', '-o', 'addr', 'show'])).stdout).not.toContain(topo.subnet.replace(/\.0\/24$/, '.'));
  });

  it("reaches a server on h1's address from inside ctl, through the ctl helper's unix socket", async () => {
    const { topo } = M();
    const h1 = topo.member('h1');
    const server = await topo.spawnIn('h1', process.execPath, [
      '-e',
      `require('http').createServer((q, r) => r.end(String(process.pid))).listen(8089, '${h1.address}', () => console.log('LISTENING'))`,
    ]);
    pids.set(server.pid, 'test server in h1');
    // spawnIn hands out the real process, already in h1 (ip netns exec has exec'd it).
    expect(netnsNameOf(server.pid)).toBe(h1.ns);
    await server.waitForOutput(/^LISTENING$/m, 10_000);

    const tunnel = await topo.tunnel(h1.address, 8089);
    const body = await (await fetch(`${tunnel.url}/`)).text();
    expect(Number(body)).toBe(server.pid);
    const [helper] = topo.helperPids();
    expect(helper).toBeDefined();
    pids.set(helper!, 'tunnel helper in ctl');
    expect(netnsNameOf(helper!)).toBe(topo.ns('ctl'));

    // A one-shot client run inside ctl checks where it runs before it connects.
    const probe = await topo.runIn('ctl', process.execPath, [
      '-e',
      `const fs = require('fs'); const a = fs.statSync('/proc/self/ns/net'), b = fs.statSync('/run/netns/${topo.ns('ctl')}');
       if (a.ino !== b.ino || a.dev !== b.dev) { console.error('not in ctl'); process.exit(3); }
       const s = require('net').connect(8089, '${h1.address}', () => { console.log('CONNECTED'); s.destroy(); });
       s.on('error', (e) => { console.error(e.message); process.exit(1); });`,
    ]);
    expect(probe).toMatchObject({ code: 0, stdout: 'CONNECTED\n' });

    // The helper refuses to run outside its namespace, and the tunnel outside the subnet.
    const misplaced = await run(process.execPath, [TUNNEL_SCRIPT, join(topo.dir, 'never.sock'), topo.ns('ctl'), topo.subnet]);
    expect(misplaced.code).toBe(3);
    expect(misplaced.stderr).toContain(`not running in network namespace ${topo.ns('ctl')}`);
    await expect(topo.tunnel('192.0.2.1', 80)).rejects.toThrow(/not on .* nor loopback/);
    await tunnel.close();
  });

  it('gives each host a libvirtd inside its own namespace that lists only its own guest', async () => {
    const { topo } = M();
    for (const [role, other] of [['h1', 'h2'], ['h2', 'h1']] as const) {
      const h = M().host(role);
      pids.set(h.libvirtd.pid, `libvirtd of ${role}`);
      expect(netnsNameOf(h.libvirtd.pid)).toBe(h.ns);
      const names = (await virsh(h, ['list', '--all', '--name'])).split('\n').map((s) => s.trim()).filter(Boolean);
      expect(names).toEqual([h.guest!.name]);
      const foreign = await run('virsh', ['-c', h.libvirtUri, 'dominfo', M().host(other).guest!.name]);
      expect(foreign.code).not.toBe(0);
      // The guest's QEMU runs in the host's namespace too.
      const qemus = topo.pidsIn(role).filter((p) => p !== h.libvirtd.pid);
      expect(qemus.length).toBeGreaterThanOrEqual(1);
      for (const p of qemus) pids.set(p, `process in ${role}`);
    }
  });

  it('boots a guest on each host that reports its shared-pool volume as vdb at the file size', async () => {
    for (const role of ['h1', 'h2']) {
      const h = M().host(role);
      expect(h.volume!.path.startsWith(`${M().filePoolDir}/`)).toBe(true);
      expect(statSync(h.volume!.path).size).toBe(64 * MiB);
      expect((await h.guest!.sizes()).vdb).toBe(64 * MiB);
      expect(await h.guest!.deviceForSerial(h.volume!.id)).toBe('vdb');
    }
  });

  it("grows only h1's guest when h1's libvirtd resizes its volume", async () => {
    const h1 = M().host('h1');
    const h2 = M().host('h2');
    await virsh(h1, ['blockresize', h1.guest!.uuid, 'vdb', `${128 * MiB}B`]);
    expect(await h1.guest!.waitForSize('vdb', 128 * MiB, 30_000)).toBe(128 * MiB);
    expect(statSync(h1.volume!.path).size).toBe(128 * MiB);
    // h2's guest, asked directly, still sees its own 64 MiB, and never reported anything else.
    expect((await h2.guest!.exec('cat /sys/block/vdb/size')).trim()).toBe(String((64 * MiB) / 512));
    expect(sizeHistory(await h2.guest!.readLog(), 'vdb')).toEqual([64 * MiB]);
    expect(statSync(h2.volume!.path).size).toBe(64 * MiB);
    expect(sizeHistory(await h1.guest!.readLog(), 'vdb')).toEqual([64 * MiB, 128 * MiB]);
  }, 60_000);

  it('tears down to nothing: no namespace, no process, no loop device, no temp dir', async () => {
    const m = M();
    for (const role of ['ctl', 'h1', 'h2']) for (const p of m.topo.pidsIn(role)) pids.set(p, `process in ${role}`);
    expect(pids.size).toBeGreaterThanOrEqual(5);
    const t = Date.now();
    const problems = await m.close();
    log(`teardown ${Date.now() - t} ms`);
    expect(problems).toEqual([]);
    expect((await listNetns()).filter((n) => n.startsWith(`${m.topo.id}-`))).toEqual([]);
    for (const [pid, what] of pids) expect({ pid, what, alive: pidAlive(pid) }).toEqual({ pid, what, alive: false });
    expect(await labLoopDevices(m.dir)).toEqual([]);
    expect(existsSync(m.dir)).toBe(false);
    expect(existsSync(m.topo.dir)).toBe(false);
    // Idempotent.
    expect(await m.close()).toEqual([]);
  }, 120_000);
});
