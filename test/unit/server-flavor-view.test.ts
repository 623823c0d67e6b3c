// The flavor in Nova's server view, per microversion: a server created through the API shows its
// flavor; a server found on the host shows the host-defined flavor with the vCPUs and memory the
// driver measured, or 0 named in extra_specs where it measured nothing (never a made-up size).
import { describe, expect, it } from 'vitest';
import { ApiVersion } from '../../src/api/microversion.js';
import { HOST_DEFINED_FLAVOR_ID, UNMEASURED_EXTRA_SPEC, serverDetail, type ServerViewContext } from '../../src/api/routes/compute/views.js';
import type { FlavorRecord, ServerRecord } from '../../src/db/store.js';

const scope = { urlProject: 'p1', versionPath: '/v2.1' as const, base: 'http://127.0.0.1:8774' };
const found: ServerRecord = { id: 's1', name: 'guest', projectId: 'p1', host: 'h1', state: 'active', taskState: null, updatedAt: '2026-11-30T00:00:00Z', attachments: [] };
const flavor: FlavorRecord = { id: 'f1', name: 'm1.tiny', vcpus: 1, ramMb: 512, diskGb: 1, ephemeralGb: 0, swapMb: 0, isPublic: true, description: null };
const created: ServerRecord = { ...found, userId: 'u1', createdAt: '2026-11-29T00:00:00Z', imageRef: 'img', flavorRef: 'f1', metadata: {}, vcpus: 1, memoryMb: 512 };

function flavorOf(s: ServerRecord, version: string, f?: FlavorRecord): unknown {
  const ctx: ServerViewContext = { version: ApiVersion.parse(version)!, scope, extendedAttributes: false, hostStatus: false, flavor: f };
  return serverDetail(s, ctx).flavor;
}

const link = (id: string) => [{ rel: 'bookmark', href: `http://127.0.0.1:8774/p1/flavors/${id}` }];

describe('the flavor of a server found on the host', () => {
  it.each(['2.1', '2.3', '2.26', '2.46'])('%s: is {id: "host-defined", links}, whatever the driver measured', (version) => {
    for (const s of [found, { ...found, vcpus: 4, memoryMb: 4096 }]) {
      expect(flavorOf(s, version)).toEqual({ id: HOST_DEFINED_FLAVOR_ID, links: link(HOST_DEFINED_FLAVOR_ID) });
    }
  });

  it.each([
    { what: 'both measured', vcpus: 4, memoryMb: 4096, shows: { vcpus: 4, ram: 4096 }, unmeasured: undefined },
    { what: 'nothing measured', vcpus: undefined, memoryMb: undefined, shows: { vcpus: 0, ram: 0 }, unmeasured: 'vcpus,ram' },
    { what: 'only vCPUs measured', vcpus: 2, memoryMb: undefined, shows: { vcpus: 2, ram: 0 }, unmeasured: 'ram' },
    { what: 'only memory measured', vcpus: undefined, memoryMb: 1024, shows: { vcpus: 0, ram: 1024 }, unmeasured: 'vcpus' },
  ])('2.47 and 2.51, $what: the measured size, 0 for what was not measured, named in extra_specs', ({ vcpus, memoryMb, shows, unmeasured }) => {
    const s: ServerRecord = { ...found, ...(vcpus === undefined ? {} : { vcpus }), ...(memoryMb === undefined ? {} : { memoryMb }) };
    for (const version of ['2.47', '2.51']) {
      expect(flavorOf(s, version)).toEqual({
        original_name: HOST_DEFINED_FLAVOR_ID,
        ...shows,
        disk: 0,
        ephemeral: 0,
        swap: 0,
        extra_specs: unmeasured === undefined ? {} : { [UNMEASURED_EXTRA_SPEC]: unmeasured },
      });
    }
  });
});

describe('the flavor of a server created through the API', () => {
  it('is its own flavor: {id, links} before 2.47, its fields from 2.47 (not the measured size)', () => {
    expect(flavorOf(created, '2.46', flavor)).toEqual({ id: 'f1', links: link('f1') });
    expect(flavorOf({ ...created, vcpus: 8, memoryMb: 8192 }, '2.47', flavor)).toEqual({ original_name: 'm1.tiny', vcpus: 1, ram: 512, disk: 1, ephemeral: 0, swap: 0, extra_specs: {} });
  });

  it('is {} from 2.47 when its flavor is no longer registered, as Nova shows a flavor gone', () => {
    expect(flavorOf(created, '2.47', undefined)).toEqual({});
  });
});
