/**
 * Storage failures are classified where they happen: by errno for the filesystem (one table,
 * src/util/errno.ts), and their public message never names a path (the path goes in `detail`).
 */
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServiceError } from '../../src/errors.js';
import { ERRNO_CLASSES, classifyErrno } from '../../src/util/errno.js';
import { PROBE_CEILING, maxFileBytes } from '../../src/util/fsLimits.js';
import { fileBytes, fsFailed, growVolumeFile, makeSparseFile } from '../../src/volume/backends/common.js';
import { FileBackend } from '../../src/volume/backends/file.js';
import { describeReal } from '../support/real.js';

const SECRET_DIR = '/srv/pool-7f3a/volumes';

async function caught(p: Promise<unknown>): Promise<ServiceError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ServiceError);
  return err as ServiceError;
}

describe('the errno table', () => {
  // The decision per errno, spelled out (the table in src/util/errno.ts must agree).
  const cases: Array<[string | undefined, boolean]> = [
    ['ENOSPC', false],
    ['EDQUOT', false],
    ['EFBIG', true],
    ['EACCES', true],
    ['EPERM', true],
    ['EROFS', true],
    ['ENOENT', true],
    ['EIO', false],
    ['EBUSY', false],
    ['ETIMEDOUT', false],
    ['ECONNREFUSED', false],
    ['EWHATEVER', true],
    [undefined, true],
  ];

  it.each(cases)('classifies %s as final=%s', (errno, final) => {
    expect(classifyErrno(errno === undefined ? new Error('x') : Object.assign(new Error('x'), { code: errno })).final).toBe(final);
  });

  it('has a decision for every errno it names, and the test above covers every one that is uncertain', () => {
    const uncertain = Object.entries(ERRNO_CLASSES).filter(([, c]) => !c.final).map(([e]) => e);
    for (const e of ['ENOSPC', 'EDQUOT', 'EIO']) expect(uncertain).toContain(e);
    for (const e of ['EFBIG', 'EACCES', 'EPERM', 'EROFS', 'ENOENT']) expect(ERRNO_CLASSES[e]?.final).toBe(true);
  });

  it.each(cases)('turns %s into a BackendFailed whose message names the operation and errno, never the path', (errno) => {
    const err = fsFailed('grow the volume file', `${SECRET_DIR}/vol-1.raw`, Object.assign(new Error(`${errno}: ${SECRET_DIR}/vol-1.raw`), errno ? { code: errno } : {}));
    expect(err.code).toBe('BackendFailed');
    expect(err.message).toMatch(/^Storage backend failed: cannot grow the volume file: /);
    if (errno && ERRNO_CLASSES[errno]) expect(err.message).toContain(`(${errno})`);
    expect(err.message).not.toContain(SECRET_DIR);
    expect(err.reason).not.toContain(SECRET_DIR);
    expect(err.detail).toContain(SECRET_DIR);
  });
});

describe('filesystem failures of the backends, for real', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'oe-fserr-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reports a path through a regular file as a final ENOTDIR without the path', async () => {
    await writeFile(join(dir, 'plain'), '');
    const err = await caught(fileBytes(join(dir, 'plain', 'vol.raw')));
    expect(err).toMatchObject({ code: 'BackendFailed', final: true });
    expect(err.message).toContain('(ENOTDIR)');
    expect(err.message).not.toContain(dir);
  });

  it('reports a pool directory that cannot be created without naming it', async () => {
    await writeFile(join(dir, 'not-a-dir'), '');
    const b = new FileBackend({ dir: join(dir, 'not-a-dir') });
    const err = await caught(b.create('vol-x', 1024 * 1024));
    expect(err.code).toBe('BackendFailed');
    expect(err.message).not.toContain(dir);
    expect(err.detail).toContain(dir);
  });
});

// Needs a filesystem with a file size limit (ext4: 16 TiB − 4 KiB); tmpfs and XFS have none
// below the probe's ceiling, so there the kernel never answers EFBIG.
const tmpLimit = await maxFileBytes(tmpdir());
const noLimit = tmpLimit < PROBE_CEILING ? undefined : `the filesystem of ${tmpdir()} has no file size limit below 4 PiB`;

describeReal(noLimit)('EFBIG from the filesystem', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'oe-efbig-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('turns EFBIG while growing a volume file into SizeLimitExceeded (400, final) and leaves the file as it was', async () => {
    const f = join(dir, 'grow.raw');
    await makeSparseFile(f, 1024 * 1024, 'vol-grow');
    const err = await caught(growVolumeFile(f, tmpLimit + 512, 'vol-grow'));
    expect(err).toMatchObject({ code: 'SizeLimitExceeded', status: 400, final: true });
    expect(err.message).toContain(String(tmpLimit));
    expect(err.message).toContain('vol-grow');
    expect(err.message).not.toContain(dir);
    expect((await stat(f)).size).toBe(1024 * 1024);
  });

  it('turns EFBIG while creating a volume file into SizeLimitExceeded', async () => {
    const f = join(dir, 'new.raw');
    const err = await caught(makeSparseFile(f, tmpLimit + 512, 'vol-new'));
    expect(err).toMatchObject({ code: 'SizeLimitExceeded', status: 400, final: true });
    // The file was opened before truncate refused; the backends make it through
    // createAtomically, which removes it. Here only the empty name is left.
    expect((await stat(f)).size).toBe(0);
  });
});
