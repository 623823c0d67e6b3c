/** Size units (src/util/units.ts) and the CLI's size parsing built on them. */
import { describe, expect, it } from 'vitest';
import { bytesToGiB, GiB, gibToBytes, KiB, MiB, TiB } from '../../src/util/units.js';
import { formatBytes, parseSize } from '../../src/cli/sizes.js';

describe('binary units', () => {
  it('defines each unit as 1024 of the one below it', () => {
    expect([KiB, MiB / KiB, GiB / MiB, TiB / GiB]).toEqual([1024, 1024, 1024, 1024]);
  });
});

describe('bytesToGiB', () => {
  const cases: Array<[string, number, number]> = [
    ['zero bytes is 0 GiB', 0, 0],
    ['one byte short of a GiB rounds down to 0', GiB - 1, 0],
    ['exactly one GiB is 1', GiB, 1],
    ['1.5 GiB rounds down to 1 (never shown larger than it is)', GiB + GiB / 2, 1],
    ['one byte past 2 GiB rounds down to 2', 2 * GiB + 1, 2],
  ];
  for (const [name, bytes, gib] of cases) it(`shows ${name}`, () => expect(bytesToGiB(bytes)).toBe(gib));

  for (const bad of [-1, 0.5, Number.NaN, 2 ** 60]) {
    it(`refuses ${bad} bytes with a RangeError`, () => expect(() => bytesToGiB(bad)).toThrow(RangeError));
  }
});

describe('gibToBytes', () => {
  it('turns whole GiB into exact bytes', () => {
    expect([0, 1, 3, 1024].map(gibToBytes)).toEqual([0, GiB, 3 * GiB, TiB]);
  });
  it('round-trips with bytesToGiB for whole GiB', () => {
    for (const g of [0, 1, 7, 4096]) expect(bytesToGiB(gibToBytes(g))).toBe(g);
  });
  for (const bad of [-1, 1.5, 2 ** 24]) {
    it(`refuses ${bad} GiB with a RangeError (negative, fractional, or past 8 PiB)`, () => expect(() => gibToBytes(bad)).toThrow(RangeError));
  }
});

describe('the CLI size syntax', () => {
  const cases: Array<[string, number]> = [
    ['1073741824', GiB],
    ['2GiB', 2 * GiB],
    ['2 gi', 2 * GiB],
    ['10G', 10 * GiB],
    ['512MiB', 512 * MiB],
    ['1.5KiB', 1536],
    ['1TiB', TiB],
  ];
  for (const [text, bytes] of cases) it(`reads "${text}" as ${bytes} bytes`, () => expect(parseSize(text)).toBe(bytes));
  for (const bad of ['', 'two GiB', '1.3B', '5PB']) {
    it(`refuses "${bad}" naming the text`, () => expect(() => parseSize(bad)).toThrow(`"${bad}"`));
  }
  it('prints sizes in the largest unit that divides them exactly', () => {
    expect([2 * GiB, 1536 * MiB, GiB + 1, 0].map(formatBytes)).toEqual(['2GiB', '1536MiB', `${GiB + 1}B`, '0B']);
  });
});
