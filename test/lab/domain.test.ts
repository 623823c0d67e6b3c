import { describe, expect, it } from 'vitest';
import { LAB_PACKAGES, domainXml } from '../../src/lab/index.js';
import { METADATA_NS, parseDomainXml } from '../../src/virt/libvirt/domxml.js';
import { parseXml } from '../../src/virt/libvirt/xml.js';

describe('the lab guest domain XML', () => {
  const base = {
    name: 'g1',
    uuid: '7c9e6679-7425-40de-944b-e07fc1f90ae7',
    kernel: '/cache/vmlinux',
    initrd: '/cache/initramfs.gz',
    cmdline: 'console=ttyS0 quiet',
    consoleLog: "/lab/guests/g1's console.log",
    shellSocket: '/lab/guests/g1.sock',
  };

  it('carries the project in the metadata namespace the libvirt driver reads', () => {
    const xml = domainXml({ ...base, projectId: 'p<&>1' });
    expect(xml).toContain(`xmlns:oe="${METADATA_NS}"`);
    expect(parseDomainXml(xml)).toMatchObject({ name: 'g1', uuid: base.uuid, projectId: 'p<&>1' });
  });

  it('escapes paths and leaves the metadata out without a project', () => {
    const xml = domainXml(base);
    expect(xml).toContain("<source path='/lab/guests/g1&apos;s console.log' append='off'/>");
    expect(xml).not.toContain('<metadata>');
    expect(parseDomainXml(xml).projectId).toBeUndefined();
  });

  it.each([
    [undefined, 1],
    [true, 1],
    [false, 0],
  ] as const)('with guestAgent %s has %i QEMU guest agent channel(s) named org.qemu.guest_agent.0', (guestAgent, n) => {
    const devices = parseXml(domainXml({ ...base, guestAgent })).children.find((c) => c.name === 'devices')!;
    const targets = devices.children.filter((c) => c.name === 'channel').map((c) => c.children.find((t) => t.name === 'target')?.attrs);
    expect(targets).toEqual(Array.from({ length: n }, () => ({ type: 'virtio', name: 'org.qemu.guest_agent.0' })));
  });
});

describe('the lab package list', () => {
  it('holds only packages the lab uses (no N-API build tools: no binding is built)', () => {
    expect(LAB_PACKAGES).not.toContain('libvirt-dev');
    expect(LAB_PACKAGES).not.toContain('pkg-config');
    expect(LAB_PACKAGES).toEqual(expect.arrayContaining(['qemu-system-x86', 'libvirt-daemon', 'tgt', 'libiscsi-bin', 'busybox-static']));
  });
});
