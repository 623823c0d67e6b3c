import { describe, expect, it } from 'vitest';
import { Coalescer } from '../../src/compute/locks.js';
import { KeyedMutex } from '../../src/util/keyedMutex.js';

const tick = (ms = 5) => new Promise((r) => setTimeout(r, ms));

describe('KeyedMutex', () => {
  it('runs calls on one key one at a time, in order, and survives a failure', async () => {
    const m = new KeyedMutex();
    const log: string[] = [];
    const job = (name: string, fail = false) => m.run('k', async () => {
      log.push(`${name}+`);
      await tick();
      log.push(`${name}-`);
      if (fail) throw new Error(name);
      return name;
    });
    const results = await Promise.allSettled([job('a'), job('b', true), job('c')]);
    expect(log).toEqual(['a+', 'a-', 'b+', 'b-', 'c+', 'c-']);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(m.size).toBe(0);
  });

  it('runs different keys in parallel', async () => {
    const m = new KeyedMutex();
    let running = 0;
    let peak = 0;
    const job = (k: string) => m.run(k, async () => {
      peak = Math.max(peak, ++running);
      await tick();
      running--;
    });
    await Promise.all([job('a'), job('b'), job('c')]);
    expect(peak).toBe(3);
  });
});

describe('Coalescer', () => {
  it('turns N requests during a run into at most one more run', async () => {
    const c = new Coalescer();
    let runs = 0;
    const fn = async () => {
      runs++;
      await tick(10);
    };
    await Promise.all(Array.from({ length: 10 }, () => c.request('k', fn)));
    expect(runs).toBe(2);
  });

  it('settles only after the follow-up run, so a read after it sees the newest result', async () => {
    const c = new Coalescer();
    let value = 0;
    void c.request('k', async () => {
      await tick(10);
      value = 1;
    });
    void c.request('k', async () => {
      await tick(10);
      value = 2;
    });
    await c.settled('k');
    expect(value).toBe(2);
    await c.settled('other'); // nothing under way: resolves at once
  });

  it('settles after the runs under way or queued when asked, not after runs requested later (a stream of requests cannot hold a reader back)', async () => {
    const c = new Coalescer();
    const gates: Array<() => void> = [];
    const run = () => new Promise<void>((resolve) => gates.push(resolve));
    const pass = async () => {
      // Let the coalescer start the next run, then open its gate.
      for (let i = 0; i < 5; i++) await Promise.resolve();
      gates.shift()!();
    };
    void c.request('k', run); // running
    void c.request('k', run); // queued behind it
    let settled = false;
    const reader = c.settled('k').then(() => (settled = true));
    await pass(); // the first run ends; the queued one starts
    void c.request('k', run); // requested after the reader asked: queued behind the second
    expect(settled).toBe(false);
    await pass(); // the second run (the last one the reader waits for) ends
    await reader;
    expect(settled).toBe(true);
    // The later run is still under way: the reader did not wait for it.
    expect(c.busy('k')).toBe(true);
    await pass();
    await c.settled('k');
    expect(c.busy('k')).toBe(false);
  });

  it('is busy on a key from its first request until its last queued run has settled, a failed one included', async () => {
    const c = new Coalescer();
    expect(c.busy('k')).toBe(false);
    const first = c.request('k', async () => {
      await tick(10);
    });
    const second = c.request('k', async () => {
      await tick(10);
      throw new Error('failed');
    });
    expect([c.busy('k'), c.busy('other')]).toEqual([true, false]);
    await first;
    expect(c.busy('k')).toBe(true);
    await expect(second).rejects.toThrow('failed');
    await c.settled('k');
    expect(c.busy('k')).toBe(false);
  });
});

describe('newRequestId', () => {
  it('makes req-<uuid v7> ids that sort by time and do not repeat', async () => {
    const { newRequestId } = await import('../../src/api/requestId.js');
    const ids = Array.from({ length: 1000 }, (_, i) => newRequestId(1_700_000_000_000 + i));
    for (const id of ids) expect(id).toMatch(/^req-[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect([...ids].sort()).toEqual(ids);
    expect(new Set(ids).size).toBe(ids.length);
    expect(newRequestId(0x0123456789ab).slice(4, 17)).toBe('01234567-89ab');
  });
});
