/**
 * Tempest judges the volume API: live answers at volume microversions 3.0 and 3.42, for a project
 * member and an admin, checked with tempest's own strict schemas (the ones its v3 volumes client
 * validates with for each call: create_volume, show_volume, list_volumes_no_detail,
 * list_volumes_with_detail, update_volume, extend_volume and delete_volume, which have no body), plus the
 * microversion echo tempest's volume client requires. Needs Debian's tempest package.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { judge, tempestMissing, type TempestCase } from '../support/tempestSchemas.js';
import { describeReal } from '../support/real.js';
import { PROJECT, SERVER, type ServiceHarness } from '../support/service.js';
import { makeWireService, wire, type WireAnswer } from '../support/volumeWire.js';

const describe = describeReal(tempestMissing());

let h: ServiceHarness & { member: string };
beforeAll(async () => {
  h = await makeWireService();
});
afterAll(async () => h?.cleanup());

/** A judged case from an answer: bodies of schemas without one are handed over raw, so any byte fails them. */
function caseOf(schema: string, a: WireAnswer): TempestCase {
  return { schema: `volume.volumes.${schema}`, status: a.status, body: a.text === '' ? null : a.json };
}

const ROLES = ['member', 'admin'] as const;
const VERSIONS = ['3.0', '3.42'] as const;

