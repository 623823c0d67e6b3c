import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { ComputeManager } from '../../src/compute/manager.js';
import { LocalComputeRpc } from '../../src/compute/rpc.js';
import { SqliteStore } from '../../src/db/sqlite.js';
import { FakeDriver } from '../../src/virt/fake/driver.js';

describe('LocalComputeRpc.capabilities', () => {
  let store: SqliteStore | undefined;
  afterEach(() => store?.close());

  it.each([
    ['a driver that extends', { extendVolume: true }],
    ['a driver that does not', { extendVolume: false }],
  ])("answers %s with the manager's driver name and capabilities, the same answer every call", async (_what, capabilities) => {
    store = new SqliteStore(':memory:');
    const driver = new FakeDriver({ servers: [], capabilities });
    const rpc = new LocalComputeRpc(new ComputeManager({ host: 'h1', driver, store, defaultProjectId: 'p', logger: pino({ level: 'silent' }) }));
    const first = rpc.capabilities('h1');
    expect(await first).toEqual({ driver: driver.name, capabilities: driver.capabilities });
    expect((await first).capabilities.extendVolume).toBe(capabilities.extendVolume);
    // One settled answer shared by every call: nothing is made per request.
    expect(rpc.capabilities('h1')).toBe(first);
  });

  it('rejects (never throws) a host that is not its own', async () => {
    store = new SqliteStore(':memory:');
    const rpc = new LocalComputeRpc(new ComputeManager({ host: 'h1', driver: new FakeDriver({ servers: [] }), store, defaultProjectId: 'p', logger: pino({ level: 'silent' }) }));
    let answer: Promise<unknown> | undefined;
    expect(() => (answer = rpc.capabilities('h2'))).not.toThrow();
    await expect(answer).rejects.toThrow('no compute manager for host h2');
  });
});
