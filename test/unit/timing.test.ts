import { describe, expect, it } from 'vitest';
import { errors } from '../../src/errors.js';
import { Metrics } from '../../src/util/metrics.js';
import { currentTimings, RequestTimings, TIMING_PARTS, timed, timedMethods, withTimings } from '../../src/util/timing.js';

class Box {
  #secret = 7;
  n = 0;
  async read(): Promise<number> {
    await new Promise((r) => setTimeout(r, 5));
    return this.#secret + this.n;
  }
  sync(): number {
    return this.#secret;
  }
  async fail(): Promise<never> {
    await new Promise((r) => setTimeout(r, 1));
    throw errors.notFound('no such thing');
  }
  throwsNow(): never {
    throw new Error('plain');
  }
}

describe('timedMethods', () => {
  it('passes results, this and private fields through, inside and outside a request', async () => {
    const box = timedMethods(new Box(), 'driver');
    box.n = 1;
    expect(await box.read()).toBe(8);
    expect(box.sync()).toBe(7);
    expect(box).toBeInstanceOf(Box);
    const t = new RequestTimings();
    expect(await withTimings(t, () => box.read())).toBe(8);
    expect(currentTimings()).toBeUndefined();
  });

  it("adds each call's time to the request's part and leaves other parts alone", async () => {
    const box = timedMethods(new Box(), 'store');
    const t = new RequestTimings();
    await withTimings(t, () => box.read());
    await withTimings(t, () => box.read());
    expect(t.parts.store).toBeGreaterThanOrEqual(8);
    expect(t.parts.driver).toBeUndefined();
    const header = t.header();
    expect(header).toMatch(/^store;dur=\d+\.\d{3}, total;dur=\d+\.\d{3}$/);
  });

  it('tells onError every error, thrown or rejected, and rethrows it unchanged', async () => {
    const seen: unknown[] = [];
    const box = timedMethods(new Box(), 'driver', (e) => seen.push(e));
    const rejected = await box.fail().catch((e: unknown) => e);
    expect(() => box.throwsNow()).toThrow('plain');
    expect(seen).toHaveLength(2);
    expect(seen[0]).toBe(rejected);
  });
});

describe('withTimings: what is current, and when', () => {
  it('makes the timings current for the synchronous part only, then restores what was current (nesting, throws)', async () => {
    const outer = new RequestTimings();
    const inner = new RequestTimings();
    const seen: Array<RequestTimings | undefined> = [];
    const p = withTimings(outer, async () => {
      seen.push(currentTimings());
      withTimings(inner, () => seen.push(currentTimings()));
      seen.push(currentTimings());
      expect(() => withTimings(inner, () => {
        throw new Error('boom');
      })).toThrow('boom');
      seen.push(currentTimings());
      await Promise.resolve();
      // After an await nothing is current: another request may have run meanwhile.
      seen.push(currentTimings());
    });
    expect(currentTimings()).toBeUndefined();
    await p;
    expect(seen).toEqual([outer, inner, outer, outer, undefined]);
    // undefined: nothing is current inside (background work started from a request).
    withTimings(outer, () => withTimings(undefined, () => expect(currentTimings()).toBeUndefined()));
  });

  it('never adds a call to a request it was not made in, however requests interleave', async () => {
    const box = timedMethods(new Box(), 'driver');
    const a = new RequestTimings();
    const b = new RequestTimings();
    // Two requests, each a layer that awaits and then calls further down, interleaved; `a`
    // re-enters its timings after its await, `b` does not.
    const runA = withTimings(a, async () => {
      const t = currentTimings();
      await box.read();
      await withTimings(t, () => box.read());
    });
    const runB = withTimings(b, async () => {
      await box.read();
      await box.read(); // made with nothing current: lost, never counted as a's
    });
    await Promise.all([runA, runB]);
    expect(a.parts.driver).toBeGreaterThanOrEqual(8);
    expect(b.parts.driver).toBeGreaterThanOrEqual(4);
    expect(b.parts.driver!).toBeLessThan(a.parts.driver!);
  });

  it('timed adds to the request current at its call, and passes a rejection through', async () => {
    const t = new RequestTimings();
    const fail = withTimings(t, () => timed('rpc', async () => {
      await new Promise((r) => setTimeout(r, 3));
      throw new Error('no');
    }));
    await expect(fail).rejects.toThrow('no');
    expect(t.parts.rpc).toBeGreaterThanOrEqual(2);
    await expect(timed('rpc', async () => 5)).resolves.toBe(5);
  });
});

describe('RequestTimings.header', () => {
  it.each([
    ['zero', 0, '0.000'],
    ['under a microsecond, rounded', 0.0004, '0.000'],
    ['a few microseconds', 0.0123, '0.012'],
    ['under a millisecond', 0.5, '0.500'],
    ['just under a millisecond, rounded up', 0.9996, '1.000'],
    ['milliseconds', 12.3456, '12.346'],
    ['minutes', 123456.789, '123456.789'],
  ])('writes %s with three decimals, as toFixed(3) does', (_what, ms, text) => {
    const t = new RequestTimings();
    t.add('rpc', ms);
    const header = t.header(t.start + ms);
    expect(header).toBe(`rpc;dur=${text}, total;dur=${text}`);
    expect(text).toBe(ms.toFixed(3));
  });

  it('lists the recorded parts from the socket inwards (TIMING_PARTS), whatever order they were added in, then total', () => {
    const t = new RequestTimings();
    t.add('libvirt', 2);
    t.add('auth', 1);
    t.add('store', 0);
    t.add('auth', 0.5);
    expect(t.header(t.start + 4)).toBe('auth;dur=1.500, store;dur=0.000, libvirt;dur=2.000, total;dur=4.000');
    expect(Object.keys(t.parts)).toEqual(['auth', 'store', 'libvirt']);
    // Every part the header can name, in its order.
    const all = new RequestTimings();
    for (const part of [...TIMING_PARTS].reverse()) all.add(part, 1);
    expect(all.header(all.start).split(', ').map((item) => item.split(';')[0])).toEqual([...TIMING_PARTS, 'total']);
  });
});

describe('Metrics.countDriverError', () => {
  it.each([
    ['a catalogue error, under its code', errors.notFound('x'), 'NotFound'],
    ['anything else, under Unexpected', new Error('boom'), 'Unexpected'],
  ])('counts %s', async (_what, err, code) => {
    const m = new Metrics();
    m.countDriverError(err);
    m.countDriverError(err);
    expect(await m.registry.metrics()).toContain(`online_extend_driver_errors_total{code="${code}"} 2`);
  });
});
