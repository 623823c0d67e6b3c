// The libvirt driver's encrypted-volume XML: the disk's <encryption> for every disk kind, read back
// as libvirt 9.0 writes it, and the per-volume secret's definition.
import { describe, expect, it } from 'vitest';
import { buildDiskXml, parseDomainXml } from '../../src/virt/libvirt/domxml.js';
import { secretUuidOf, secretXml } from '../../src/virt/libvirt/secrets.js';
import { parseXml } from '../../src/virt/libvirt/xml.js';
import type { AttachSpec } from '../../src/virt/driver.js';

const PASSPHRASE = 'bm90LWEtcmVhbC1wYXNzcGhyYXNlLWJ1dC1sb25nLWVub3VnaA==';
const specs: Array<[string, AttachSpec]> = [
  ['file', { volumeId: 'v1', kind: 'file', format: 'raw', source: '/v/v1.raw', encryption: { format: 'luks', passphrase: PASSPHRASE } }],
  ['block', { volumeId: 'v2', kind: 'block', source: '/dev/loop7', encryption: { format: 'luks', passphrase: PASSPHRASE } }],
  ['network', { volumeId: 'v3', kind: 'network', source: 'iqn.x:t/1', portal: '127.0.0.1:3260', encryption: { format: 'luks', passphrase: PASSPHRASE } }],
];

describe('the disk XML of an encrypted volume', () => {
  it.each(specs)('%s: names the volume\'s secret inside <source>, and never carries the passphrase', (_kind, spec) => {
    const uuid = secretUuidOf(spec.volumeId);
    const xml = buildDiskXml(spec, 'vdb', uuid);
    expect(xml).not.toContain(PASSPHRASE);
    const source = parseXml(xml).children.find((c) => c.name === 'source')!;
    const enc = source.children.find((c) => c.name === 'encryption')!;
    expect(enc.attrs.format).toBe('luks');
    expect(enc.children.find((c) => c.name === 'secret')?.attrs).toEqual({ type: 'passphrase', uuid });
    expect(parseDomainXml(`<domain><devices>${xml}</devices></domain>`).disks[0]).toMatchObject({ serial: spec.volumeId, kind: spec.kind, encryption: { format: 'luks', secretUuid: uuid } });
  });

  it('reads the encryption where libvirt 9.0 writes it (inside <source>, engine qemu) and where older definitions had it', () => {
    const uuid = secretUuidOf('v9');
    const live = `<domain><devices><disk type='file' device='disk'><driver name='qemu' type='raw'/>
      <source file='/v/v9.raw' index='2'><encryption format='luks' engine='qemu'><secret type='passphrase' uuid='${uuid}'/></encryption></source>
      <target dev='vdb' bus='virtio'/><serial>v9</serial><alias name='virtio-disk1'/></disk></devices></domain>`;
    const old = `<domain><devices><disk type='block' device='disk'><driver name='qemu' type='raw'/><source dev='/dev/loop1'/>
      <encryption format='luks'><secret type='passphrase' uuid='${uuid}'/></encryption>
      <target dev='vdc' bus='virtio'/><serial>v9</serial></disk></devices></domain>`;
    expect(parseDomainXml(live).disks[0]!.encryption).toEqual({ format: 'luks', secretUuid: uuid });
    expect(parseDomainXml(old).disks[0]!.encryption).toEqual({ format: 'luks', secretUuid: uuid });
  });

  it('has no encryption for an unencrypted disk, even given a secret', () => {
    const xml = buildDiskXml({ volumeId: 'v4', kind: 'file', source: '/v/v4.raw' }, 'vdb', secretUuidOf('v4'));
    expect(xml).not.toContain('encryption');
    expect(parseDomainXml(`<domain><devices>${xml}</devices></domain>`).disks[0]!.encryption).toBeUndefined();
  });
});

describe("an encrypted volume's libvirt secret", () => {
  it('has one UUID per volume, the same every time (a name-based UUID, version 5)', () => {
    const ids = ['6b8f2e1c-1111-4222-8333-444455556666', '6b8f2e1c-1111-4222-8333-444455556667', 'vol-a'];
    const uuids = ids.map(secretUuidOf);
    expect(new Set(uuids).size).toBe(ids.length);
    expect(ids.map(secretUuidOf)).toEqual(uuids);
    for (const u of uuids) expect(u).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });

  it('is ephemeral and private, of usage volume, named after the volume, and holds no value in its XML', () => {
    const x = parseXml(secretXml('vol-<a>'));
    expect(x.attrs).toEqual({ ephemeral: 'yes', private: 'yes' });
    expect(x.children.find((c) => c.name === 'uuid')?.text).toBe(secretUuidOf('vol-<a>'));
    const usage = x.children.find((c) => c.name === 'usage')!;
    expect(usage.attrs.type).toBe('volume');
    expect(usage.children.find((c) => c.name === 'volume')?.text).toBe('online-extend/vol-<a>');
  });
});
