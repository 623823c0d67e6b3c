/** The store contract: one suite, run against every Store implementation. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FsGrowthRecord, Store } from '../../src/db/store.js';
import type { ServerState } from '../../src/virt/driver.js';

export function describeStoreContract(name: string, makeStore: () => Promise<{ store: Store; teardown(): Promise<void> }>): void {
  describe(`Store contract: ${name}`, () => {
    let store: Store;
    let teardown: () => Promise<void>;
    beforeAll(async () => {
      ({ store, teardown } = await makeStore());
    });
    afterAll(async () => teardown());

    const volume = (id: string, projectId: string) => ({
      id,
      projectId,
      name: id,
      sizeBytes: 2 ** 30,
      status: 'available' as const,
      backend: 'file',
      format: 'raw' as const,
      serverId: null,
      serverProjectId: null,
      device: null,
      extend: null,
    });
    const server = (id: string, projectId: string, volumes: string[]) => ({
      id,
      name: `vm-${id}`,
      projectId,
      state: 'active' as ServerState,
      attachments: volumes.map((v, i) => ({ serverId: id, volumeId: v, device: `vd${'bcd'[i]}`, kind: 'block' as const, readonly: false })),
    });

    it('syncs a host inventory, replacing attachments and dropping servers gone from the host', async () => {
      await store.syncServers('h1', [server('s1', 'p1', ['v1', 'v2']), server('s2', 'p2', [])]);
      await store.syncServers('h2', [server('s3', 'p1', ['v3'])]);
      expect((await store.getServer('s1'))?.attachments.map((a) => a.volumeId)).toEqual(['v1', 'v2']);
      await store.syncServers('h1', [server('s1', 'p1', ['v2'])]);
      expect((await store.getServer('s1'))?.attachments.map((a) => a.volumeId)).toEqual(['v2']);
      expect(await store.getServer('s2')).toBeUndefined();
      expect((await store.getServer('s3'))?.host).toBe('h2');
      expect((await store.listServers({ projectId: 'p1' })).map((s) => s.id).sort()).toEqual(['s1', 's3']);
    });

    it('records when a server found on the host was first seen, and keeps it while the server changes', async () => {
      await store.syncServers('h-seen', [server('s-seen', 'p1', [])]);
      const first = await store.getServer('s-seen');
      expect(first?.discoveredAt).toEqual(expect.any(String));
      expect(first).not.toHaveProperty('createdAt');
      await new Promise((r) => setTimeout(r, 5));
      await store.syncServers('h-seen', [server('s-seen', 'p1', ['v-seen'])]);
      const later = await store.getServer('s-seen');
      expect(later?.updatedAt).not.toBe(first?.updatedAt);
      expect(later?.discoveredAt).toBe(first?.discoveredAt);
    });

    it('applies a task state only from the expected one', async () => {
      expect(await store.setTaskState('s1', 'migrating', null)).toBe(true);
      expect(await store.setTaskState('s1', 'resizing', null)).toBe(false);
      expect((await store.getServer('s1'))?.taskState).toBe('migrating');
      expect(await store.setTaskState('s1', null, 'migrating')).toBe(true);
      expect((await store.getServer('s1'))?.taskState).toBeNull();
    });

    it('keeps the task state across an inventory sync', async () => {
      await store.setTaskState('s1', 'migrating', null);
      await store.syncServers('h1', [server('s1', 'p1', ['v2'])]);
      expect((await store.getServer('s1'))?.taskState).toBe('migrating');
      await store.setTaskState('s1', null, 'migrating');
    });

    it('records the vCPUs and memory a sync reports, rewrites a server whose size changed, and records none where none was measured', async () => {
      const sized = { ...server('s-size', 'p1', []), vcpus: 2, memoryMb: 2048 };
      await store.syncServers('h-size', [sized, server('s-unsized', 'p1', [])]);
      expect(await store.getServer('s-size')).toMatchObject({ vcpus: 2, memoryMb: 2048 });
      const unsized = await store.getServer('s-unsized');
      expect(unsized).not.toHaveProperty('vcpus');
      expect(unsized).not.toHaveProperty('memoryMb');
      expect(await store.syncServers('h-size', [sized, server('s-unsized', 'p1', [])])).toMatchObject({ updated: 0, unchanged: 2 });
      expect(await store.syncServers('h-size', [{ ...sized, memoryMb: 4096 }, { ...server('s-unsized', 'p1', []), vcpus: 1 }])).toMatchObject({ updated: 2, unchanged: 0 });
      expect(await store.getServer('s-size')).toMatchObject({ vcpus: 2, memoryMb: 4096 });
      expect(await store.getServer('s-unsized')).toMatchObject({ vcpus: 1 });
      // One server alone: a size the driver no longer measures is gone from the record too.
      expect(await store.upsertServer('h-size', server('s-size', 'p1', []))).toBe('updated');
      expect(await store.getServer('s-size')).not.toHaveProperty('vcpus');
      expect(await store.upsertServer('h-size', { ...sized, vcpus: 8 })).toBe('updated');
      expect((await store.listServers({ projectId: 'p1' })).find((x) => x.id === 's-size')).toMatchObject({ vcpus: 8, memoryMb: 2048 });
      expect(await store.upsertServer('h-size', { ...sized, vcpus: 8 })).toBe('unchanged');
      await store.syncServers('h-size', []);
    });

    describe('servers compute builds (POST /servers)', () => {
      const built = (id: string) => ({
        id,
        name: `built-${id}`,
        projectId: 'p-built',
        userId: 'u-built',
        createdAt: '2026-11-30T04:00:00.000Z',
        imageRef: 'img-1',
        flavorRef: 'flv-1',
        metadata: { role: 'db' },
        taskState: 'scheduling',
      });

      it('creates a building server with its creation fields, and refuses an id that is taken', async () => {
        expect(await store.createServer('hb', built('b1'))).toBe(true);
        const s = await store.getServer('b1');
        expect(s).toMatchObject({ state: 'building', taskState: 'scheduling', host: 'hb', userId: 'u-built', createdAt: '2026-11-30T04:00:00.000Z' });
        expect(s).toMatchObject({ imageRef: 'img-1', flavorRef: 'flv-1', metadata: { role: 'db' } });
        expect(await store.createServer('hb', { ...built('b1'), name: 'other' })).toBe(false);
        expect((await store.getServer('b1'))?.name).toBe('built-b1');
      });

      it('keeps a building or failed server the host does not list, and drops it once it is active and gone', async () => {
        await store.createServer('hb', built('b2'));
        await store.syncServers('hb', []);
        expect((await store.getServer('b2'))?.state).toBe('building');
        expect(await store.removeServer('hb', 'b2')).toBe(false);
        const fault = { code: 500, message: 'no luck', created: '2026-11-30T04:00:01.000Z' };
        expect(await store.setServerState('b2', { state: 'error', taskState: null, fault }, 'scheduling')).toBe(true);
        await store.syncServers('hb', []);
        expect((await store.getServer('b2'))?.fault).toEqual(fault);
        expect(await store.setServerState('b2', { state: 'active', taskState: null, fault: null }, null)).toBe(true);
        expect((await store.getServer('b2'))?.fault).toBeUndefined();
        await store.syncServers('hb', []);
        expect(await store.getServer('b2')).toBeUndefined();
      });

      it('keeps a server the API put in ERROR with a fault in ERROR while the host reports its guest running, until the API changes it', async () => {
        await store.createServer('hb', built('b5'));
        const fault = { code: 409, message: 'delete failed', created: '2026-11-30T04:00:02.000Z' };
        expect(await store.setServerState('b5', { state: 'error', taskState: null, fault }, 'scheduling')).toBe(true);
        await store.syncServers('hb', [server('b5', 'p1', [])]);
        expect(await store.getServer('b5')).toMatchObject({ state: 'error', fault });
        await store.upsertServer('hb', server('b5', 'p1', []));
        expect(await store.getServer('b5')).toMatchObject({ state: 'error', fault });
        // Without a fault, the hypervisor's state is written as before.
        expect(await store.setServerState('b5', { state: 'error', taskState: null, fault: null }, null)).toBe(true);
        await store.syncServers('hb', [server('b5', 'p1', [])]);
        expect((await store.getServer('b5'))?.state).toBe('active');
      });

      it('moves vm state and task state together only from the expected task state', async () => {
        await store.createServer('hb', built('b3'));
        expect(await store.setServerState('b3', { state: 'building', taskState: 'spawning' }, 'networking')).toBe(false);
        expect(await store.setServerState('b3', { state: 'building', taskState: 'networking' }, 'scheduling')).toBe(true);
        expect(await store.setServerState('b3', { state: 'active', taskState: null }, 'networking')).toBe(true);
        expect(await store.getServer('b3')).toMatchObject({ state: 'active', taskState: null });
      });

      it('keeps the creation fields when the host lists the server and a sync rewrites it', async () => {
        await store.createServer('hb', built('b4'));
        await store.setServerState('b4', { state: 'active', taskState: null }, 'scheduling');
        await store.syncServers('hb', [{ id: 'b4', name: 'renamed', projectId: 'p-built', state: 'shutoff', attachments: [] }]);
        await store.upsertServer('hb', { id: 'b4', name: 'renamed', projectId: 'p-built', state: 'active', attachments: [] });
        expect(await store.getServer('b4')).toMatchObject({ name: 'renamed', state: 'active', userId: 'u-built', imageRef: 'img-1', metadata: { role: 'db' } });
      });

      it('deletes a server whatever its state, with its attachments', async () => {
        await store.createServer('hb', built('b5'));
        expect(await store.deleteServer('b5')).toBe(true);
        expect(await store.getServer('b5')).toBeUndefined();
        expect(await store.deleteServer('b5')).toBe(false);
        for (const id of ['b1', 'b3', 'b4']) await store.deleteServer(id);
      });
    });

    describe('flavors and images', () => {
      const flavor = (id: string, ramMb: number) => ({ id, name: `f-${id}`, vcpus: 1, ramMb, diskGb: 1, ephemeralGb: 0, swapMb: 0, isPublic: true, description: null });
      const image = (id: string, createdAt: string) => ({
        id,
        name: `i-${id}`,
        kind: 'kernel' as const,
        diskPath: null,
        diskFormat: null,
        kernelPath: '/k',
        ramdiskPath: '/r',
        cmdline: 'console=ttyS0',
        minDiskGb: 0,
        minRamMb: 64,
        createdAt,
      });

      it('stores, lists (by RAM), reads and deletes flavors; an id is never stored twice', async () => {
        expect(await store.putFlavor(flavor('big', 2048))).toBe(true);
        expect(await store.putFlavor(flavor('small', 256))).toBe(true);
        expect(await store.putFlavor({ ...flavor('small', 512), name: 'again' })).toBe(false);
        expect((await store.listFlavors()).map((f) => f.id)).toEqual(['small', 'big']);
        expect(await store.getFlavor('small')).toEqual(flavor('small', 256));
        expect(await store.deleteFlavor('small')).toBe(true);
        expect(await store.deleteFlavor('small')).toBe(false);
        expect(await store.getFlavor('small')).toBeUndefined();
        await store.deleteFlavor('big');
      });

      it('stores, lists (oldest first), reads and deletes images of both kinds', async () => {
        const disk = { ...image('d', '2026-01-02T00:00:00.000Z'), kind: 'disk' as const, diskPath: '/img.qcow2', diskFormat: 'qcow2' as const, kernelPath: null, ramdiskPath: null, cmdline: null };
        expect(await store.putImage(disk)).toBe(true);
        expect(await store.putImage(image('k', '2026-01-01T00:00:00.000Z'))).toBe(true);
        expect(await store.putImage(image('k', '2026-01-03T00:00:00.000Z'))).toBe(false);
        expect((await store.listImages()).map((i) => i.id)).toEqual(['k', 'd']);
        expect(await store.getImage('d')).toEqual(disk);
        expect(await store.deleteImage('k')).toBe(true);
        expect(await store.getImage('k')).toBeUndefined();
        await store.deleteImage('d');
      });
    });

    it('records instance actions from start to finish, newest first', async () => {
      const base = { serverId: 's1', action: 'extend_volume', event: 'compute_extend_volume', userId: 'u', projectId: 'p1', message: null };
      await store.startAction({ ...base, requestId: 'req-1', startTime: '2026-01-01T00:00:00.000Z', details: { bytes: 1 } });
      await store.finishAction('req-1', 's1', 'Success', null, { bytes: 2 });
      await store.recordAction({ ...base, requestId: 'req-2', startTime: '2026-01-01T00:00:01.000Z', finishTime: '2026-01-01T00:00:02.000Z', result: 'Error', message: 'boom', details: {} });
      const list = await store.listActions('s1');
      expect(list.map((a) => a.requestId)).toEqual(['req-2', 'req-1']);
      const one = await store.getAction('s1', 'req-1');
      expect(one?.result).toBe('Success');
      expect(one?.finishTime).not.toBeNull();
      expect(one?.details).toEqual({ bytes: 2 });
      expect(await store.getAction('s2', 'req-1')).toBeUndefined();
    });

    it('lists the unfinished actions of one name, oldest first, on every server', async () => {
      const base = { action: 'attach_volume', event: 'compute_attach_volume', userId: 'u', projectId: 'p1', message: null, startTime: '2026-01-01T00:00:00.000Z', details: { n: 1 } };
      await store.startAction({ ...base, serverId: 's-u2', requestId: 'req-u-2' });
      await store.startAction({ ...base, serverId: 's-u1', requestId: 'req-u-1' });
      await store.startAction({ ...base, serverId: 's-u1', requestId: 'req-u-3' });
      await store.finishAction('req-u-3', 's-u1', 'Success', null);
      await store.startAction({ ...base, action: 'detach_volume', serverId: 's-u1', requestId: 'req-u-4' });
      const open = await store.listUnfinishedActions('attach_volume');
      expect(open.map((a) => [a.serverId, a.requestId])).toEqual([['s-u1', 'req-u-1'], ['s-u2', 'req-u-2']]);
      expect(open[0]).toMatchObject({ finishTime: null, result: null, details: { n: 1 } });
    });

    it('pages instance actions newest first (by their time-ordered request ids) by limit and marker, with no gap or repeat', async () => {
      const base = { serverId: 's-paged', action: 'extend_volume', event: 'compute_extend_volume', userId: 'u', projectId: 'p1', message: null, result: 'Success' as const, details: {} };
      for (let i = 0; i < 25; i++) {
        const t = new Date(Date.UTC(2026, 0, 1, 0, 0, Math.floor(i / 3))).toISOString();
        await store.recordAction({ ...base, requestId: `req-p-${String(i).padStart(2, '0')}`, startTime: t, finishTime: t });
      }
      const all = (await store.listActions('s-paged')).map((a) => a.requestId);
      expect(all).toHaveLength(25);
      expect(all[0]).toBe('req-p-24');
      const seen: string[] = [];
      let marker: string | undefined;
      for (;;) {
        const page = await store.listActions('s-paged', { limit: 7, marker });
        expect(page.length).toBeLessThanOrEqual(7);
        seen.push(...page.map((a) => a.requestId));
        if (page.length < 7) break;
        marker = page.at(-1)!.requestId;
      }
      expect(seen).toEqual(all);
      expect(await store.listActions('s-paged', { limit: 0 })).toEqual([]);
      expect(await store.listActions('s-paged', { limit: 5, marker: all.at(-1) })).toEqual([]);
    });

    it('refuses a marker that is not in the listing with MarkerNotFound, for every list', async () => {
      await store.createVolume(volume('vol-m1', 'p-m'));
      await store.startVolumeAction({ requestId: 'req-vm', volumeId: 'vol-m1', action: 'extend', userId: 'u', projectId: 'p-m', startTime: '2026-01-01T00:00:00.000Z', message: null, computeRequestIds: [], details: {} });
      const cases: Array<[string, () => Promise<unknown>]> = [
        ['instance actions, unknown request id', () => store.listActions('s-paged', { limit: 1, marker: 'req-nope' })],
        ["instance actions, another server's request id", () => store.listActions('s1', { limit: 1, marker: 'req-p-00' })],
        ['volume actions, unknown request id', () => store.listVolumeActions('vol-m1', { limit: 1, marker: 'req-nope' })],
        ['volumes, unknown volume id', () => store.listVolumes({ projectId: 'p-m' }, { limit: 1, marker: 'vol-nope' })],
        ["volumes, another project's volume id", () => store.listVolumes({ projectId: 'p-other' }, { limit: 1, marker: 'vol-m1' })],
        ['servers, unknown server id', () => store.listServers({ projectId: 'p1' }, { limit: 1, marker: 's-nope' })],
        ["servers, another project's server id", () => store.listServers({ projectId: 'p2' }, { limit: 1, marker: 's1' })],
      ];
      for (const [name, call] of cases) {
        await expect(call(), name).rejects.toMatchObject({ code: 'MarkerNotFound', status: 400 });
      }
    });

    it('keeps an encrypted volume\'s format and payload offset in its record, and its passphrase only where getVolumeEncryptionKey reads it', async () => {
      await store.createVolume({ ...volume('vol-luks-1', 'p-luks'), encryption: 'luks' }, { encryptionKey: 'c2VjcmV0LXBhc3NwaHJhc2U=' });
      await store.createVolume(volume('vol-plain-1', 'p-luks'));
      const made = await store.getVolume('vol-luks-1');
      expect(made).toMatchObject({ encryption: 'luks', payloadOffset: null });
      expect(JSON.stringify(made)).not.toContain('c2VjcmV0LXBhc3NwaHJhc2U=');
      expect(JSON.stringify(await store.listVolumes({ projectId: 'p-luks' }))).not.toContain('c2VjcmV0LXBhc3NwaHJhc2U=');
      expect(await store.updateVolume('vol-luks-1', ['available'], { payloadOffset: 2068480 })).toBe(true);
      expect(await store.getVolume('vol-luks-1')).toMatchObject({ encryption: 'luks', payloadOffset: 2068480 });
      expect(await store.getVolumeEncryptionKey('vol-luks-1')).toBe('c2VjcmV0LXBhc3NwaHJhc2U=');
      expect(await store.getVolume('vol-plain-1')).toMatchObject({ encryption: null, payloadOffset: null });
      expect(await store.getVolumeEncryptionKey('vol-plain-1')).toBeUndefined();
      expect(await store.getVolumeEncryptionKey('vol-nope')).toBeUndefined();
      await store.deleteVolume('vol-luks-1');
      expect(await store.getVolumeEncryptionKey('vol-luks-1')).toBeUndefined();
    });

    it('counts volumes by status in one query, as the full listing grouped by status', async () => {
      const before = await store.countVolumesByStatus();
      await store.createVolume(volume('vol-count-1', 'p-count'));
      await store.createVolume(volume('vol-count-2', 'p-count'));
      await store.createVolume({ ...volume('vol-count-3', 'p-count'), status: 'error' });
      const after = await store.countVolumesByStatus();
      expect((after.available ?? 0) - (before.available ?? 0)).toBe(2);
      expect((after.error ?? 0) - (before.error ?? 0)).toBe(1);
      const grouped: Record<string, number> = {};
      for (const v of await store.listVolumes()) grouped[v.status] = (grouped[v.status] ?? 0) + 1;
      expect(after).toEqual(grouped);
    });

    it('pages volumes oldest first and volume actions newest first', async () => {
      for (let i = 0; i < 5; i++) await store.createVolume(volume(`vol-pg-${i}`, 'p-pg'));
      await store.createVolume(volume('vol-pg-other', 'p-pg-other'));
      const all = (await store.listVolumes({ projectId: 'p-pg' })).map((v) => v.id);
      expect(all.sort()).toEqual(['vol-pg-0', 'vol-pg-1', 'vol-pg-2', 'vol-pg-3', 'vol-pg-4']);
      const inOrder = (await store.listVolumes({ projectId: 'p-pg' })).map((v) => v.id);
      const first = await store.listVolumes({ projectId: 'p-pg' }, { limit: 2 });
      const second = await store.listVolumes({ projectId: 'p-pg' }, { limit: 2, marker: first.at(-1)!.id });
      const third = await store.listVolumes({ projectId: 'p-pg' }, { limit: 2, marker: second.at(-1)!.id });
      expect([...first, ...second, ...third].map((v) => v.id)).toEqual(inOrder);
      expect(third).toHaveLength(1);

      for (let i = 0; i < 4; i++) {
        await store.startVolumeAction({
          requestId: `req-va-${i}`,
          volumeId: 'vol-pg-0',
          action: 'extend',
          userId: 'u',
          projectId: 'p-pg',
          startTime: `2026-01-01T00:00:0${i}.000Z`,
          message: null,
          computeRequestIds: [],
          details: {},
        });
      }
      const a1 = await store.listVolumeActions('vol-pg-0', { limit: 3 });
      const a2 = await store.listVolumeActions('vol-pg-0', { limit: 3, marker: a1.at(-1)!.requestId });
      expect([...a1, ...a2].map((a) => a.requestId)).toEqual(['req-va-3', 'req-va-2', 'req-va-1', 'req-va-0']);
    });

    it('pages servers of a project by name, then id', async () => {
      await store.syncServers('h-pg', ['c', 'a', 'b', 'a2'].map((n, i) => ({ ...server(`s-pg-${i}`, 'p-pg', []), name: n === 'a2' ? 'a' : n })));
      const all = (await store.listServers({ projectId: 'p-pg' })).map((s) => s.id);
      expect(all).toEqual(['s-pg-1', 's-pg-3', 's-pg-2', 's-pg-0']);
      const p1 = await store.listServers({ projectId: 'p-pg' }, { limit: 3 });
      const p2 = await store.listServers({ projectId: 'p-pg' }, { limit: 3, marker: p1.at(-1)!.id });
      expect([...p1, ...p2].map((s) => s.id)).toEqual(all);
      await store.syncServers('h-pg', []);
    });

    it('syncs by difference: an unchanged inventory writes nothing', async () => {
      const inventory = [server('s-d1', 'p-d', ['v-d1', 'v-d2']), server('s-d2', 'p-d', ['v-d3']), server('s-d3', 'p-d', [])];
      expect(await store.syncServers('h-d', inventory)).toEqual({ added: 3, updated: 0, removed: 0, unchanged: 0 });
      const before = await store.listServers({ projectId: 'p-d' });
      await new Promise((r) => setTimeout(r, 5)); // so a rewrite would show in updatedAt
      expect(await store.syncServers('h-d', structuredClone(inventory).reverse())).toEqual({ added: 0, updated: 0, removed: 0, unchanged: 3 });
      expect(await store.listServers({ projectId: 'p-d' })).toEqual(before);
    });

    it('syncs by difference: a changed attachment updates only that server', async () => {
      const before = new Map((await store.listServers({ projectId: 'p-d' })).map((s) => [s.id, s]));
      await new Promise((r) => setTimeout(r, 5));
      const changed = [server('s-d1', 'p-d', ['v-d1', 'v-d2']), { ...server('s-d2', 'p-d', ['v-d3']), attachments: [{ ...server('s-d2', 'p-d', ['v-d3']).attachments[0]!, device: 'vdz' }] }, server('s-d3', 'p-d', [])];
      expect(await store.syncServers('h-d', changed)).toEqual({ added: 0, updated: 1, removed: 0, unchanged: 2 });
      const after = new Map((await store.listServers({ projectId: 'p-d' })).map((s) => [s.id, s]));
      expect(after.get('s-d1')).toEqual(before.get('s-d1'));
      expect(after.get('s-d3')).toEqual(before.get('s-d3'));
      expect(after.get('s-d2')?.attachments.map((a) => a.device)).toEqual(['vdz']);
      expect(after.get('s-d2')?.updatedAt).not.toBe(before.get('s-d2')?.updatedAt);
      expect((await store.getServer('s-d2'))?.attachments.map((a) => a.device)).toEqual(['vdz']);
    });

    it('syncs by difference: a state change, a new and a removed server are each one write, and task states survive', async () => {
      expect(await store.setTaskState('s-d3', 'migrating', null)).toBe(true);
      const next = [{ ...server('s-d1', 'p-d', ['v-d1', 'v-d2']), state: 'paused' as ServerState }, server('s-d3', 'p-d', []), server('s-d0', 'p-d', ['v-d9'])];
      expect(await store.syncServers('h-d', next)).toEqual({ added: 1, updated: 1, removed: 1, unchanged: 1 });
      expect((await store.getServer('s-d1'))?.state).toBe('paused');
      expect(await store.getServer('s-d2')).toBeUndefined();
      expect((await store.getServer('s-d0'))?.attachments.map((a) => a.volumeId)).toEqual(['v-d9']);
      expect((await store.getServer('s-d3'))?.taskState).toBe('migrating');
      // A server another host now reports moves there: added on that host, its task state kept.
      expect(await store.syncServers('h-d2', [server('s-d3', 'p-d', [])])).toEqual({ added: 1, updated: 0, removed: 0, unchanged: 0 });
      expect(await store.getServer('s-d3')).toMatchObject({ host: 'h-d2', taskState: 'migrating' });
      expect(await store.syncServers('h-d', [{ ...server('s-d1', 'p-d', ['v-d1', 'v-d2']), state: 'paused' as ServerState }, server('s-d0', 'p-d', ['v-d9'])])).toEqual({
        added: 0,
        updated: 0,
        removed: 0,
        unchanged: 2,
      });
      await store.syncServers('h-d', []);
      await store.syncServers('h-d2', []);
      expect(await store.listServers({ projectId: 'p-d' })).toEqual([]);
    });

    it('syncs a large host by difference across many chunks, ids in any script included', async () => {
      // Ids whose order differs between UTF-16 (JavaScript) and UTF-8 bytes (SQL): a store that
      // cut its chunks in one order and read ranges in the other would rewrite servers.
      const id = (i: number) => (i % 3 === 0 ? `sx-\u{FFFD}-${i}` : i % 3 === 1 ? `sx-\u{1F600}-${i}` : `sx-${i}`);
      const big = Array.from({ length: 1500 }, (_, i) => server(id(i), 'p-big', i % 2 ? [`vb-${i}`] : []));
      expect(await store.syncServers('h-big', big)).toEqual({ added: 1500, updated: 0, removed: 0, unchanged: 0 });
      expect(await store.syncServers('h-big', big)).toEqual({ added: 0, updated: 0, removed: 0, unchanged: 1500 });
      // Changes spread over the whole range: first, middle and last ids removed, two added, one changed.
      const next = big.filter((_, i) => i !== 0 && i !== 700 && i !== 1499);
      next.push(server('sx-0000-new', 'p-big', []), server('sx-\u{1F600}-new', 'p-big', ['vb-new']));
      next[10] = { ...next[10]!, state: 'shutoff' };
      expect(await store.syncServers('h-big', next)).toEqual({ added: 2, updated: 1, removed: 3, unchanged: 1496 });
      const ids = new Set((await store.listServers({ projectId: 'p-big' })).map((s) => s.id));
      expect(ids).toEqual(new Set(next.map((s) => s.id)));
      expect((await store.getServer(next[10]!.id))?.state).toBe('shutoff');
      await store.syncServers('h-big', []);
      expect(await store.listServers({ projectId: 'p-big' })).toEqual([]);
    });

    it('upserts one server by difference: added, unchanged (nothing written), updated with its task state kept', async () => {
      expect(await store.upsertServer('h-u', server('s-u1', 'p-u', ['v-u1']))).toBe('added');
      const added = await store.getServer('s-u1');
      expect(added).toMatchObject({ host: 'h-u', projectId: 'p-u', state: 'active', taskState: null });
      expect(added?.attachments.map((a) => a.volumeId)).toEqual(['v-u1']);
      await new Promise((r) => setTimeout(r, 5)); // so a rewrite would show in updatedAt
      expect(await store.upsertServer('h-u', server('s-u1', 'p-u', ['v-u1']))).toBe('unchanged');
      expect(await store.getServer('s-u1')).toEqual(added);
      expect(await store.setTaskState('s-u1', 'migrating', null)).toBe(true);
      expect(await store.upsertServer('h-u', { ...server('s-u1', 'p-u', ['v-u1', 'v-u2']), state: 'paused' })).toBe('updated');
      const updated = await store.getServer('s-u1');
      expect(updated).toMatchObject({ host: 'h-u', state: 'paused', taskState: 'migrating' });
      expect(updated?.attachments.map((a) => a.volumeId)).toEqual(['v-u1', 'v-u2']);
      expect(updated?.updatedAt).not.toBe(added?.updatedAt);
      await store.setTaskState('s-u1', null, 'migrating');
    });

    it('moves a server another host now reports to that host, and removes a server only from the host it is recorded on', async () => {
      expect(await store.upsertServer('h-u2', server('s-u1', 'p-u', ['v-u1']))).toBe('added');
      expect(await store.getServer('s-u1')).toMatchObject({ host: 'h-u2' });
      expect(await store.removeServer('h-u', 's-u1')).toBe(false);
      expect(await store.getServer('s-u1')).toMatchObject({ host: 'h-u2' });
      expect(await store.removeServer('h-u2', 's-u1')).toBe(true);
      expect(await store.getServer('s-u1')).toBeUndefined();
      expect(await store.listServers({ projectId: 'p-u' })).toEqual([]);
      expect(await store.removeServer('h-u2', 's-u1')).toBe(false);
    });

    it('keeps a host sync and single-server writes in step: a later sync compares against what they wrote', async () => {
      const a = server('s-w1', 'p-w', ['v-w1']);
      const b = server('s-w2', 'p-w', []);
      const c = server('s-w3', 'p-w', ['v-w3']);
      expect(await store.syncServers('h-w', [a, b])).toEqual({ added: 2, updated: 0, removed: 0, unchanged: 0 });
      expect(await store.upsertServer('h-w', c)).toBe('added');
      expect(await store.upsertServer('h-w', { ...a, state: 'shutoff' })).toBe('updated');
      expect(await store.removeServer('h-w', b.id)).toBe(true);
      // The sync sees the host as the single-server writes left it: nothing to write.
      expect(await store.syncServers('h-w', [{ ...a, state: 'shutoff' }, c])).toEqual({ added: 0, updated: 0, removed: 0, unchanged: 2 });
      // And an inventory without the upserted server removes it.
      expect(await store.syncServers('h-w', [{ ...a, state: 'shutoff' }])).toEqual({ added: 0, updated: 0, removed: 1, unchanged: 1 });
      expect(await store.getServer(c.id)).toBeUndefined();
      // A server moved to another host by a single-server write is not the first host's any more.
      expect(await store.upsertServer('h-w2', { ...a, state: 'shutoff' })).toBe('added');
      expect(await store.syncServers('h-w', [])).toEqual({ added: 0, updated: 0, removed: 0, unchanged: 0 });
      expect(await store.getServer(a.id)).toMatchObject({ host: 'h-w2' });
      await store.syncServers('h-w2', []);
    });

    it('applies inventory writes in the order they were called, a single-server write after a sync under way', async () => {
      const many = Array.from({ length: 700 }, (_, i) => server(`s-o${i}`, 'p-o', []));
      const sync = store.syncServers('h-o', many);
      const upsert = store.upsertServer('h-o', { ...server('s-o5', 'p-o', ['v-o5']), state: 'paused' });
      const remove = store.removeServer('h-o', 's-o6');
      expect(await sync).toEqual({ added: 700, updated: 0, removed: 0, unchanged: 0 });
      expect(await upsert).toBe('updated');
      expect(await remove).toBe(true);
      expect(await store.getServer('s-o5')).toMatchObject({ state: 'paused' });
      expect(await store.getServer('s-o6')).toBeUndefined();
      // The reverse order: a sync called after a single-server write wins over it.
      const upsert2 = store.upsertServer('h-o', { ...server('s-o7', 'p-o', []), state: 'crashed' });
      const sync2 = store.syncServers('h-o', many);
      expect(await upsert2).toBe('updated');
      // s-o6 back, s-o5 and s-o7 as the inventory has them.
      expect(await sync2).toEqual({ added: 1, updated: 2, removed: 0, unchanged: 697 });
      expect(await store.getServer('s-o7')).toMatchObject({ state: 'active' });
      await store.syncServers('h-o', []);
    });

    it('stores tokens by hash with their roles and expiry', async () => {
      await store.putToken({ hash: 'abc', userId: 'u', projectId: 'p', roles: ['admin', 'member'], createdAt: '2026-01-01T00:00:00.000Z', expiresAt: '2026-01-02T00:00:00.000Z' });
      expect(await store.getToken('abc')).toMatchObject({ userId: 'u', roles: ['admin', 'member'], expiresAt: '2026-01-02T00:00:00.000Z' });
      expect(await store.getToken('nope')).toBeUndefined();
      await expect(store.putToken({ hash: 'abc', userId: 'x', projectId: 'p', roles: [], createdAt: '', expiresAt: '' })).rejects.toThrow();
    });

    it('lists tokens by user and project, oldest first', async () => {
      const t = (hash: string, userId: string, projectId: string, createdAt: string) => ({ hash, userId, projectId, roles: ['member'], createdAt, expiresAt: '2100-01-01T00:00:00.000Z' });
      await store.putToken(t('list-b', 'lister', 'p1', '2026-03-02T00:00:00.000Z'));
      await store.putToken(t('list-a', 'lister', 'p1', '2026-03-01T00:00:00.000Z'));
      await store.putToken(t('list-c', 'lister', 'p2', '2026-03-03T00:00:00.000Z'));
      await store.putToken(t('list-d', 'other', 'p1', '2026-03-04T00:00:00.000Z'));
      expect((await store.listTokens({ userId: 'lister' })).map((x) => x.hash)).toEqual(['list-a', 'list-b', 'list-c']);
      expect((await store.listTokens({ userId: 'lister', projectId: 'p1' })).map((x) => x.hash)).toEqual(['list-a', 'list-b']);
      expect((await store.listTokens({ projectId: 'p1' })).map((x) => x.hash)).toEqual(['list-a', 'list-b', 'list-d']);
      expect((await store.listTokens()).map((x) => x.hash)).toEqual(expect.arrayContaining(['abc', 'list-a', 'list-b', 'list-c', 'list-d']));
      expect(await store.listTokens({ userId: 'nobody' })).toEqual([]);
    });

    it('revokes one token by hash, and says whether it existed', async () => {
      await store.putToken({ hash: 'revoke-me', userId: 'r', projectId: 'p', roles: ['reader'], createdAt: '2026-01-01T00:00:00.000Z', expiresAt: '2100-01-01T00:00:00.000Z' });
      expect(await store.deleteToken('revoke-me')).toBe(true);
      expect(await store.getToken('revoke-me')).toBeUndefined();
      expect(await store.deleteToken('revoke-me')).toBe(false);
      expect(await store.getToken('abc')).toBeDefined();
    });

    it('removes the tokens expired at a given time and keeps the others', async () => {
      const t = (hash: string, expiresAt: string) => ({ hash, userId: 'exp', projectId: 'p', roles: ['member'], createdAt: '2026-01-01T00:00:00.000Z', expiresAt });
      await store.putToken(t('exp-past', '2026-05-01T00:00:00.000Z'));
      await store.putToken(t('exp-now', '2026-05-02T00:00:00.000Z'));
      await store.putToken(t('exp-future', '2026-05-02T00:00:00.001Z'));
      expect(await store.deleteExpiredTokens(new Date('2026-05-02T00:00:00.000Z'))).toBe(3); // with 'abc' (expired 2026-01-02)
      expect((await store.listTokens({ userId: 'exp' })).map((x) => x.hash)).toEqual(['exp-future']);
      expect(await store.getToken('abc')).toBeUndefined();
      expect(await store.getToken('list-a')).toBeDefined();
      expect(await store.deleteExpiredTokens(new Date('2026-05-02T00:00:00.000Z'))).toBe(0);
    });

    describe('volumes: conditional updates (compare-and-swap)', () => {
      const base = {
        projectId: 'p1',
        name: 'v',
        sizeBytes: 1024,
        status: 'in-use' as const,
        backend: 'file',
        format: 'raw' as const,
        serverId: 's1',
        serverProjectId: 'p1',
        device: 'vdb',
        extend: null,
      };
      let n = 0;
      const fresh = async (over: Record<string, unknown> = {}) => {
        const id = `vol-cas-${n++}`;
        await store.createVolume({ ...base, ...over, id });
        return (await store.getVolume(id))!;
      };

      it('starts a volume at version 0 and bumps the version on every applied update', async () => {
        const v = await fresh();
        expect(v.version).toBe(0);
        expect(await store.updateVolume(v.id, ['in-use'], { name: 'x' })).toBe(true);
        expect((await store.getVolume(v.id))!.version).toBe(1);
        expect(await store.updateVolume(v.id, ['available'], { name: 'y' })).toBe(false);
        expect((await store.getVolume(v.id))!).toMatchObject({ version: 1, name: 'x' });
      });

      it("sets Cinder's update fields (name, description, metadata) with an empty guard, whatever the status, and a missing volume answers false", async () => {
        const v = await fresh({ description: 'old', metadata: { a: '1', b: '2' } });
        expect(await store.updateVolume(v.id, {}, { name: 'renamed', description: null, metadata: { c: '3' } })).toBe(true);
        expect(await store.getVolume(v.id)).toMatchObject({ name: 'renamed', description: null, metadata: { c: '3' }, status: 'in-use', version: v.version + 1 });
        expect(await store.updateVolume(v.id, {}, { metadata: {} })).toBe(true);
        expect((await store.getVolume(v.id))!.metadata ?? {}).toEqual({});
        expect(await store.updateVolume('vol-cas-none', {}, { name: 'x' })).toBe(false);
      });

      it('applies only while every part of the guard holds, in one statement', async () => {
        const cases: Array<{ name: string; guard: Parameters<Store['updateVolume']>[1]; applies: boolean }> = [
          { name: 'status matches', guard: { status: ['in-use', 'error_extending'] }, applies: true },
          { name: 'status differs', guard: { status: ['available'] }, applies: false },
          { name: 'no status allowed at all', guard: { status: [] }, applies: false },
          { name: 'version matches', guard: { version: 0 }, applies: true },
          { name: 'version is stale', guard: { version: 7 }, applies: false },
          { name: 'attached, as required', guard: { attached: true }, applies: true },
          { name: 'required detached, but attached', guard: { attached: false }, applies: false },
          { name: 'size below the target', guard: { sizeBelow: 2048 }, applies: true },
          { name: 'size equal to the target', guard: { sizeBelow: 1024 }, applies: false },
          { name: 'size above the target', guard: { sizeBelow: 512 }, applies: false },
          { name: 'all parts hold', guard: { status: ['in-use'], version: 0, attached: true, sizeBelow: 4096 }, applies: true },
          { name: 'all but one hold', guard: { status: ['in-use'], version: 0, attached: true, sizeBelow: 1024 }, applies: false },
        ];
        for (const c of cases) {
          const v = await fresh();
          expect(await store.updateVolume(v.id, c.guard, { status: 'extending', sizeBytes: 9999 }), c.name).toBe(c.applies);
          const after = (await store.getVolume(v.id))!;
          if (c.applies) expect(after, c.name).toMatchObject({ status: 'extending', sizeBytes: 9999, version: 1 });
          else expect(after, c.name).toEqual(v);
        }
      });

      it('guards on the extend in the record by its request id', async () => {
        const extend = { requestId: 'req-a', targetBytes: 2048, step: 'storage' as const, startedAt: 't', deadline: 't', attempts: 0, hostBytes: null, error: null };
        const v = await fresh({ status: 'extending', extend });
        expect(await store.updateVolume(v.id, { extendRequestId: 'req-b' }, { status: 'in-use' })).toBe(false);
        expect(await store.updateVolume(v.id, { status: ['extending'], extendRequestId: 'req-a' }, { extend: { ...extend, step: 'rescan' } })).toBe(true);
        expect((await store.getVolume(v.id))!.extend).toMatchObject({ requestId: 'req-a', step: 'rescan' });
        const none = await fresh();
        expect(await store.updateVolume(none.id, { extendRequestId: 'req-a' }, { status: 'available' })).toBe(false);
      });

      it('lets exactly one of many concurrent swaps from the same version win', async () => {
        const v = await fresh();
        const results = await Promise.all(
          Array.from({ length: 20 }, (_, i) => store.updateVolume(v.id, { status: ['in-use'], version: v.version }, { status: 'extending', sizeBytes: 2048 + i * 512 })),
        );
        expect(results.filter(Boolean)).toHaveLength(1);
        expect((await store.getVolume(v.id))!.version).toBe(1);
      });
    });

    describe('guest filesystem growths (one record per extend)', () => {
      const growth = (volumeId: string, requestId: string, requestedAt: string, more: Partial<FsGrowthRecord> = {}): FsGrowthRecord => ({
        volumeId,
        requestId,
        requested: true,
        grown: null,
        reason: null,
        device: null,
        partitionGrown: null,
        fsType: null,
        mountpoint: null,
        fsBytesBefore: null,
        fsBytes: null,
        requestedAt,
        finishedAt: null,
        ...more,
      });

      it('records an extend asked to grow the filesystem, then replaces it with the outcome, every field read back as written', async () => {
        await store.createVolume(volume('vfs-1', 'p1'));
        await store.putFsGrowth(growth('vfs-1', 'req-a', '2026-11-30T10:00:00.000Z'));
        expect(await store.getFsGrowth('vfs-1', 'req-a')).toEqual(growth('vfs-1', 'req-a', '2026-11-30T10:00:00.000Z'));
        // Sizes past 2^32 and both booleans, to catch a column that truncates or maps them wrongly.
        const done = growth('vfs-1', 'req-a', '2026-11-30T10:00:00.000Z', {
          grown: true,
          device: '/dev/vdb1',
          partitionGrown: true,
          fsType: 'ext4',
          mountpoint: '/mnt/data',
          fsBytesBefore: 5 * 2 ** 30,
          fsBytes: 10 * 2 ** 30 - 4096,
          finishedAt: '2026-11-30T10:00:02.000Z',
        });
        await store.putFsGrowth(done);
        expect(await store.getFsGrowth('vfs-1', 'req-a')).toEqual(done);
        // The extend's start never overwrites an outcome already there.
        await store.putFsGrowth(growth('vfs-1', 'req-a', '2026-11-30T10:00:00.000Z'), { onlyIfAbsent: true });
        expect(await store.getFsGrowth('vfs-1', 'req-a')).toEqual(done);
        expect(await store.getFsGrowth('vfs-1', 'req-other')).toBeUndefined();
      });

      it('answers the newest record of each volume in one call, and nothing for volumes without one', async () => {
        await store.createVolume(volume('vfs-2', 'p1'));
        await store.createVolume(volume('vfs-3', 'p1'));
        await store.putFsGrowth(growth('vfs-2', 'req-1', '2026-11-30T10:00:00.000Z', { requested: false }));
        await store.putFsGrowth(growth('vfs-2', 'req-2', '2026-11-30T11:00:00.000Z', { grown: false, reason: 'no_guest_agent', finishedAt: '2026-11-30T11:00:01.000Z' }));
        await store.putFsGrowth(growth('vfs-3', 'req-3', '2026-11-30T09:00:00.000Z', { requested: false }));
        const latest = await store.latestFsGrowths(['vfs-2', 'vfs-3', 'vfs-none']);
        expect([...latest.keys()].sort()).toEqual(['vfs-2', 'vfs-3']);
        expect(latest.get('vfs-2')).toMatchObject({ requestId: 'req-2', grown: false, reason: 'no_guest_agent' });
        expect(latest.get('vfs-3')).toMatchObject({ requestId: 'req-3', requested: false, grown: null });
        expect((await store.latestFsGrowths([])).size).toBe(0);
      });

      it('removes the records with their volume', async () => {
        await store.createVolume(volume('vfs-4', 'p1'));
        await store.putFsGrowth(growth('vfs-4', 'req-4', '2026-11-30T10:00:00.000Z'));
        await store.deleteVolume('vfs-4');
        expect(await store.getFsGrowth('vfs-4', 'req-4')).toBeUndefined();
      });
    });

    describe('compute services (heartbeats)', () => {
      it('creates a service at its first heartbeat and moves only its updatedAt after, keeping its id', async () => {
        const t0 = new Date('2026-01-01T00:00:00.000Z');
        const a = await store.serviceHeartbeat('svc-h1', 'nova-compute', 'compute', t0);
        expect(a).toMatchObject({ host: 'svc-h1', binary: 'nova-compute', topic: 'compute', disabled: false, disabledReason: null, createdAt: t0.toISOString(), updatedAt: t0.toISOString() });
        const t1 = new Date(t0.getTime() + 10_000);
        const b = await store.serviceHeartbeat('svc-h1', 'nova-compute', 'compute', t1);
        expect(b).toEqual({ ...a, updatedAt: t1.toISOString() });
        const other = await store.serviceHeartbeat('svc-h2', 'nova-compute', 'compute', t1);
        expect(other.id).not.toBe(a.id);
        expect((await store.listServices({ binary: 'nova-compute' })).filter((s) => s.host.startsWith('svc-')).map((s) => s.host)).toEqual(['svc-h1', 'svc-h2']);
        expect(await store.listServices({ host: 'svc-h2' })).toEqual([other]);
        expect(await store.listServices({ host: 'svc-none' })).toEqual([]);
      });

      it('disables with a reason and enables (reason cleared), and deletes by id', async () => {
        const s = await store.serviceHeartbeat('svc-d', 'nova-compute', 'compute');
        expect(await store.setServiceDisabled('svc-d', 'nova-compute', true, 'maintenance')).toBe(true);
        expect((await store.listServices({ host: 'svc-d' }))[0]).toMatchObject({ disabled: true, disabledReason: 'maintenance' });
        // A heartbeat does not re-enable it.
        await store.serviceHeartbeat('svc-d', 'nova-compute', 'compute');
        expect((await store.listServices({ host: 'svc-d' }))[0]).toMatchObject({ disabled: true });
        expect(await store.setServiceDisabled('svc-d', 'nova-compute', false, 'ignored')).toBe(true);
        expect((await store.listServices({ host: 'svc-d' }))[0]).toMatchObject({ disabled: false, disabledReason: null });
        expect(await store.setServiceDisabled('svc-none', 'nova-compute', true, null)).toBe(false);
        expect(await store.deleteService(s.id)).toBe(true);
        expect(await store.deleteService(s.id)).toBe(false);
        expect(await store.listServices({ host: 'svc-d' })).toEqual([]);
      });
    });

    describe('extend leases (one workflow worker per extend)', () => {
      const extending = async (id: string) => {
        const extend = { requestId: `req-${id}`, targetBytes: 2 ** 31, step: 'storage' as const, startedAt: 't', deadline: 't', attempts: 0, hostBytes: null, error: null };
        await store.createVolume({ ...volume(id, 'p-lease'), status: 'extending', extend });
      };
      const t0 = new Date('2026-01-01T00:00:00.000Z');
      const at = (ms: number) => new Date(t0.getTime() + ms);

      it('grants a free lease, renews it for its owner, refuses it to another until it expires, then hands it over', async () => {
        await extending('lease-1');
        expect(await store.claimExtend('lease-1', 'w1', 1000, t0)).toBe(true);
        expect(await store.claimExtend('lease-1', 'w2', 1000, at(500))).toBe(false);
        expect(await store.claimExtend('lease-1', 'w1', 1000, at(900))).toBe(true); // renewed to 1900
        expect(await store.claimExtend('lease-1', 'w2', 1000, at(1500))).toBe(false);
        expect(await store.listClaimableExtends(at(1500))).not.toContain('lease-1');
        expect(await store.listClaimableExtends(at(1900))).toContain('lease-1');
        expect(await store.claimExtend('lease-1', 'w2', 1000, at(1900))).toBe(true);
        // The old owner's renewal finds it gone.
        expect(await store.renewExtendLeases('w1', 1000, at(1950))).not.toContain('lease-1');
        expect(await store.renewExtendLeases('w2', 1000, at(1950))).toContain('lease-1');
      });

      it('grants no lease on a volume that is not extending, or that does not exist', async () => {
        await store.createVolume(volume('lease-idle', 'p-lease'));
        expect(await store.claimExtend('lease-idle', 'w1', 1000, t0)).toBe(false);
        expect(await store.claimExtend('lease-none', 'w1', 1000, t0)).toBe(false);
        expect(await store.listClaimableExtends(t0)).not.toContain('lease-idle');
      });

      it('lets exactly one of many concurrent claims win', async () => {
        await extending('lease-race');
        const won = await Promise.all(Array.from({ length: 20 }, (_, i) => store.claimExtend('lease-race', `w${i}`, 60_000)));
        expect(won.filter(Boolean)).toHaveLength(1);
      });

      it('renews only unexpired leases, releases only its own, and drops the lease with the volume', async () => {
        await extending('lease-2');
        await extending('lease-3');
        expect(await store.claimExtend('lease-2', 'w9', 1000, t0)).toBe(true);
        expect(await store.claimExtend('lease-3', 'w9', 5000, t0)).toBe(true);
        expect(await store.renewExtendLeases('w9', 1000, at(2000))).toEqual(['lease-3']);
        await store.releaseExtend('lease-3', 'someone-else');
        expect(await store.claimExtend('lease-3', 'w8', 1000, at(2100))).toBe(false);
        await store.releaseExtend('lease-3', 'w9');
        expect(await store.claimExtend('lease-3', 'w8', 1000, at(2100))).toBe(true);
        await store.deleteVolume('lease-3');
        expect(await store.renewExtendLeases('w8', 1000, at(2200))).toEqual([]);
        await extending('lease-3b');
        expect(await store.listClaimableExtends(at(2200))).toContain('lease-3b');
      });
    });
  });
}
