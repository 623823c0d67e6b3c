import { describe, expect, it } from 'vitest';
import {
  buildDiskXml,
  deviceSuffix,
  nextFreeDevice,
  parseDomainXml,
  toDriverDisk,
  volumeDisks,
} from '../../src/virt/libvirt/domxml.js';
import { findQueryBlockSize } from '../../src/virt/libvirt/guest.js';
import { escapeXml } from '../../src/util/xml.js';
import { parseXml } from '../../src/virt/libvirt/xml.js';
import { instanceFiles, serverDomainXml } from '../../src/virt/libvirt/spawn.js';

/** Live XML as libvirt 9.0 writes it (trimmed), with one disk of every kind we handle. */
const LIVE_XML = `<domain type='qemu' id='4'>
  <name>guest-a</name>
  <uuid>11111111-2222-3333-4444-555555555555</uuid>
  <metadata>
    <oe:project xmlns:oe="https://online-extend.dev/xmlns/1">proj-a</oe:project>
  </metadata>
  <memory unit='KiB'>65536</memory>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/var/lib/vols/a.raw' index='4'/>
      <backingStore/>
      <target dev='vdb' bus='virtio'/>
      <serial>vol-raw</serial>
      <alias name='virtio-disk1'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/vols/b &amp; c.qcow2' index='3'/>
      <backingStore/>
      <target dev='vdc' bus='virtio'/>
      <readonly/>
      <serial>vol-qcow2</serial>
      <alias name='virtio-disk2'/>
    </disk>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw'/>
      <source dev='/dev/loop7' index='2'/>
      <target dev='vdd' bus='virtio'/>
      <serial>vol-block</serial>
      <alias name='virtio-disk3'/>
    </disk>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw'/>
      <source protocol='iscsi' name='iqn.2024-01.dev.online-extend:t1/1' index='1'>
        <host name='127.0.0.1' port='3260'/>
      </source>
      <target dev='sda' bus='scsi'/>
      <serial>vol-iscsi</serial>
      <alias name='scsi0-0-0-0'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/var/lib/root.img'/>
      <target dev='vda' bus='virtio'/>
      <!-- no serial: the root disk, not a volume -->
    </disk>
    <disk type='file' device='cdrom'>
      <target dev='hdc' bus='ide'/>
      <serial>not-a-volume</serial>
      <readonly/>
    </disk>
  </devices>
</domain>
`;

