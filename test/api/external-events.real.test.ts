/**
 * os-server-external-events against real clients, on the fake driver (no guest): what Cinder
 * posts, through python-novaclient's own API at 2.51 (test/support/nova_external_event.py), after
 * the volume's file grew out of band; and tempest's own schema of the 2.1 answer. The same post
 * against a real guest: test/e2e/external-event.e2e.test.ts.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { FileBackend } from '../../src/volume/backends/index.js';
import type { FakeDriver } from '../../src/virt/fake/driver.js';
import { describeReal } from '../support/real.js';
import { judge, tempestMissing } from '../support/tempestSchemas.js';
import { novaclientMissing, novaPost } from '../support/novaclient.js';
import { makeService, PROJECT, SERVER, type ServiceHarness } from '../support/service.js';

const MiB = 2 ** 20;
let h: ServiceHarness;
let volumeId: string;
const missing = novaclientMissing() ?? tempestMissing();

describeReal(missing)('os-server-external-events with the real clients (fake driver)', () => {
  beforeAll(async () => {
    h = await makeService();
    volumeId = (await h.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { size_bytes: 64 * MiB } })).body.volume.id;
    await h.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId } });
  });
  afterAll(async () => h?.cleanup());

  it("grows the guest to the volume's new size when novaclient posts what Cinder posts", async () => {
    // Cinder grew the volume: its file, through the backend, while attached.
    const backend = new FileBackend({ dir: join(h.config.dataDir, 'volumes', 'file') });
    expect(await backend.extend(volumeId, 96 * MiB)).toBe(96 * MiB);
    const disk = () => (h.service.driver as FakeDriver).snapshot(SERVER).disks.find((d) => d.volumeId === volumeId)!;
    expect(disk().guestBytes).toBe(64 * MiB);

    const answer = await novaPost(h.service.computeUrl, h.token, [{ name: 'volume-extended', server_uuid: SERVER, tag: volumeId }]);
    expect(answer).toEqual({ api_version: '2.51', events: [{ name: 'volume-extended', server_uuid: SERVER, tag: volumeId, status: 'completed', code: 200 }] });

    for (let i = 0; i < 200 && disk().guestBytes !== 96 * MiB; i++) await new Promise((r) => setTimeout(r, 25));
    expect(disk().guestBytes).toBe(96 * MiB);
    const actions = (await h.compute.request<{ instanceActions: Array<{ action: string; request_id: string }> }>('GET', `/v2/${PROJECT}/servers/${SERVER}/os-instance-actions`)).body.instanceActions;
    expect(actions[0]?.action).toBe('extend_volume');
  });

  it('answers a 2.1 network event in the shape tempest’s own schema requires', async () => {
    const res = await fetch(`${h.service.computeUrl}/v2.1/os-server-external-events`, {
      method: 'POST',
      headers: { 'x-auth-token': h.token, 'content-type': 'application/json' },
      body: JSON.stringify({ events: [{ name: 'network-changed', server_uuid: SERVER, tag: 'port-1' }] }),
    });
    const verdicts = judge([{ schema: 'compute.v2_1.server_external_events.create', status: res.status, body: await res.json() }]);
    expect(verdicts).toEqual([{ schema: 'compute.v2_1.server_external_events.create', ok: true, error: null }]);
  });
});
