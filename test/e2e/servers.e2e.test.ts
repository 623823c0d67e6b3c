/**
 * Servers for the peer suite on a real lab: the lab's guest registered as the image and flavor
 * `lab-guest` (as `online-extend lab register` does), a server created through POST /servers on
 * the libvirt driver boots (the guest itself reports ready on its console), takes a volume (the
 * guest sees it), and DELETE /servers detaches the volume through the volume service first: the
 * volume is available again, the domain and its instance directory are gone.
 *
 * One private lab (own libvirtd and tgtd in a temp dir), the whole service as `serve` runs it.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startService, type RunningService } from '../../src/app.js';
import { issueToken } from '../../src/auth/tokens.js';
import { registerLabGuest } from '../../src/cli/lab.js';
import { loadConfig } from '../../src/config.js';
import { SqliteStore } from '../../src/db/sqlite.js';
import { GuestShell, labDown, labServiceFlags, labUp, virsh, type LabInfo } from '../../src/lab/index.js';
import { ApiClient, ApiError } from '../../src/rpc/httpClient.js';
import { e2eMissing } from '../support/e2e.js';
import { describeReal } from '../support/real.js';

const P = 'e2eservers';
const MiB = 2 ** 20;

async function until<T>(fn: () => Promise<T | undefined | false>, ms: number, what: string): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describeReal(e2eMissing())('a server created through the API on the lab (libvirt driver)', () => {
  let dir: string;
  let lab: LabInfo | undefined;
  let service: RunningService | undefined;
  let compute: ApiClient;
  let volume: ApiClient;
  let dataDir: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'oe-srv-e2e-'));
    lab = await labUp({ dir });
    dataDir = join(dir, 'service');
    const config = loadConfig({}, labServiceFlags(lab, { dataDir, backends: ['file'], projectId: P, logLevel: 'silent' }));
    service = await startService(config);
    const store = new SqliteStore(join(dataDir, 'online-extend.sqlite'));
    let token: string;
    try {
      expect(await registerLabGuest(store, lab)).toEqual({ image: 'lab-guest', flavor: 'lab-guest' });
      ({ token } = await issueToken(store, { userId: 'e2e', projectId: P, roles: ['admin'], ttlMs: 3_600_000 }));
    } finally {
      await store.close();
    }
    compute = new ApiClient({ url: service.computeUrl, token });
    volume = new ApiClient({ url: service.volumeUrl!, token });
  });

  afterAll(async () => {
    await service?.close().catch(() => undefined);
    await labDown({ dir }).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  });

  const status = (id: string) =>
    compute.request<{ server: { status: string; 'OS-EXT-STS:task_state': string | null } }>('GET', `/v2/${P}/servers/${id}`).then(
      (r) => r.body.server,
      (e: unknown) => (e instanceof ApiError && e.status === 404 ? undefined : Promise.reject(e)),
    );

  it('boots from the registered image, takes a volume the guest sees, and on delete leaves the volume available and no domain', async () => {
    const created = await compute.request<{ server: { id: string; adminPass: string } }>('POST', `/v2.1/${P}/servers`, {
      server: { name: 'peer-suite', imageRef: 'lab-guest', flavorRef: 'lab-guest' },
    });
    expect(created.status).toBe(202);
    const id = created.body.server.id;
    const active = await until(async () => {
      const s = await status(id);
      if (s?.status === 'ERROR') throw new Error('the build failed');
      return s?.status === 'ACTIVE' && s['OS-EXT-STS:task_state'] === null && s;
    }, 60_000, 'ACTIVE');
    expect(active.status).toBe('ACTIVE');

    // The guest itself: its console (serial 0) and shell (serial 1) are in its instance directory.
    const instance = join(dataDir, 'instances', id);
    const guest = new GuestShell({ libvirtUri: lab!.libvirtUri, uuid: id, name: `instance-${id}`, consoleLog: join(instance, 'console.log'), shellSocket: join(instance, 'console.sock') });
    await guest.waitReady(60_000);
    expect((await guest.sizes()).vda).toBe(1024 * MiB);

    const v = (await volume.request<{ volume: { id: string } }>('POST', `/v3/${P}/volumes`, { volume: { size_bytes: 64 * MiB, volume_type: 'file' } })).body.volume;
    const att = await compute.request<{ volumeAttachment: { device: string } }>('POST', `/v2/${P}/servers/${id}/os-volume_attachments`, { volumeAttachment: { volumeId: v.id } });
    expect(att.body.volumeAttachment.device).toBe('/dev/vdb');
    expect(await guest.waitForSize('vdb', 64 * MiB, 30_000)).toBe(64 * MiB);

    expect((await compute.request('DELETE', `/v2/${P}/servers/${id}`)).status).toBe(204);
    await until(async () => (await status(id)) === undefined, 60_000, 'the server gone (404)');
    const after = (await volume.request<{ volume: { status: string; attachments: unknown[] } }>('GET', `/v3/${P}/volumes/${v.id}`)).body.volume;
    expect(after).toMatchObject({ status: 'available', attachments: [] });
    const domains = await virsh(lab!, ['list', '--all', '--uuid']);
    expect(domains).not.toContain(id);
    expect(existsSync(instance)).toBe(false);
    expect((await volume.request('DELETE', `/v3/${P}/volumes/${v.id}`)).status).toBe(202);
  });
});
