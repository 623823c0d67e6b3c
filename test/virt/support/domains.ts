/**
 * Test domains for the libvirt driver's real tests: a domain that boots nothing (SeaBIOS finds
 * no boot disk and idles), which is all QEMU needs to resize its disks.
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { METADATA_NS } from '../../../src/virt/libvirt/domxml.js';
import { escapeXml } from '../../../src/util/xml.js';

export interface TestDisk {
  serial: string;
  target: string;
  type: 'file' | 'block' | 'network';
  /** File or device path; for network (iSCSI) disks `iqn/lun`. */
  path: string;
  /** Network disks: `host:port`. */
  portal?: string;
  format?: 'raw' | 'qcow2';
  readonly?: boolean;
}

export function diskXml(d: TestDisk): string {
  let src: string;
  if (d.type === 'file') src = `<source file='${escapeXml(d.path)}'/>`;
  else if (d.type === 'block') src = `<source dev='${escapeXml(d.path)}'/>`;
  else {
    const [host, port] = (d.portal ?? '127.0.0.1:3260').split(':');
    src = `<source protocol='iscsi' name='${escapeXml(d.path)}'><host name='${host}' port='${port ?? '3260'}'/></source>`;
  }
  return (
    `<disk type='${d.type}' device='disk'><driver name='qemu' type='${d.format ?? 'raw'}'/>${src}` +
    `<target dev='${d.target}' bus='virtio'/>${d.readonly ? '<readonly/>' : ''}<serial>${escapeXml(d.serial)}</serial></disk>`
  );
}

export function domainXml(opts: { name: string; uuid?: string; disks: TestDisk[]; projectId?: string; consoleLog?: string }): string {
  const uuid = opts.uuid ?? randomUUID();
  const meta = opts.projectId
    ? `<metadata><oe:project xmlns:oe="${METADATA_NS}">${escapeXml(opts.projectId)}</oe:project></metadata>`
    : '';
  return `<domain type='qemu'>
  <name>${escapeXml(opts.name)}</name>
  <uuid>${uuid}</uuid>
  ${meta}
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <features><acpi/></features>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    ${opts.disks.map(diskXml).join('\n    ')}
    ${opts.consoleLog ? `<serial type='file'><source path='${escapeXml(opts.consoleLog)}'/></serial>` : ''}
    <memballoon model='none'/>
  </devices>
</domain>`;
}

/** Attach `file` to a free loop device; returns the device path. */
export function losetupAttach(file: string): string {
  return execFileSync('losetup', ['-f', '--show', file], { encoding: 'utf8' }).trim();
}

export function losetupDetach(dev: string): void {
  try {
    execFileSync('losetup', ['-d', dev], { stdio: 'pipe' });
  } catch {
    // already gone
  }
}
