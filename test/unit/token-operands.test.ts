/**
 * tokenOperandsLast (cli/tokens.ts): which arguments of `token revoke` are its options and which a
 * token that starts with `-` (moved after a `--` so commander takes it as the operand). The
 * options are the command's own, read from the real commander command.
 */
import { describe, expect, it } from 'vitest';
import { buildProgram } from '../../src/cli.js';
import { tokenOperandsLast } from '../../src/cli/tokens.js';

const revoke = buildProgram(() => undefined, {}).commands.find((c) => c.name() === 'token')!.commands.find((c) => c.name() === 'revoke')!;
const T = '-Ab3_x-9QzLmNoPqRsTuVwXyZ0123456789abcdefghij';

describe('tokenOperandsLast', () => {
  it.each([
    ['a token that starts with - first', [T, '--data-dir', 'd'], ['--data-dir', 'd', '--', T]],
    ['a token that starts with - last', ['--data-dir', 'd', T], ['--data-dir', 'd', '--', T]],
    ['a token that starts with -f (not a -f value: not a format)', [`-f${T}`, '-f', 'json'], ['-f', 'json', '--', `-f${T}`]],
    ['a token that starts with -- and is not shaped as an option', [`-${T}`], ['--', `-${T}`]],
    ['two such tokens (the parser then says: too many arguments)', [T, `-x${T}`], ['--', T, `-x${T}`]],
    ['a token before a -- already there', [T, '--', 'x'], ['--', T, 'x']],
  ])('moves after a --: %s', (_name, args, expected) => {
    expect(tokenOperandsLast(args, revoke.options)).toEqual(expected);
  });

  it.each([
    ['an ordinary token', ['oe-abc', '--data-dir', 'd']],
    ['- (standard input)', ['-', '-f', 'json']],
    ['an option value that starts with -', ['--data-dir', '-odd-dir-name', 'oe-abc']],
    ["-f's value attached, a format", ['-fjson', 'oe-abc']],
    ['--option=value', ['--data-dir=d', 'oe-abc']],
    ['--help and -h', ['--help', '-h']],
    ['an unknown long option (the parser refuses it)', ['oe-abc', '--dta-dir', 'd']],
    ['an unknown short option (the parser refuses it)', ['oe-abc', '-x']],
    ['a token that starts with - after a -- already there', ['--data-dir', 'd', '--', T]],
  ])('leaves alone %s', (_name, args) => {
    expect(tokenOperandsLast(args, revoke.options)).toEqual(args);
  });
});
