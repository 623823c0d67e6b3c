/** The store contract: one suite, run against every Store implementation. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Store } from '../../src/db/store.js';

export function describeStoreContract(name: string, makeStore: () => Promise<{ store: Store; teardown(): Promise<void> }>): void {
  describe(`Store contract: ${name}`, () => {
    let store: Store;
    let teardown: () => Promise<void>;
    beforeAll(async () => {
      ({ store, teardown } = await makeStore());
    });
    afterAll(async () => teardown());

    const server = (id: string, projectId: string, volumes: string[]) => ({
      id,
      name: `vm-${id}`,
      projectId,
      state: 'active' as const,
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

    it('records lazy (unawaited) actions too, visible to the next read, bulk included', async () => {
      const base = { serverId: 's3', action: 'get_blockdev', event: 'compute_get_blockdev', userId: 'u', projectId: 'p1', message: null, result: 'Success' as const };
      for (let i = 0; i < 70; i++) {
        const t = new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString();
        void store.recordAction({ ...base, requestId: `req-lazy-${String(i).padStart(3, '0')}`, startTime: t, finishTime: t, details: { n: i } }, { lazy: true });
      }
      const list = await store.listActions('s3');
      expect(list).toHaveLength(70);
      expect(list[0]).toMatchObject({ requestId: 'req-lazy-069', details: { n: 69 }, result: 'Success' });
      expect((await store.getAction('s3', 'req-lazy-000'))?.details).toEqual({ n: 0 });
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
  });
}