describe('parseDomainXml', () => {
  const info = parseDomainXml(LIVE_XML);

  it('reads the name, UUID and project metadata', () => {
    expect(info.name).toBe('guest-a');
    expect(info.uuid).toBe('11111111-2222-3333-4444-555555555555');
    expect(info.projectId).toBe('proj-a');
  });

  it('reads the memory the domain boots with in MiB (libvirt writes KiB), and no vCPUs where the XML has no <vcpu>', () => {
    expect(info.memoryMb).toBe(64);
    expect(info).not.toHaveProperty('vcpus');
  });

  /** A minimal domain with `inner` in it. */
  const domain = (inner: string) => `<domain type='kvm'><name>d</name><uuid>11111111-2222-3333-4444-555555555555</uuid>${inner}</domain>`;

  it.each([
    { xml: "<vcpu placement='static'>4</vcpu>", vcpus: 4 },
    { xml: "<vcpu placement='static' current='2'>8</vcpu>", vcpus: 2 },
    { xml: '<vcpu> 3 </vcpu>', vcpus: 3 },
    { xml: '<vcpu>0</vcpu>', vcpus: undefined },
    { xml: '<vcpu>two</vcpu>', vcpus: undefined },
    { xml: "<vcpu current='x'>4</vcpu>", vcpus: undefined },
    { xml: '', vcpus: undefined },
  ])('reads $xml as vcpus $vcpus: the vCPUs online at boot, nothing when it cannot tell', ({ xml, vcpus }) => {
    expect(parseDomainXml(domain(xml)).vcpus).toBe(vcpus);
  });

  it.each([
    { xml: '<memory>2097152</memory>', memoryMb: 2048 },
    { xml: "<memory unit='KiB'>1048576</memory><currentMemory unit='KiB'>524288</currentMemory>", memoryMb: 1024 },
    { xml: "<memory unit='k'>1536</memory>", memoryMb: 1 },
    { xml: "<memory unit='MiB'>384</memory>", memoryMb: 384 },
    { xml: "<memory unit='M'>384</memory>", memoryMb: 384 },
    { xml: "<memory unit='GiB'>2</memory>", memoryMb: 2048 },
    { xml: "<memory unit='g'>1</memory>", memoryMb: 1024 },
    { xml: "<memory unit='MB'>1000</memory>", memoryMb: 953 },
    { xml: "<memory unit='KB'>1048576</memory>", memoryMb: 1000 },
    { xml: "<memory unit='bytes'>1073741824</memory>", memoryMb: 1024 },
    { xml: "<memory unit='b'>1048575</memory>", memoryMb: undefined },
    { xml: "<memory unit='TiB'>1</memory>", memoryMb: 1024 * 1024 },
    { xml: "<memory unit='furlongs'>1</memory>", memoryMb: undefined },
    { xml: '<memory>-1</memory>', memoryMb: undefined },
    { xml: "<maxMemory slots='16' unit='KiB'>4194304</maxMemory>", memoryMb: undefined },
  ])('reads $xml as $memoryMb MiB: <memory> in its unit, rounded down, nothing when it cannot tell', ({ xml, memoryMb }) => {
    expect(parseDomainXml(domain(xml)).memoryMb).toBe(memoryMb);
  });

  it('treats only disks with a serial as volumes (not the root disk, not a cdrom)', () => {
    expect(volumeDisks(info).map((d) => d.serial)).toEqual(['vol-raw', 'vol-qcow2', 'vol-block', 'vol-iscsi']);
    expect(info.disks.map((d) => d.target)).toEqual(['vdb', 'vdc', 'vdd', 'sda', 'vda', 'hdc']);
  });

  it('maps file raw and qcow2, block and network iSCSI disks to driver disks', () => {
    expect(volumeDisks(info).map(toDriverDisk)).toEqual([
      { volumeId: 'vol-raw', device: 'vdb', kind: 'file', format: 'raw', source: '/var/lib/vols/a.raw' },
      { volumeId: 'vol-qcow2', device: 'vdc', kind: 'file', format: 'qcow2', source: '/var/lib/vols/b & c.qcow2', readonly: true },
      { volumeId: 'vol-block', device: 'vdd', kind: 'block', source: '/dev/loop7' },
      { volumeId: 'vol-iscsi', device: 'sda', kind: 'network', source: 'iqn.2024-01.dev.online-extend:t1/1' },
    ]);
  });

  it('remembers the iSCSI portal, aliases and source indexes', () => {
    const iscsi = info.disks.find((d) => d.serial === 'vol-iscsi')!;
    expect(iscsi.portal).toBe('127.0.0.1:3260');
    expect(iscsi.protocol).toBe('iscsi');
    expect(iscsi.alias).toBe('scsi0-0-0-0');
    expect(info.disks[0]!.sourceIndex).toBe(4);
    expect(info.disks[0]!.alias).toBe('virtio-disk1');
    expect(info.disks[0]!.xml.startsWith("<disk type='file'")).toBe(true);
    expect(info.disks[0]!.xml.endsWith('</disk>')).toBe(true);
  });

  it('has no project without our metadata, or with the element in another namespace', () => {
    const plain = LIVE_XML.replace(/<metadata>[\s\S]*<\/metadata>/, '');
    expect(parseDomainXml(plain).projectId).toBeUndefined();
    const foreign = LIVE_XML.replace('https://online-extend.dev/xmlns/1', 'https://example.org/other');
    expect(parseDomainXml(foreign).projectId).toBeUndefined();
    const defaultNs = LIVE_XML.replace(
      /<oe:project[^>]*>proj-a<\/oe:project>/,
      '<project xmlns="https://online-extend.dev/xmlns/1">proj-b</project>',
    );
    expect(parseDomainXml(defaultNs).projectId).toBe('proj-b');
  });

  it('refuses XML that is not a domain or not well formed', () => {
    expect(() => parseDomainXml('<network/>')).toThrow(/expected <domain>/);
    expect(() => parseDomainXml('<domain><name>x</domain>')).toThrow();
  });
});

