/**
 * Issue F end to end: a real Cinder only sends `volume-extended` once it grew an attached volume.
 * Here the whole service (`startService`: compute on LibvirtDriver with the lab's libvirtd, the
 * volume API with the file and block backends) runs one lab guest; volumes are made and attached
 * through the APIs; the volume's storage is grown out of band through its backend (a raw file;
 * a loop device's backing file, which the host sees only after a rescan); then what Cinder posts
 * is posted with python-novaclient's own API at 2.51 (test/support/nova_external_event.py), and
 * the guest's own report (its kernel's /sys/block sizes on its console) must show the new size.
 *
 * Plus attach conflicts on the libvirt driver, answered as Nova answers them: a volume already
 * attached here or elsewhere (400 InvalidVolume), a device name in use (409 DevicePathInUse), and
 * never two disks on one device name.
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { bootGuest, domainXml, virsh, type GuestShell as Guest } from '../../src/lab/index.js';
import { loadConfig } from '../../src/config.js';
import { startService, type RunningService } from '../../src/app.js';
import { SqliteStore } from '../../src/db/sqlite.js';
import { issueToken } from '../../src/auth/tokens.js';
import { buildDiskXml } from '../../src/virt/libvirt/domxml.js';
import { BlockBackend, FileBackend } from '../../src/volume/backends/index.js';
import { acquireLab, e2eMissing, type E2eLab } from '../support/e2e.js';
import { describeReal } from '../support/real.js';
import { novaclientMissing, novaPost } from '../support/novaclient.js';

const MiB = 1024 * 1024;
const START = 32 * MiB;
const TENANT = 'e2e0events00000000000000000000000';

describeReal(e2eMissing() ?? novaclientMissing())('volume-extended from novaclient grows a real guest; attach conflicts on libvirt', () => {
  let env: E2eLab | undefined;
  let guest: Guest | undefined;
  let service: RunningService | undefined;
  let token = '';
  let dataDir = '';
  const off = { server: randomUUID(), name: '' };
  const vols: Record<'raw' | 'block', { id: string; dev: string }> = { raw: { id: '', dev: '' }, block: { id: '', dev: '' } };
  const log = (m: string): void => console.log(`[e2e-events] ${m}`);
  const t0 = Date.now();

  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- JSON answers, read field by field
  const call = async (api: 'compute' | 'volume', method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> => {
    const base = api === 'compute' ? service!.computeUrl : service!.volumeUrl!;
    const res = await fetch(`${base}${path}`, {
      method,
      headers: { 'x-auth-token': token, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  };
  const createVolume = async (type: 'file' | 'block'): Promise<string> => {
    const r = await call('volume', 'POST', `/v3/${TENANT}/volumes`, { volume: { size_bytes: START, volume_type: type, ...(type === 'file' ? { format: 'raw' } : {}) } });
    expect(r.status, JSON.stringify(r.body)).toBeLessThan(300);
    return r.body.volume.id as string;
  };
  const attach = (server: string, volumeId: string, device?: string) =>
    call('compute', 'POST', `/v2/${TENANT}/servers/${server}/os-volume_attachments`, { volumeAttachment: { volumeId, ...(device ? { device } : {}) } });
  const attachments = async (server: string): Promise<Array<{ volumeId: string; device: string }>> =>
    (await call('compute', 'GET', `/v2/${TENANT}/servers/${server}/os-volume_attachments`)).body.volumeAttachments;
  const G = (): Guest => {
    if (!guest) throw new Error('no guest');
    return guest;
  };

  beforeAll(async () => {
    env = await acquireLab(log);
    const { lab, work } = env;
    log(`lab ready after ${Date.now() - t0} ms (${env.owned ? 'private' : 'reused'})`);
    guest = await bootGuest(lab, { name: `oe-events-${process.pid}`, projectId: TENANT, disks: [] });
    log(`guest ready after ${Date.now() - t0} ms`);

    // A second domain of the project, defined and shut off: "attached elsewhere" needs another server.
    off.name = `oe-events-off-${process.pid}`;
    const offXml = join(work, 'off.xml');
    const offDisk = join(work, 'off.raw');
    writeFileSync(offDisk, '');
    truncateSync(offDisk, 8 * MiB);
    writeFileSync(
      offXml,
      domainXml({
        name: off.name,
        uuid: off.server,
        kernel: lab.kernel,
        initrd: lab.initrd,
        cmdline: lab.cmdline,
        consoleLog: join(work, 'off.console.log'),
        shellSocket: join(work, 'off.sock'),
        projectId: TENANT,
        disks: [buildDiskXml({ volumeId: randomUUID(), kind: 'file', format: 'raw', source: offDisk }, 'vdb')],
      }),
    );
    await virsh(lab, ['define', offXml]);

    dataDir = join(work, 'data');
    mkdirSync(dataDir, { recursive: true });
    const config = loadConfig({}, {
      dataDir,
      driver: 'libvirt',
      libvirtUri: lab.libvirtUri,
      defaultProject: TENANT,
      backends: ['file', 'block'],
      port: 0,
      volumePort: 0,
      syncIntervalMs: 0,
      logLevel: 'silent',
    });
    const tokenStore = new SqliteStore(join(config.dataDir, 'online-extend.sqlite'));
    token = (await issueToken(tokenStore, { userId: 'cinder', projectId: TENANT, roles: ['admin', 'service'], ttlMs: 3_600_000 })).token;
    await tokenStore.close();
    service = await startService(config);

    vols.raw.id = await createVolume('file');
    vols.block.id = await createVolume('block');
    for (const v of Object.values(vols)) {
      const r = await attach(G().uuid, v.id);
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      v.dev = (r.body.volumeAttachment.device as string).replace('/dev/', '');
      expect(await G().waitForSize(v.dev, START, 15_000)).toBe(START);
    }
    log(`setup done after ${Date.now() - t0} ms: ${JSON.stringify(vols)}`);
  }, 300_000);

  afterAll(async () => {
    const t = Date.now();
    if (service) {
      for (const a of await attachments(G().uuid).catch(() => [])) {
        await call('compute', 'DELETE', `/v2/${TENANT}/servers/${G().uuid}/os-volume_attachments/${a.volumeId}`).catch(() => undefined);
      }
      const all = await call('volume', 'GET', `/v3/${TENANT}/volumes`).catch(() => undefined);
      for (const v of (all?.body?.volumes ?? []) as Array<{ id: string }>) await call('volume', 'DELETE', `/v3/${TENANT}/volumes/${v.id}`).catch(() => undefined);
      await service.close().catch((e: unknown) => console.error('service close failed', e));
    }
    await guest?.destroy().catch((e: unknown) => console.error('guest destroy failed', e));
    if (env && off.name) await virsh(env.lab, ['undefine', off.name]).catch(() => undefined);
    await env?.release();
    log(`teardown ${Date.now() - t} ms; whole file ${Date.now() - t0} ms`);
  }, 120_000);

  it("grows the guest's view of a raw file and a loop device to their new storage size when novaclient posts volume-extended", async () => {
    const target = START + 16 * MiB;
    // What Cinder did before it told Nova: the storage grew (the raw file; the loop device's file).
    expect(await new FileBackend({ dir: join(dataDir, 'volumes', 'file') }).extend(vols.raw.id, target)).toBe(target);
    expect(await new BlockBackend({ dir: join(dataDir, 'volumes', 'block') }).extend(vols.block.id, target)).toBe(target);
    expect((await G().sizes())[vols.block.dev]).toBe(START);

    const answer = await novaPost(service!.computeUrl, token, [
      { name: 'volume-extended', server_uuid: G().uuid, tag: vols.raw.id },
      { name: 'volume-extended', server_uuid: G().uuid, tag: vols.block.id },
    ]);
    expect(answer.events.map((e) => [e.tag, e.code, e.status])).toEqual([
      [vols.raw.id, 200, 'completed'],
      [vols.block.id, 200, 'completed'],
    ]);

    // The guest's own report, exactly.
    expect(await G().waitForSize(vols.raw.dev, target, 20_000)).toBe(target);
    expect(await G().waitForSize(vols.block.dev, target, 20_000)).toBe(target);

    const actions = (await call('compute', 'GET', `/v2/${TENANT}/servers/${G().uuid}/os-instance-actions`)).body.instanceActions as Array<{ action: string; request_id: string }>;
    const latest = actions.find((a) => a.action === 'extend_volume')!;
    for (let i = 0; i < 100; i++) {
      const one = (await call('compute', 'GET', `/v2/${TENANT}/servers/${G().uuid}/os-instance-actions/${latest.request_id}`)).body.instanceAction;
      if (one.events?.[0]?.finish_time) {
        expect(one.events[0]).toMatchObject({ event: 'compute_extend_volume', result: 'Success' });
        expect(one.user_id).toBe('cinder');
        return;
      }
      await sleep(100);
    }
    throw new Error('the extend_volume action did not finish');
  });

  it('changes nothing when the host sees no more than the guest (never smaller)', async () => {
    const before = await G().sizes();
    const answer = await novaPost(service!.computeUrl, token, [{ name: 'volume-extended', server_uuid: G().uuid, tag: vols.raw.id }]);
    expect(answer.events[0]).toMatchObject({ code: 200 });
    await sleep(1_000); // the guest reports a change within 0.1–0.3 s
    expect((await G().sizes())[vols.raw.dev]).toBe(before[vols.raw.dev]);
  });

  it('refuses a volume already attached to this server with 400 "already attached"', async () => {
    const r = await attach(G().uuid, vols.raw.id);
    expect(r.status).toBe(400);
    expect(r.body.badRequest).toMatchObject({ error_code: 'InvalidVolume', message: `Invalid volume: volume ${vols.raw.id} already attached` });
  });

  it('refuses a volume attached to another server with 400, naming it', async () => {
    const r = await attach(off.server, vols.block.id);
    expect(r.status).toBe(400);
    expect(r.body.badRequest).toMatchObject({ error_code: 'InvalidVolume', message: `Invalid volume: volume ${vols.block.id} is already attached to instances: ${G().uuid}` });
  });

  it('refuses a device name in use with 409, leaves the volume available, and never puts two disks on one device', async () => {
    const id = await createVolume('file');
    const r = await attach(G().uuid, id, `/dev/${vols.raw.dev}`);
    expect(r.status, JSON.stringify(r.body)).toBe(409);
    expect(r.body.conflictingRequest).toMatchObject({ error_code: 'DevicePathInUse', message: `The supplied device path (/dev/${vols.raw.dev}) is in use.` });
    expect((await call('volume', 'GET', `/v3/${TENANT}/volumes/${id}`)).body.volume.status).toBe('available');
    // Without a name it gets a free one.
    const ok = await attach(G().uuid, id);
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    const devices = (await attachments(G().uuid)).map((a) => a.device);
    expect(devices).toHaveLength(3);
    expect(new Set(devices).size).toBe(3);
    // The hypervisor agrees: every target of the domain once.
    const targets = (await virsh(env!.lab, ['domblklist', G().uuid])).split('\n').map((l) => l.trim().split(/\s+/)[0]).filter((t) => t && /^vd[a-z]+$/.test(t));
    expect(new Set(targets).size).toBe(targets.length);
    expect(await G().waitForSize(ok.body.volumeAttachment.device.replace('/dev/', ''), START, 15_000)).toBe(START);
  });
});
