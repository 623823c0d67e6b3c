/**
 * Tempest as the judge: POST /servers, DELETE /servers/{id} and the flavor reads, as this service
 * answers them on the fake driver, checked with tempest 33's own strict 2.1 schemas
 * (test/support/tempestSchemas.ts), on every compute prefix. Real tier: needs Debian's tempest.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { judge, tempestMissing, type TempestCase } from '../support/tempestSchemas.js';
import { describeReal } from '../support/real.js';
import { TENANT, makeComputeApp, type TestComputeApp } from '../support/computeApp.js';

describeReal(tempestMissing())('server create/delete and flavors, judged by tempest’s 2.1 schemas', () => {
  let t: TestComputeApp;
  beforeAll(async () => {
    t = await makeComputeApp();
    await t.store.putImage({ id: 'img', name: 'i', kind: 'kernel', diskPath: null, diskFormat: null, kernelPath: '/k', ramdiskPath: '/r', cmdline: '', minDiskGb: 0, minRamMb: 0, createdAt: '2026-11-30T00:00:00.000Z' });
    await t.store.putFlavor({ id: 'flv', name: 'small', vcpus: 1, ramMb: 256, diskGb: 1, ephemeralGb: 0, swapMb: 0, isPublic: true, description: null });
    await t.store.putFlavor({ id: 'swapped', name: 'with swap', vcpus: 2, ramMb: 512, diskGb: 2, ephemeralGb: 1, swapMb: 128, isPublic: false, description: 'd' });
  });
  afterAll(async () => {
    await t.servers.idle();
    await t.close();
  });

  const call = async (method: 'GET' | 'POST' | 'DELETE', url: string, schema: string, payload?: unknown): Promise<TempestCase> => {
    const res = await t.app.inject({ method, url, headers: { 'x-auth-token': t.tokens.admin, ...(payload ? {} : { 'content-type': 'application/json' }) }, ...(payload ? { payload } : {}) });
    return { schema, status: res.statusCode, body: res.body === '' ? null : (JSON.parse(res.body) as unknown), headers: res.headers as Record<string, string> };
  };

  it.each([['/v2.1'], [`/v2.1/${TENANT}`], [`/v2/${TENANT}`]])('passes on %s', async (prefix) => {
    const cases: TempestCase[] = [];
    const created = await call('POST', `${prefix}/servers`, 'compute.v2_1.servers.create_server_with_admin_pass', { server: { name: 'tempest', imageRef: 'img', flavorRef: 'flv' } });
    cases.push(created);
    await t.servers.idle();
    const id = (created.body as { server: { id: string } }).server.id;
    cases.push(await call('DELETE', `${prefix}/servers/${id}`, 'compute.v2_1.servers.delete_server'));
    cases.push(await call('GET', `${prefix}/flavors`, 'compute.v2_1.flavors.list_flavors'));
    cases.push(await call('GET', `${prefix}/flavors/detail`, 'compute.v2_1.flavors.list_flavors_details'));
    cases.push(await call('GET', `${prefix}/flavors/flv`, 'compute.v2_1.flavors.create_update_get_flavor_details'));
    cases.push(await call('GET', `${prefix}/flavors/swapped`, 'compute.v2_1.flavors.create_update_get_flavor_details'));
    cases.push(await call('GET', `${prefix}/flavors/flv/os-extra_specs`, 'compute.v2_1.flavors_extra_specs.set_get_flavor_extra_specs'));
    const verdicts = judge(cases);
    expect(verdicts.filter((v) => !v.ok)).toEqual([]);
    expect(verdicts).toHaveLength(7);
    await t.servers.idle();
  });
});
