/** `online-extend config`: every setting as config.ts documents it, read from its schemas. */
import { Option, type Command } from 'commander';
import type { TObject, TSchema } from '@sinclair/typebox';
import { ClientConfigSchema, ConfigSchema } from '../config.js';
import { render, type Format } from './output.js';

/** One documented setting: where it applies, its key, env name, flag, unit, default and meaning. */
export type SettingDoc = {
  /** `service` (serve, token create, demo) or `client` (the API client commands). */
  for: 'service' | 'client';
  key: string;
  env: string | null;
  flag: string | null;
  unit: string | null;
  /** The default as JSON would write it; null when there is none (the key is optional). */
  default: unknown;
  meaning: string;
};

/** The documentation of every key of both schemas, in schema order. */
export function settingDocs(): SettingDoc[] {
  const docs = (schema: TObject, scope: SettingDoc['for']) =>
    Object.entries(schema.properties as Record<string, TSchema>).map(([key, s]) => ({
      for: scope,
      key,
      env: (s.env as string | undefined) ?? null,
      flag: (s.flag as string | undefined) ?? null,
      unit: (s.unit as string | undefined) ?? null,
      default: s.default ?? null,
      meaning: (s.description as string | undefined) ?? '',
    }));
  return [...docs(ConfigSchema, 'service'), ...docs(ClientConfigSchema, 'client')];
}

/** Adds `config` to `program`; output goes to `out`. */
export function registerConfigCommand(program: Command, out: (s: string) => void): void {
  program
    .command('config')
    .description('list every setting: key, environment variable, flag, unit, default, meaning (flag > env > --config FILE > default)')
    .addOption(new Option('-f, --format <format>', 'output format').choices(['table', 'json']).default('table'))
    .action((o: { format: Format }) => {
      const docs = settingDocs();
      out(render(o.format, { settings: docs }, docs, ['for', 'key', 'env', 'flag', 'unit', 'default', 'meaning']));
    });
}
