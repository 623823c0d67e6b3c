/**
 * Crash test: the real `online-extend serve` process is killed with SIGKILL during each step of
 * an in-use extend, then started again on the same data directory. Every volume must end
 * `in-use` at the new size — in the record, on the storage, on the host and in the guest — since a kill
 * is not a final error: never stuck, never silently wrong. Also a server delete killed while it
 * detaches its volume: the next start finishes it (as Nova's init_host completes interrupted
 * deletes): the server gone, the volume available with no attachment, the delete action finished.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { ApiClient, ApiError, VOLUME_LATEST } from '../../src/rpc/httpClient.js';
import { SqliteStore } from '../../src/db/sqlite.js';
import { fakeInventory, PROJECT, SERVER } from '../support/service.js';

const BIN = resolve(import.meta.dirname, '../../bin/online-extend.js');
const MiB = 2 ** 20;
const STEPS = ['storage', 'rescan', 'wait_host', 'assist', 'confirm'] as const;

interface Proc {
  child: ChildProcess;
  compute: ApiClient;
  volume: ApiClient;
}

let dir: string;
let token: string;
const children = new Set<ChildProcess>();

async function serve(extra: string[]): Promise<Proc> {
  const child = spawn(process.execPath, [BIN, 'serve', '--fake-inventory', join(dir, 'inv.json'), '--data-dir', join(dir, 'data'), '--port', '0', '--volume-port', '0', '--identity-port', '0', '--image-port', '0', '--sync-interval', '0', ...extra], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ONLINE_EXTEND_LOG_LEVEL: 'warn' },
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  const urls: string[] = [];
  await new Promise<void>((res, rej) => {
    const rl = createInterface({ input: child.stdout! });
    rl.on('line', (line) => {
      const m = /API listening on (http:\/\/\S+)/.exec(line);
      if (m) urls.push(m[1]!);
      if (urls.length === 2) res();
    });
    child.once('exit', (code) => rej(new Error(`serve exited with ${code}`)));
  });
  return { child, compute: new ApiClient({ url: urls[0]!, token }), volume: new ApiClient({ url: urls[1]!, token, headers: VOLUME_LATEST }) };
}

type Vol = { id: string; status: string; size_bytes: number; extend: { step: string; error: string | null } | null };
const show = async (p: Proc, id: string) => (await p.volume.request<{ volume: Vol }>('GET', `/v3/${PROJECT}/volumes/${id}/os-online-extend`)).body.volume;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'oe-crash-'));
  writeFileSync(join(dir, 'inv.json'), JSON.stringify(fakeInventory()));
  token = execFileSync(process.execPath, [BIN, 'token', 'create', '--project', PROJECT, '--user', 'crash', '--roles', 'admin', '--data-dir', join(dir, 'data')], { encoding: 'utf8' }).trim();
});

afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

describe('kill -9 during each extend step, then restart', () => {
  for (const step of STEPS) {
    it(`recovers from a SIGKILL during step ${step}`, async () => {
      let p = await serve(['--extend-step-delay', '300']);
      const v = (await p.volume.request<{ volume: Vol }>('POST', `/v3/${PROJECT}/volumes`, { volume: { name: `crash-${step}`, size_bytes: 64 * MiB } })).body.volume;
      await p.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: v.id } });
      await p.volume.request('POST', `/v3/${PROJECT}/volumes/${v.id}/action`, { 'os-extend-bytes': { new_bytes: 128 * MiB } });
      const end = Date.now() + 15_000;
      while ((await show(p, v.id)).extend?.step !== step) {
        if (Date.now() > end) throw new Error(`never saw step ${step}`);
        await new Promise((r) => setTimeout(r, 10));
      }
      p.child.kill('SIGKILL');
      await new Promise((r) => p.child.once('exit', r));

      p = await serve([]);
      const until = Date.now() + 15_000;
      let cur = await show(p, v.id);
      while (cur.status === 'extending' && Date.now() < until) {
        await new Promise((r) => setTimeout(r, 20));
        cur = await show(p, v.id);
      }
      // No fault was injected, only a kill: nothing final happened, so the extend must finish.
      expect(cur, `step ${step}: ${cur.extend?.error}`).toMatchObject({ status: 'in-use', size_bytes: 128 * MiB, extend: null });
      const host = await p.compute.request<{ volume_blockdev: { bytes: number } }>('GET', `/v2/${PROJECT}/servers/${SERVER}/os-online_extend_volume/${v.id}`);
      expect(host.body.volume_blockdev.bytes).toBe(128 * MiB);
      expect(statSync(join(dir, 'data', 'volumes', 'file', `${v.id}.raw`)).size).toBe(128 * MiB);
      // The guest's own view, from the fake hypervisor's persisted state.
      const fake = JSON.parse(readFileSync(join(dir, 'data', 'fake-hypervisor.json'), 'utf8')) as { servers: Array<{ id: string; disks: Array<{ volumeId: string; guestBytes: number }> }> };
      expect(fake.servers.find((s) => s.id === SERVER)!.disks.find((d) => d.volumeId === v.id)!.guestBytes).toBe(128 * MiB);
      p.child.kill('SIGTERM');
      await new Promise((r) => p.child.once('exit', r));
    });
  }
});

describe('kill -9 during the grow_fs step, then restart', () => {
  it('resumes at grow_fs and grows the guest filesystem once: the volume in-use at its new size, the growth recorded', async () => {
    let p = await serve(['--extend-step-delay', '300']);
    const v = (await p.volume.request<{ volume: Vol }>('POST', `/v3/${PROJECT}/volumes`, { volume: { name: 'crash-grow-fs', size_bytes: 64 * MiB } })).body.volume;
    await p.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: v.id } });
    await p.volume.request('POST', `/v3/${PROJECT}/volumes/${v.id}/action`, { 'os-extend-bytes': { new_bytes: 128 * MiB, 'online_extend:grow_fs': true } });
    const end = Date.now() + 15_000;
    let seen = await show(p, v.id);
    while (seen.extend?.step !== 'grow_fs') {
      if (Date.now() > end) throw new Error('never saw step grow_fs');
      await new Promise((r) => setTimeout(r, 10));
      seen = await show(p, v.id);
    }
    // The block extend is recorded before grow_fs starts; the volume is still extending.
    expect(seen).toMatchObject({ status: 'extending', size_bytes: 128 * MiB });
    p.child.kill('SIGKILL');
    await new Promise((r) => p.child.once('exit', r));

    // While the service is down, the guest has a mounted ext4 of the old size on the disk (the
    // fake hypervisor's persisted state, which it loads at start).
    const statePath = join(dir, 'data', 'fake-hypervisor.json');
    type Disk = { volumeId: string; guestBytes: number; guestFs?: { type: string; mountpoint?: string; bytes: number } };
    const state = JSON.parse(readFileSync(statePath, 'utf8')) as { servers: Array<{ id: string; disks: Disk[] }> };
    const disk = state.servers.find((s) => s.id === SERVER)!.disks.find((d) => d.volumeId === v.id)!;
    expect(disk.guestBytes).toBe(128 * MiB);
    disk.guestFs = { type: 'ext4', mountpoint: '/data', bytes: 64 * MiB };
    writeFileSync(statePath, JSON.stringify(state));

    p = await serve([]);
    const until = Date.now() + 15_000;
    let cur = (await p.volume.request<{ volume: Vol & { fs_growth: Record<string, unknown> | null } }>('GET', `/v3/${PROJECT}/volumes/${v.id}/os-online-extend`)).body.volume;
    while (cur.status === 'extending' && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 20));
      cur = (await p.volume.request<{ volume: Vol & { fs_growth: Record<string, unknown> | null } }>('GET', `/v3/${PROJECT}/volumes/${v.id}/os-online-extend`)).body.volume;
    }
    expect(cur).toMatchObject({ status: 'in-use', size_bytes: 128 * MiB, extend: null });
    expect(cur.fs_growth).toMatchObject({ requested: true, grown: true, fs_type: 'ext4', fs_bytes_before: 64 * MiB, fs_bytes: 128 * MiB });
    const after = JSON.parse(readFileSync(statePath, 'utf8')) as { servers: Array<{ id: string; disks: Disk[] }> };
    expect(after.servers.find((s) => s.id === SERVER)!.disks.find((d) => d.volumeId === v.id)!.guestFs?.bytes).toBe(128 * MiB);
    p.child.kill('SIGTERM');
    await new Promise((r) => p.child.once('exit', r));
  });
});

describe('kill -9 during a server delete, then restart', () => {
  it('finishes the delete at the next start: the server gone, the volume available with no attachment, the delete action finished', async () => {
    const db = join(dir, 'data', 'online-extend.sqlite');
    const store = new SqliteStore(db);
    try {
      await store.putImage({ id: 'img-crash', name: 'guest', kind: 'disk', diskPath: '/nonexistent/guest.qcow2', diskFormat: 'qcow2', kernelPath: null, ramdiskPath: null, cmdline: null, minDiskGb: 0, minRamMb: 0, createdAt: '2026-11-30T00:00:00.000Z' });
      await store.putFlavor({ id: 'f-crash', name: 'small', vcpus: 1, ramMb: 128, diskGb: 1, ephemeralGb: 0, swapMb: 0, isPublic: true, description: null });
    } finally {
      await store.close();
    }
    // Every fake-driver call takes 300 ms: the delete is caught while the volume is detaching.
    let p = await serve(['--fake-latency', '300']);
    const serverStatus = (q: Proc, id: string) =>
      q.compute.request<{ server: { status: string; 'OS-EXT-STS:task_state': string | null } }>('GET', `/v2/${PROJECT}/servers/${id}`).then(
        (r) => r.body.server,
        (e: unknown) => (e instanceof ApiError && e.status === 404 ? undefined : Promise.reject(e)),
      );
    const waitFor = async (what: string, fn: () => Promise<boolean>, ms = 20_000) => {
      const end = Date.now() + ms;
      while (!(await fn())) {
        if (Date.now() > end) throw new Error(`never saw ${what}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    const id = (await p.compute.request<{ server: { id: string } }>('POST', `/v2.1/${PROJECT}/servers`, { server: { name: 'crash-delete', imageRef: 'img-crash', flavorRef: 'f-crash' } })).body.server.id;
    await waitFor('the server ACTIVE', async () => (await serverStatus(p, id))?.status === 'ACTIVE');
    const v = (await p.volume.request<{ volume: Vol }>('POST', `/v3/${PROJECT}/volumes`, { volume: { name: 'crash-delete', size_bytes: 64 * MiB } })).body.volume;
    await p.compute.request('POST', `/v2/${PROJECT}/servers/${id}/os-volume_attachments`, { volumeAttachment: { volumeId: v.id } });
    expect((await p.compute.request('DELETE', `/v2/${PROJECT}/servers/${id}`)).status).toBe(204);
    await waitFor('the volume detaching', async () => (await show(p, v.id)).status === 'detaching');
    expect((await serverStatus(p, id))?.['OS-EXT-STS:task_state']).toBe('deleting');
    p.child.kill('SIGKILL');
    await new Promise((r) => p.child.once('exit', r));

    p = await serve([]);
    await waitFor('the server gone', async () => (await serverStatus(p, id)) === undefined);
    const vol = (await p.volume.request<{ volume: { status: string; attachments: unknown[] } }>('GET', `/v3/${PROJECT}/volumes/${v.id}`)).body.volume;
    expect(vol).toMatchObject({ status: 'available', attachments: [] });
    // Nothing on the host points at the gone server, and the volume can be deleted.
    const fake = JSON.parse(readFileSync(join(dir, 'data', 'fake-hypervisor.json'), 'utf8')) as { servers: Array<{ id: string }> };
    expect(fake.servers.map((s) => s.id)).not.toContain(id);
    expect((await p.volume.request('DELETE', `/v3/${PROJECT}/volumes/${v.id}`)).status).toBe(202);
    const reader = new SqliteStore(db);
    try {
      const actions = await reader.listActions(id);
      expect(actions.filter((a) => a.action === 'delete').map((a) => a.result)).toEqual(['Success']);
    } finally {
      await reader.close();
    }
    p.child.kill('SIGTERM');
    await new Promise((r) => p.child.once('exit', r));
  });
});