describe('XML reader', () => {
  it('decodes entities and CDATA, skips comments and the declaration', () => {
    const root = parseXml(`<?xml version="1.0"?><!-- c --><a x="&lt;&#65;&#x42;&quot;"><b>1 &amp; 2</b><![CDATA[<raw> &amp;]]></a>`);
    expect(root.attrs.x).toBe('<AB"');
    expect(root.children[0]!.text).toBe('1 & 2');
    expect(root.text).toBe('<raw> &amp;');
  });

  it('escapes what it sends', () => {
    expect(escapeXml(`a<b>&"c'`)).toBe('a&lt;b&gt;&amp;&quot;c&apos;');
  });
});

describe('buildDiskXml', () => {
  it('builds a raw or qcow2 file disk with the volume id as serial', () => {
    const xml = buildDiskXml({ volumeId: 'v1', kind: 'file', format: 'qcow2', source: '/v/a.qcow2' }, 'vdb');
    const d = parseDomainXml(`<domain><devices>${xml}</devices></domain>`).disks[0]!;
    expect(d).toMatchObject({ serial: 'v1', target: 'vdb', bus: 'virtio', kind: 'file', format: 'qcow2', source: '/v/a.qcow2' });
  });

  it('builds a block disk', () => {
    const xml = buildDiskXml({ volumeId: 'v2', kind: 'block', source: '/dev/loop3' }, 'vdc');
    expect(parseDomainXml(`<domain><devices>${xml}</devices></domain>`).disks[0]).toMatchObject({
      serial: 'v2', kind: 'block', source: '/dev/loop3', format: 'raw',
    });
  });

  it('builds an iSCSI network disk with the portal as host and port', () => {
    const xml = buildDiskXml({ volumeId: 'v3', kind: 'network', source: 'iqn.x:t/1', portal: '10.0.0.5:3261' }, 'vdd');
    expect(xml).toContain(`<source protocol='iscsi' name='iqn.x:t/1'><host name='10.0.0.5' port='3261'/></source>`);
    const dflt = buildDiskXml({ volumeId: 'v3', kind: 'network', source: 'iqn.x:t/1' }, 'vdd');
    expect(dflt).toContain(`<host name='127.0.0.1' port='3260'/>`);
  });

  it('escapes paths and ids', () => {
    const xml = buildDiskXml({ volumeId: `v'<x>`, kind: 'file', source: `/a'b&c` }, 'vdb');
    const d = parseDomainXml(`<domain><devices>${xml}</devices></domain>`).disks[0]!;
    expect(d.serial).toBe(`v'<x>`);
    expect(d.source).toBe(`/a'b&c`);
  });
});

describe('device names', () => {
  it('picks the next free vdX, starting at vdb', () => {
    expect(nextFreeDevice([])).toBe('vdb');
    expect(nextFreeDevice(['vda', 'vdb', 'vdd'])).toBe('vdc');
    expect(deviceSuffix(0)).toBe('a');
    expect(deviceSuffix(25)).toBe('z');
    expect(deviceSuffix(26)).toBe('aa');
    const all = Array.from({ length: 26 }, (_, i) => `vd${deviceSuffix(i)}`);
    expect(nextFreeDevice(all)).toBe('vdaa');
  });
});

describe('findQueryBlockSize', () => {
  const reply = JSON.stringify({
    return: [
      { device: '', qdev: '/machine/peripheral/virtio-disk1/virtio-backend', inserted: { 'node-name': 'libvirt-2-format', image: { 'virtual-size': 1048576 } } },
      { device: '', qdev: 'scsi0-0-0-0', inserted: { 'node-name': 'libvirt-1-format', image: { 'virtual-size': 2097152 } } },
    ],
  });

  it('finds a disk by its libvirt alias in the qdev path or by its format node', () => {
    expect(findQueryBlockSize(reply, { alias: 'virtio-disk1' })).toBe(1048576);
    expect(findQueryBlockSize(reply, { alias: 'scsi0-0-0-0' })).toBe(2097152);
    expect(findQueryBlockSize(reply, { sourceIndex: 1 })).toBe(2097152);
    expect(findQueryBlockSize(reply, { alias: 'virtio-disk9' })).toBeUndefined();
  });
});

