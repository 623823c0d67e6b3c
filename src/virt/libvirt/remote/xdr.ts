/**
 * A minimal XDR (RFC 4506) encoder and decoder: the subset libvirt's RPC uses.
 * Everything is big-endian and padded to 4 bytes.
 */

export class XdrError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'XdrError';
  }
}

const pad4 = (n: number): number => (4 - (n % 4)) % 4;

export class XdrWriter {
  private buf: Buffer;
  private pos = 0;

  constructor(initial = 256) {
    this.buf = Buffer.allocUnsafe(initial);
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  int(v: number): this {
    if (!Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff) throw new XdrError(`int out of range: ${v}`);
    this.ensure(4);
    this.buf.writeInt32BE(v, this.pos);
    this.pos += 4;
    return this;
  }

  uint(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new XdrError(`unsigned int out of range: ${v}`);
    this.ensure(4);
    this.buf.writeUInt32BE(v, this.pos);
    this.pos += 4;
    return this;
  }

  bool(v: boolean): this {
    return this.int(v ? 1 : 0);
  }

  hyper(v: number | bigint): this {
    const b = BigInt(v);
    if (b < -(1n << 63n) || b >= 1n << 63n) throw new XdrError(`hyper out of range: ${v}`);
    this.ensure(8);
    this.buf.writeBigInt64BE(b, this.pos);
    this.pos += 8;
    return this;
  }

  uhyper(v: number | bigint): this {
    const b = BigInt(v);
    if (b < 0n || b >= 1n << 64n) throw new XdrError(`unsigned hyper out of range: ${v}`);
    this.ensure(8);
    this.buf.writeBigUInt64BE(b, this.pos);
    this.pos += 8;
    return this;
  }

  double(v: number): this {
    this.ensure(8);
    this.buf.writeDoubleBE(v, this.pos);
    this.pos += 8;
    return this;
  }

  /** Fixed-length opaque: the bytes, padded, no length word. */
  fixedOpaque(data: Uint8Array, length: number): this {
    if (data.length !== length) throw new XdrError(`fixed opaque must be ${length} bytes, got ${data.length}`);
    this.ensure(length + pad4(length));
    Buffer.from(data.buffer, data.byteOffset, data.byteLength).copy(this.buf, this.pos);
    this.pos += length;
    for (let i = 0; i < pad4(length); i++) this.buf[this.pos++] = 0;
    return this;
  }

  /** Variable-length opaque: length word, bytes, padding. */
  opaque(data: Uint8Array): this {
    this.uint(data.length);
    if (data.length === 0) return this;
    return this.fixedOpaque(data, data.length);
  }

  string(s: string): this {
    return this.opaque(Buffer.from(s, 'utf8'));
  }

  /** An optional value (`T *` in XDR): a bool, then the value if present. */
  optional<T>(v: T | null | undefined, write: (w: this, v: T) => void): this {
    if (v === null || v === undefined) return this.bool(false);
    this.bool(true);
    write(this, v);
    return this;
  }

  array<T>(items: readonly T[], write: (w: this, v: T) => void): this {
    this.uint(items.length);
    for (const item of items) write(this, item);
    return this;
  }

  /** Raw bytes, no padding or length (for already-encoded parts). */
  raw(data: Uint8Array): this {
    this.ensure(data.length);
    Buffer.from(data.buffer, data.byteOffset, data.byteLength).copy(this.buf, this.pos);
    this.pos += data.length;
    return this;
  }

  get length(): number {
    return this.pos;
  }

  /** A copy-free view of what was written. */
  bytes(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}

export class XdrReader {
  private pos: number;

  constructor(
    private readonly buf: Buffer,
    offset = 0,
    private readonly end = buf.length,
  ) {
    this.pos = offset;
  }

  private need(n: number): void {
    if (this.pos + n > this.end) {
      throw new XdrError(`truncated XDR data: need ${n} bytes at ${this.pos}, have ${this.end - this.pos}`);
    }
  }

  int(): number {
    this.need(4);
    const v = this.buf.readInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  uint(): number {
    this.need(4);
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  bool(): boolean {
    const v = this.int();
    if (v !== 0 && v !== 1) throw new XdrError(`invalid XDR bool ${v}`);
    return v === 1;
  }

  hyperBig(): bigint {
    this.need(8);
    const v = this.buf.readBigInt64BE(this.pos);
    this.pos += 8;
    return v;
  }

  uhyperBig(): bigint {
    this.need(8);
    const v = this.buf.readBigUInt64BE(this.pos);
    this.pos += 8;
    return v;
  }

  /** A hyper as a number; throws if it is not exactly representable. */
  hyper(): number {
    return toSafeNumber(this.hyperBig());
  }

  uhyper(): number {
    return toSafeNumber(this.uhyperBig());
  }

  double(): number {
    this.need(8);
    const v = this.buf.readDoubleBE(this.pos);
    this.pos += 8;
    return v;
  }

  fixedOpaque(length: number): Buffer {
    this.need(length + pad4(length));
    const out = Buffer.from(this.buf.subarray(this.pos, this.pos + length));
    this.pos += length + pad4(length);
    return out;
  }

  opaque(max = Number.MAX_SAFE_INTEGER): Buffer {
    const len = this.uint();
    if (len > max) throw new XdrError(`XDR opaque length ${len} exceeds ${max}`);
    return this.fixedOpaque(len);
  }

  string(max?: number): string {
    return this.opaque(max).toString('utf8');
  }

  optional<T>(read: (r: this) => T): T | null {
    return this.bool() ? read(this) : null;
  }

  array<T>(read: (r: this) => T, max = 1_000_000): T[] {
    const n = this.uint();
    if (n > max) throw new XdrError(`XDR array length ${n} exceeds ${max}`);
    const out: T[] = [];
    for (let i = 0; i < n; i++) out.push(read(this));
    return out;
  }

  get offset(): number {
    return this.pos;
  }

  get remaining(): number {
    return this.end - this.pos;
  }
}

function toSafeNumber(v: bigint): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
    throw new XdrError(`64-bit value ${v} does not fit a JavaScript number`);
  }
  return Number(v);
}
