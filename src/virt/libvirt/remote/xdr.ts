/**
 * A minimal XDR (RFC 4506) encoder and decoder: the subset libvirt's RPC uses.
 * Everything is big-endian and padded to 4 bytes.
 */

/** Malformed or out-of-range XDR: a value that does not fit its type, truncated data, a length above its bound. */
export class XdrError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'XdrError';
  }
}

const pad4 = (n: number): number => (4 - (n % 4)) % 4;

/** Builds an XDR body in a growing buffer; every writer returns `this` to chain. Throws XdrError on out-of-range values. */
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

  /** A signed 32-bit int. Throws XdrError outside -2^31..2^31-1 or for a non-integer. */
  int(v: number): this {
    if (!Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff) throw new XdrError(`int out of range: ${v}`);
    this.ensure(4);
    this.buf.writeInt32BE(v, this.pos);
    this.pos += 4;
    return this;
  }

  /** An unsigned 32-bit int. Throws XdrError outside 0..2^32-1 or for a non-integer. */
  uint(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new XdrError(`unsigned int out of range: ${v}`);
    this.ensure(4);
    this.buf.writeUInt32BE(v, this.pos);
    this.pos += 4;
    return this;
  }

  /** A bool: the int 1 or 0. */
  bool(v: boolean): this {
    return this.int(v ? 1 : 0);
  }

  /** A signed 64-bit hyper. Throws XdrError outside -2^63..2^63-1 (and RangeError for a non-integer number, from BigInt). */
  hyper(v: number | bigint): this {
    const b = BigInt(v);
    if (b < -(1n << 63n) || b >= 1n << 63n) throw new XdrError(`hyper out of range: ${v}`);
    this.ensure(8);
    this.buf.writeBigInt64BE(b, this.pos);
    this.pos += 8;
    return this;
  }

  /** An unsigned 64-bit hyper. Throws XdrError outside 0..2^64-1 (and RangeError for a non-integer number, from BigInt). */
  uhyper(v: number | bigint): this {
    const b = BigInt(v);
    if (b < 0n || b >= 1n << 64n) throw new XdrError(`unsigned hyper out of range: ${v}`);
    this.ensure(8);
    this.buf.writeBigUInt64BE(b, this.pos);
    this.pos += 8;
    return this;
  }

  /** An IEEE 754 double (8 bytes). */
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

  /** A string: UTF-8 bytes as variable-length opaque. */
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

  /** A variable-length array: the count (uint), then each item as `write` encodes it. */
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

  /** Bytes written so far. */
  get length(): number {
    return this.pos;
  }

  /** A copy-free view of what was written. */
  bytes(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}

/** Reads XDR from `buf` between `offset` and `end`. Every reader throws XdrError on truncated data or a bound exceeded. */
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

  /** A signed 32-bit int. */
  int(): number {
    this.need(4);
    const v = this.buf.readInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  /** An unsigned 32-bit int. */
  uint(): number {
    this.need(4);
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  /** A bool; throws XdrError for any int but 0 and 1. */
  bool(): boolean {
    const v = this.int();
    if (v !== 0 && v !== 1) throw new XdrError(`invalid XDR bool ${v}`);
    return v === 1;
  }

  /** A signed 64-bit hyper as bigint. */
  hyperBig(): bigint {
    this.need(8);
    const v = this.buf.readBigInt64BE(this.pos);
    this.pos += 8;
    return v;
  }

  /** An unsigned 64-bit hyper as bigint. */
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

  /** An unsigned hyper as a number; throws XdrError if it is above Number.MAX_SAFE_INTEGER. */
  uhyper(): number {
    return toSafeNumber(this.uhyperBig());
  }

  /** An IEEE 754 double (8 bytes). */
  double(): number {
    this.need(8);
    const v = this.buf.readDoubleBE(this.pos);
    this.pos += 8;
    return v;
  }

  /** Fixed-length opaque: `length` bytes (copied) and their padding. */
  fixedOpaque(length: number): Buffer {
    this.need(length + pad4(length));
    const out = Buffer.from(this.buf.subarray(this.pos, this.pos + length));
    this.pos += length + pad4(length);
    return out;
  }

  /** Variable-length opaque: length word, bytes, padding. Throws XdrError when the length is above `max` bytes. */
  opaque(max = Number.MAX_SAFE_INTEGER): Buffer {
    const len = this.uint();
    if (len > max) throw new XdrError(`XDR opaque length ${len} exceeds ${max}`);
    return this.fixedOpaque(len);
  }

  /** A string (UTF-8 opaque) of at most `max` bytes. */
  string(max?: number): string {
    return this.opaque(max).toString('utf8');
  }

  /** An optional value (`T *` in XDR): a bool, then the value if present; null when absent. */
  optional<T>(read: (r: this) => T): T | null {
    return this.bool() ? read(this) : null;
  }

  /** A variable-length array: the count (uint; XdrError above `max`), then each item as `read` decodes it. */
  array<T>(read: (r: this) => T, max = 1_000_000): T[] {
    const n = this.uint();
    if (n > max) throw new XdrError(`XDR array length ${n} exceeds ${max}`);
    const out: T[] = [];
    for (let i = 0; i < n; i++) out.push(read(this));
    return out;
  }

  /** Bytes from the start of the buffer to the next read. */
  get offset(): number {
    return this.pos;
  }

  /** Bytes left before `end`. */
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
