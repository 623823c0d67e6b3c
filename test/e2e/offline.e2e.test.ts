/**
 * Issue D item 4 end to end: the volume of a shut-off server is extended offline, on a real
 * persistent libvirt domain, through the whole product as `online-extend serve` runs it.
 *
 * Per backend (file raw, block): create a 1 GiB volume and attach it through the APIs to a
 * running, defined (persistent) lab guest; write a pattern in the guest; pull the plug (`virsh
 * destroy`: the domain stays defined, its disk with its `<serial>` in its definition);
 * `os-extend` to 2 GiB → 202 → the volume ends `in-use` at 2 GiB, the extend recorded as offline
 * (the storage grew through the backend, the host rescanned, compute's assist_extend answered
 * InstanceStopped and the host's measured size was confirmed); start the domain: the guest's own
 * report shows 2 GiB and the pattern reads back the same.
 */
import { expect, it } from 'vitest';
import { ApiError } from '../../src/rpc/httpClient.js';
import { e2eMissing } from '../support/e2e.js';
import { createAttached, guestData, useLabService } from '../support/labSuite.js';
import { describeReal } from '../support/real.js';

const GiB = 2 ** 30;
const PROJECT = 'e2eofflineproject';
const PATTERN_MIB = 4;

describeReal(e2eMissing())('offline extend of a shut-off persistent server\'s volume through the volume API (file raw, block)', () => {
  const { S, G, log } = useLabService({ project: PROJECT, guestName: `oe-off-e2e-${process.pid}`, persistentGuest: true }, 'offline-e2e');
  const data = guestData(G, PATTERN_MIB);



  async function extendOffline(create: Record<string, unknown>): Promise<void> {
    const ls = S();
    const g = G();
    const { v, dev } = await createAttached(S(), create, GiB);
    const md5 = await data.writePattern(dev);

    let t = Date.now();
    await g.powerOff();
    log(`${String(create.volume_type)}: domain shut off (${Date.now() - t} ms)`);

    t = Date.now();
    const res = await ls.extend(v.id, { 'os-extend': { new_size: 2 } });
    expect(res.status).toBe(202);
    const done = await ls.settle(v.id, 60_000);
    expect(done, JSON.stringify(done.extend)).toMatchObject({ status: 'in-use', size_bytes: 2 * GiB, extend: null });
    log(`${String(create.volume_type)}: extended offline to 2 GiB ${Date.now() - t} ms after the API call`);
    const action = (await ls.volumeActions(v.id)).find((a) => a.request_id === res.requestId);
    expect(action).toMatchObject({ action: 'extend', result: 'Success' });
    expect(action?.message).toMatch(/offline/);
    expect(action?.details).toMatchObject({ mode: 'offline', bytes: 2 * GiB });
    // The guest was asked (assist_extend) and answered that its server is stopped.
    const calls = new Map((await ls.instanceActions()).map((a) => [a.request_id, a]));
    const assists = action!.compute_request_ids.map((id) => calls.get(id)).filter((a) => a?.action === 'extend_volume');
    expect(assists.length).toBeGreaterThanOrEqual(1);
    expect(assists.every((a) => a?.result === 'Error')).toBe(true);

    t = Date.now();
    await g.start();
    log(`${String(create.volume_type)}: domain started and guest ready (${Date.now() - t} ms)`);
    const after = await g.deviceForSerial(v.id, 20_000);
    expect(after, 'the volume is still attached after the restart').toBeDefined();
    expect(await g.waitForSize(after!, 2 * GiB, 20_000)).toBe(2 * GiB);
    expect(await data.md5(after!)).toBe(md5);
    expect(await ls.show(v.id)).toMatchObject({ status: 'in-use', size_bytes: 2 * GiB, attachments: [{ server_id: g.uuid }] });

    await ls.detach(v.id);
    await ls.remove(v.id);
    const gone = (await ls.show(v.id).catch((e: unknown) => e)) as ApiError;
    expect(gone).toBeInstanceOf(ApiError);
    expect(gone.status).toBe(404);
  }

  it('file raw: a 1 GiB volume of a shut-off server extends offline to 2 GiB; after a start the guest reports 2 GiB, data intact', async () => {
    await extendOffline({ name: 'off-raw', size: 1, volume_type: 'file' });
  }, 180_000);

  it('block (loop device): a 1 GiB volume of a shut-off server extends offline to 2 GiB; after a start the guest reports 2 GiB, data intact', async () => {
    await extendOffline({ name: 'off-block', size: 1, volume_type: 'block' });
  }, 180_000);
});