describe.each(VERSIONS.flatMap((version) => ROLES.map((role) => ({ version, role }))))('volume $version as $role: tempest’s schemas pass', ({ version, role }) => {
  const token = () => (role === 'admin' ? h.token : h.member);
  const call = (method: string, path: string, body?: unknown) => wire(h.service.volumeUrl!, method, path, token(), version, body);
  const settle = async (id: string, want: string) => {
    for (let i = 0; i < 500; i++) {
      const a = await call('GET', `/v3/${PROJECT}/volumes/${id}`);
      if ((a.json as { volume: { status: string } }).volume.status === want) return a;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`volume ${id} never became ${want}`);
  };

  it('create, show, list, detail, extend and delete answer as Cinder, with the version echoed', async () => {
    const answers: Array<[string, WireAnswer]> = [];
    const created = await call('POST', `/v3/${PROJECT}/volumes`, { volume: { size: 1, name: `conf-${version}-${role}` } });
    answers.push(['create_volume', created]);
    const id = (created.json as { volume: { id: string } }).volume.id;
    answers.push(['show_volume', await settle(id, 'available')]);
    answers.push(['list_volumes_no_detail', await call('GET', `/v3/${PROJECT}/volumes`)]);
    answers.push(['list_volumes_with_detail', await call('GET', `/v3/${PROJECT}/volumes/detail`)]);
    // A page with volumes_links (an absolute next link).
    answers.push(['list_volumes_with_detail', await call('GET', `/v3/${PROJECT}/volumes/detail?limit=1`)]);
    answers.push(['list_volumes_no_detail', await call('GET', `/v3/${PROJECT}/volumes?limit=1`)]);
    const extended = await call('POST', `/v3/${PROJECT}/volumes/${id}/action`, { 'os-extend': { new_size: 2 } });
    answers.push(['extend_volume', extended]);
    answers.push(['show_volume', await settle(id, 'available')]);
    // Cinder's update (cinder rename, openstack volume set --name): tempest's update_volume.
    const updated = await call('PUT', `/v3/${PROJECT}/volumes/${id}`, { volume: { name: `renamed-${version}`, description: 'd', metadata: { k: 'v' } } });
    answers.push(['update_volume', updated]);
    answers.push(['delete_volume', await call('DELETE', `/v3/${PROJECT}/volumes/${id}`)]);

    const verdicts = judge(answers.map(([schema, a]) => caseOf(schema, a)));
    expect(verdicts.filter((v) => !v.ok)).toEqual([]);
    expect(verdicts).toHaveLength(answers.length);
    for (const [, a] of answers) expect(a.headers.get('openstack-api-version')).toBe(`volume ${version}`);
    // Tempest's extend and delete schemas have no body: not a byte.
    expect([extended.text, answers.at(-1)![1].text]).toEqual(['', '']);
    expect((answers[7]![1].json as { volume: { size: number } }).volume.size).toBe(2);
    expect((updated.json as { volume: Record<string, unknown> }).volume).toMatchObject({ name: `renamed-${version}`, description: 'd', metadata: { k: 'v' }, size: 2 });
    expect((await call('GET', `/v3/${PROJECT}/volumes/${id}`)).status).toBe(404);
  });

  it('an attached volume shows its attachment as Cinder, and extends (3.42) or is refused (3.0)', async () => {
    const created = await call('POST', `/v3/${PROJECT}/volumes`, { volume: { size: 1, name: `att-${version}-${role}` } });
    const id = (created.json as { volume: { id: string } }).volume.id;
    await settle(id, 'available');
    await h.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: id } });
    const shown = await settle(id, 'in-use');
    const listed = await call('GET', `/v3/${PROJECT}/volumes/detail`);
    const extended = await call('POST', `/v3/${PROJECT}/volumes/${id}/action`, { 'os-extend': { new_size: 2 } });
    const cases: TempestCase[] = [caseOf('show_volume', shown), caseOf('list_volumes_with_detail', listed)];
    if (version === '3.42') {
      cases.push(caseOf('extend_volume', extended));
      const after = await settle(id, 'in-use');
      cases.push(caseOf('show_volume', after));
      expect((after.json as { volume: { size: number } }).volume.size).toBe(2);
    } else {
      // Below 3.42 Cinder extends `available` volumes only: its 400, and nothing changed.
      expect(extended.status).toBe(400);
      expect(extended.text).toMatch(/must be 'available' to extend, currently in-use/);
      expect((await settle(id, 'in-use')).json).toMatchObject({ volume: { size: 1 } });
    }
    expect(judge(cases).filter((v) => !v.ok)).toEqual([]);
    const att = (shown.json as { volume: { attachments: Array<Record<string, unknown>> } }).volume.attachments;
    expect(att).toEqual([expect.objectContaining({ id, volume_id: id, server_id: SERVER, device: expect.stringMatching(/^\/dev\/vd[a-z]+$/) })]);
    expect(att[0]!.host_name === null).toBe(role === 'member');
    await h.compute.request('DELETE', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments/${id}`);
    await settle(id, 'available');
    expect((await call('DELETE', `/v3/${PROJECT}/volumes/${id}`)).status).toBe(202);
  });
});

describe('the create answer is not the show answer (tempest’s create_volume refuses the extension keys)', () => {
  it('an admin’s create carries no os-vol-* key while show carries them, and each passes its own schema only', async () => {
    const created = await wire(h.service.volumeUrl!, 'POST', `/v3/${PROJECT}/volumes`, h.token, '3.42', { volume: { size: 1 } });
    const id = (created.json as { volume: { id: string } }).volume.id;
    const shown = await wire(h.service.volumeUrl!, 'GET', `/v3/${PROJECT}/volumes/${id}`, h.token, '3.42');
    expect(Object.keys((created.json as { volume: object }).volume).filter((k) => k.startsWith('os-vol-'))).toEqual([]);
    expect((shown.json as { volume: Record<string, unknown> }).volume).toMatchObject({ 'os-vol-tenant-attr:tenant_id': PROJECT, 'os-vol-host-attr:host': expect.stringMatching(/^.+@.+#.+$/) });
    const verdicts = judge([
      caseOf('create_volume', created),
      caseOf('show_volume', shown),
      // The show answer under the create schema: the extension keys are extra there.
      { ...caseOf('create_volume', shown), status: 202 },
    ]);
    expect(verdicts.map((v) => v.ok)).toEqual([true, true, false]);
    expect(verdicts[2]!.error).toMatch(/os-vol-/);
    await wire(h.service.volumeUrl!, 'DELETE', `/v3/${PROJECT}/volumes/${id}`, h.token, '3.42');
  });
});