describe('the domain of a server created through the API (spawn.ts)', () => {
  const id = 'ABCDEF01-2345-4678-9abc-def012345678';
  const files = instanceFiles('/srv/oe/instances', id);
  const spec = {
    id,
    name: 'web <1>\nfront',
    projectId: 'p & q',
    userId: 'u',
    vcpus: 2,
    ramMb: 384,
    rootDiskGb: 1,
    image: { kind: 'kernel' as const, kernelPath: '/k/vmlinux', ramdiskPath: '/k/initrd.gz', cmdline: "console=ttyS0 'quiet'" },
  };

  it('keeps its files in one directory per server, named by the lower-case UUID, and refuses an id that is not a UUID', () => {
    expect(files).toEqual({
      dir: `/srv/oe/instances/${id.toLowerCase()}`,
      disk: `/srv/oe/instances/${id.toLowerCase()}/disk`,
      consoleLog: `/srv/oe/instances/${id.toLowerCase()}/console.log`,
      consoleSocket: `/srv/oe/instances/${id.toLowerCase()}/console.sock`,
    });
    expect(() => instanceFiles('/srv', '../../etc')).toThrow(/not a UUID/);
    expect(instanceFiles(`/${'d'.repeat(80)}`, id).consoleSocket).toBeUndefined();
  });

  it('reads back as the server: its UUID, display name (title), project, and a root disk that is not a volume', () => {
    const xml = serverDomainXml({ spec, files, rootDisk: { format: 'raw' }, virtType: 'qemu' });
    const info = parseDomainXml(xml);
    expect(info).toMatchObject({ uuid: id.toLowerCase(), name: `instance-${id.toLowerCase()}`, title: 'web <1> front', projectId: 'p & q' });
    expect(info.disks.map((d) => [d.target, d.source])).toEqual([['vda', files.disk]]);
    expect(volumeDisks(info)).toEqual([]);
    const root = parseXml(xml);
    const os = root.children.find((c) => c.name === 'os')!;
    expect(os.children.map((c) => [c.name, c.text])).toEqual([
      ['type', 'hvm'],
      ['kernel', '/k/vmlinux'],
      ['initrd', '/k/initrd.gz'],
      ['cmdline', "console=ttyS0 'quiet'"],
    ]);
    expect(root.children.find((c) => c.name === 'vcpu')?.text).toBe('2');
    expect(root.children.find((c) => c.name === 'memory')).toMatchObject({ text: '384', attrs: { unit: 'MiB' } });
    expect(info).toMatchObject({ vcpus: 2, memoryMb: 384 });
  });

  it('boots a disk image from its root disk, and a kernel image without a root disk has no disk at all', () => {
    const disk = parseXml(serverDomainXml({ spec: { ...spec, image: { kind: 'disk', diskPath: '/img.qcow2', diskFormat: 'qcow2' } }, files, rootDisk: { format: 'qcow2' }, virtType: 'kvm' }));
    expect(disk.attrs.type).toBe('kvm');
    expect(disk.children.find((c) => c.name === 'os')!.children.map((c) => c.name)).toEqual(['type', 'boot']);
    const none = parseDomainXml(serverDomainXml({ spec, files, rootDisk: undefined, virtType: 'qemu' }));
    expect(none.disks).toEqual([]);
  });

  it("gives every server the QEMU guest agent's virtio-serial channel org.qemu.guest_agent.0, its socket path left to libvirt", () => {
    const devices = parseXml(serverDomainXml({ spec, files, rootDisk: undefined, virtType: 'qemu' })).children.find((c) => c.name === 'devices')!;
    const channels = devices.children.filter((c) => c.name === 'channel');
    expect(channels).toHaveLength(1);
    expect(channels[0]!.attrs.type).toBe('unix');
    expect(channels[0]!.children.find((c) => c.name === 'target')?.attrs).toEqual({ type: 'virtio', name: 'org.qemu.guest_agent.0' });
    expect(channels[0]!.children.find((c) => c.name === 'source')?.attrs).toEqual({ mode: 'bind' });
  });

  it.each([
    ['kvm', true],
    ['qemu', false],
  ] as const)("gives a %s server the host's CPU (host-passthrough): %s", (virtType, hostCpu) => {
    const root = parseXml(serverDomainXml({ spec, files, rootDisk: undefined, virtType }));
    expect(root.attrs.type).toBe(virtType);
    expect(root.children.find((c) => c.name === 'cpu')?.attrs.mode).toBe(hostCpu ? 'host-passthrough' : undefined);
  });
});
