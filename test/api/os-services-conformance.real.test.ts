/**
 * os-services judged by tempest's own strict schemas (Debian's tempest, test/support/tempestSchemas.ts):
 * the list at every microversion where its shape changes up to our max (tempest's ServicesClient
 * picks compute.v2_1.services below 2.11 and compute.v2_11.services from 2.11 to 2.52), under
 * every URL form, with services up, down and disabled with a reason; and the 2.1 enable, disable
 * and disable-log-reason answers.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { COMPUTE_TOPIC, NOVA_COMPUTE } from '../../src/compute/services.js';
import { describeReal } from '../support/real.js';
import { judge, tempestMissing, type TempestCase } from '../support/tempestSchemas.js';
import { makeComputeApp, TENANT, type TestComputeApp } from '../support/computeApp.js';

const describeTempest = describeReal(tempestMissing());

describeTempest('tempest judges os-services', () => {
  let t: TestComputeApp;
  beforeAll(async () => {
    t = await makeComputeApp();
    // Beside the app's own host: one whose agent stopped reporting, and one disabled with a reason.
    await t.store.serviceHeartbeat('host-down', NOVA_COMPUTE, COMPUTE_TOPIC, new Date(Date.now() - 3_600_000));
    await t.store.serviceHeartbeat('host-off', NOVA_COMPUTE, COMPUTE_TOPIC);
    await t.store.setServiceDisabled('host-off', NOVA_COMPUTE, true, 'maintenance');
  });
  afterAll(async () => t?.close());

  async function get(url: string, version: string) {
    const res = await t.app.inject({ method: 'GET', url, headers: { 'x-auth-token': t.tokens.admin, 'x-openstack-nova-api-version': version } });
    return { status: res.statusCode, body: res.json() as { services: Array<Record<string, unknown>> } };
  }

  it("passes tempest's list_services schema at 2.1, 2.10, 2.11 and 2.51 under every URL form, with hosts up, down and disabled", async () => {
    const cases: Array<TempestCase & { what: string }> = [];
    for (const version of ['2.1', '2.10', '2.11', '2.51']) {
      const module = Number(version.split('.')[1]) >= 11 ? 'v2_11' : 'v2_1';
      for (const url of ['/v2.1/os-services', `/v2.1/${TENANT}/os-services`, `/v2/${TENANT}/os-services`]) {
        const res = await get(url, version);
        expect(res.body.services.map((s) => [s.host, s.state, s.status])).toEqual([
          [t.manager.host, 'up', 'enabled'],
          ['host-down', 'down', 'enabled'],
          ['host-off', 'up', 'disabled'],
        ]);
        cases.push({ what: `${url} at ${version}`, schema: `compute.${module}.services.list_services`, status: res.status, body: res.body });
      }
    }
    const verdicts = judge(cases);
    const failures = cases.flatMap((c, i) => (verdicts[i]!.ok ? [] : [`${c.what}: ${verdicts[i]!.error}\n${JSON.stringify(c.body)}`]));
    expect(failures, failures.join('\n\n')).toEqual([]);
  });

  it("passes tempest's enable, disable and disable_log_reason schemas", async () => {
    const put = async (action: string, body: Record<string, string>) => {
      const res = await t.app.inject({ method: 'PUT', url: `/v2.1/os-services/${action}`, headers: { 'x-auth-token': t.tokens.admin }, payload: body });
      return { status: res.statusCode, body: res.json() as unknown };
    };
    const host = t.manager.host;
    const cases: TempestCase[] = [
      { schema: 'compute.v2_1.services.enable_disable_service', ...(await put('disable', { host, binary: NOVA_COMPUTE })) },
      { schema: 'compute.v2_1.services.disable_log_reason', ...(await put('disable-log-reason', { host, binary: NOVA_COMPUTE, disabled_reason: 'patching' })) },
      { schema: 'compute.v2_1.services.enable_disable_service', ...(await put('enable', { host, binary: NOVA_COMPUTE })) },
    ];
    const verdicts = judge(cases);
    expect(verdicts.map((v) => v.error)).toEqual([null, null, null]);
    expect((await t.store.listServices({ host })).map((s) => s.disabled)).toEqual([false]);
  });

  it('a response tempest would refuse is refused: the checker is live', () => {
    const [verdict] = judge([{ schema: 'compute.v2_11.services.list_services', status: 200, body: { services: [{ id: 1, host: 'h', binary: 'nova-compute', zone: 'nova', status: 'enabled', state: 'up', updated_at: null, disabled_reason: null }] } }]);
    expect(verdict!.ok).toBe(false);
  });
});
