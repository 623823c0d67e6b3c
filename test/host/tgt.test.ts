import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TGTADM_UNREACHABLE, Tgtadm, parseTargets, tgtRequest, tgtadmArgs } from '../../src/host/tgt.js';

describe('parseTargets (tgtadm --op show)', () => {
  const sample = `Target 1: iqn.2026-11.dev.online-extend:vol-a
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
    LUN information:
        LUN: 0
            Type: controller
            Size: 0 MB, Block size: 1
            Backing store path: None
        LUN: 1
            Type: disk
            Size: 3000 MB, Block size: 512
            Backing store type: rdwr
            Backing store path: /pool/vol-a.raw
            Backing store flags: 
    Account information:
    ACL information:
        ALL
Target 3: iqn.2026-11.dev.online-extend:vol-b
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
    LUN information:
        LUN: 0
            Type: controller
            Backing store path: None
    Account information:
    ACL information:
`;

  it('reads tids, IQNs, LUN backing files and ACLs', () => {
    expect(parseTargets(sample)).toEqual([
      {
        tid: 1,
        iqn: 'iqn.2026-11.dev.online-extend:vol-a',
        luns: [
          { lun: 0, sizeText: '0 MB' },
          { lun: 1, sizeText: '3000 MB', backingPath: '/pool/vol-a.raw' },
        ],
        acls: ['ALL'],
      },
      { tid: 3, iqn: 'iqn.2026-11.dev.online-extend:vol-b', luns: [{ lun: 0, sizeText: '' }], acls: [] },
    ]);
  });

  it('reads the full output of a real tgtd (captured here: three LUNs, one with 4096-byte blocks)', () => {
    const text = readFileSync(join(import.meta.dirname, 'fixtures', 'tgtadm-show-target.txt'), 'utf8');
    expect(parseTargets(text)).toEqual([
      {
        tid: 1,
        iqn: 'iqn.2026-11.dev.oe:cap',
        luns: [
          { lun: 0, sizeText: '0 MB' },
          { lun: 1, sizeText: '105 MB', backingPath: '/tmp/ehost-cap/lun.raw' },
          { lun: 2, sizeText: '12 MB', backingPath: '/tmp/ehost-cap/odd.raw' },
          { lun: 3, sizeText: '67 MB', backingPath: '/tmp/ehost-cap/lun4k.raw' },
        ],
        acls: ['ALL'],
      },
    ]);
  });

  it('reads no targets from an empty listing', () => {
    expect(parseTargets('')).toEqual([]);
  });
});

describe('tgtadm arguments', () => {
  it.each([
    [undefined, ['--lld', 'iscsi', '--op', 'show', '--mode', 'target']],
    [0, ['--lld', 'iscsi', '--op', 'show', '--mode', 'target']],
    [3261, ['--lld', 'iscsi', '-C', '3261', '--op', 'show', '--mode', 'target']],
  ])('name control port %j only when it is not the default', (port, args) => {
    expect(tgtadmArgs(port, tgtRequest.showTargets())).toEqual(args);
    expect(new Tgtadm({ ...(port === undefined ? {} : { controlPort: port }) }).args(tgtRequest.showTargets())).toEqual(args);
  });

  it.each([
    [tgtRequest.newTarget(4, 'iqn.x:v'), '--op new --mode target --tid 4 -T iqn.x:v'],
    [tgtRequest.newLun(4, 1, '/p/v.raw'), '--op new --mode logicalunit --tid 4 --lun 1 -b /p/v.raw'],
    [tgtRequest.deleteLun(4, 1), '--op delete --mode logicalunit --tid 4 --lun 1'],
    [tgtRequest.bindAll(4), '--op bind --mode target --tid 4 -I ALL'],
    [tgtRequest.deleteTarget(4, { force: true }), '--op delete --mode target --tid 4 --force'],
    [tgtRequest.stopDaemon(), '--op delete --mode system'],
  ])('builds %j', (args, line) => {
    expect(args.join(' ')).toBe(line);
  });

  it('knows exit 107 as tgtd unreachable, and nothing else', () => {
    expect(TGTADM_UNREACHABLE).toBe(107);
    expect(Tgtadm.unreachable({ code: 107 })).toBe(true);
    expect(Tgtadm.unreachable({ code: 22 })).toBe(false);
  });
});
