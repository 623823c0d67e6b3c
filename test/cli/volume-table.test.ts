/**
 * Cells of `online-extend volume list|show|extend` tables: `guest_fs`, what the latest extend did
 * about the guest's filesystem, with its size in bytes (the unit said) and rounded beside it; and
 * `extend`, the step under way or the error that ended it (which names its step once).
 */
import { describe, expect, it } from 'vitest';
import { fsCell, volumeRow, type VolumeView } from '../../src/cli/volume.js';

type Growth = NonNullable<VolumeView['fs_growth']>;
const grown = (more: Partial<Growth>): Growth => ({ requested: true, grown: true, reason: null, device: '/dev/vdb', fs_type: 'ext4', fs_bytes: 128 * 2 ** 20, ...more });

describe('the guest_fs cell', () => {
  it.each<[string, VolumeView['fs_growth'], string]>([
    ['no extend recorded', null, ''],
    ['an extend that did not ask', { ...grown({}), requested: false, grown: null }, ''],
    ['an extend still running', grown({ grown: null, fs_bytes: null }), 'pending'],
    ['a filesystem not grown, with the reason', grown({ grown: false, reason: 'no_guest_agent', fs_bytes: null }), 'not grown: no_guest_agent'],
    ['a round size', grown({}), 'ext4 on /dev/vdb, 134217728 bytes (128 MiB)'],
    ['df’s total on a partition (not a round number of MiB)', grown({ device: '/dev/vdb1', fs_bytes: 1_040_166_912 }), 'ext4 on /dev/vdb1, 1040166912 bytes (991.98 MiB)'],
    ['an XFS of a few GiB', grown({ fs_type: 'xfs', fs_bytes: 5 * 2 ** 30 - 3 * 2 ** 20 }), 'xfs on /dev/vdb, 5365563392 bytes (4.99 GiB)'],
    ['a size not yet measured', grown({ fs_bytes: null }), 'ext4 on /dev/vdb'],
  ])('for %s reads "%s"', (_what, growth, cell) => {
    expect(fsCell(growth)).toBe(cell);
  });
});

describe('the extend cell', () => {
  const volume = (extend: VolumeView['extend']): VolumeView => ({ id: 'v', name: 'n', size: 1, size_bytes: 2 ** 30, status: 'in-use', volume_type: 'file', attachments: [], extend });
  const at = (step: string, error: string | null) => ({ step, target_bytes: 2 ** 31, host_bytes: null, error });
  it.each<[string, VolumeView['extend'], string]>([
    ['no extend', null, ''],
    ['an extend under way', at('wait_host', null), 'wait_host'],
    ['a failed extend: its error, which names the step once', at('rescan', 'step rescan: The token is invalid or has expired.'), 'step rescan: The token is invalid or has expired.'],
    ['a timed-out extend', at('wait_host', 'timed out after 900000 ms at step wait_host'), 'timed out after 900000 ms at step wait_host'],
  ])('for %s reads "%s"', (_what, extend, cell) => {
    expect(volumeRow(volume(extend)).extend).toBe(cell);
  });
});
