import { describe, expect, it } from 'vitest';
import { errors } from '../../src/errors.js';
import { Metrics } from '../../src/util/metrics.js';
import { currentTimings, RequestTimings, runWithTimings, timedMethods } from '../../src/util/timing.js';

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
    await runWithTimings(t, async () => {
      expect(currentTimings()).toBe(t);
      expect(await box.read()).toBe(8);
    });
    expect(currentTimings()).toBeUndefined();
  });

  it("adds each call's time to the request's part and leaves other parts alone", async () => {
    const box = timedMethods(new Box(), 'store');
    const t = new RequestTimings();
    await runWithTimings(t, async () => {
      await box.read();
      await box.read();
    });
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

  it('lists the parts in the order they were first added, then total', () => {
    const t = new RequestTimings();
    t.add('auth', 1);
    t.add('libvirt', 2);
    t.add('auth', 0.5);
    expect(t.header(t.start + 4)).toBe('auth;dur=1.500, libvirt;dur=2.000, total;dur=4.000');
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
