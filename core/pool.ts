/**
 * A caching pool of storage buffers. Sizes are rounded up to a size class
 * (eight classes per power of two, so at most 12.5% is wasted), and freed
 * buffers are kept per class for the next tensor of that class.
 * @module
 */

/** Usage flags of every tensor buffer. */
export const TENSOR_USAGE = 0x80 /* STORAGE */ | 0x04 /* COPY_SRC */ | 0x08; /* COPY_DST */

/** Rounds `bytes` up to its size class. */
export function sizeClass(bytes: number): number {
  const b = Math.max(16, Math.ceil(bytes / 4) * 4);
  if (b <= 256) return Math.ceil(b / 16) * 16;
  const p = 2 ** Math.floor(Math.log2(b - 1));
  const step = p / 8;
  return Math.ceil(b / step) * step;
}

/** Reuses GPU buffers by size class; see {@link sizeClass}. */
export class BufferPool {
  #free = new Map<number, GPUBuffer[]>();
  /** Bytes currently handed out. */
  liveBytes = 0;
  /** Highest `liveBytes` seen since the last {@link BufferPool.resetPeak}. */
  peakBytes = 0;
  /** Bytes held in the free lists. */
  freeBytes = 0;
  /** Buffers created (pool misses). */
  created = 0;

  #device: GPUDevice | null;

  /** Creates a pool allocating from `device`. */
  constructor(device: GPUDevice) {
    this.#device = device;
  }

  /** The device buffers come from; throws once the pool is closed. */
  get device(): GPUDevice {
    if (!this.#device) throw new Error("the buffer pool's device was closed");
    return this.#device;
  }

  /** A buffer of at least `bytes` bytes (its `size` is the size class). */
  acquire(bytes: number): GPUBuffer {
    const size = sizeClass(bytes);
    const list = this.#free.get(size);
    let buf = list?.pop();
    if (buf) {
      this.freeBytes -= size;
    } else {
      const max = this.device.limits.maxBufferSize;
      if (size > max) {
        throw new Error(
          `a tensor of ${bytes} bytes exceeds the adapter's maxBufferSize (${max} bytes)`,
        );
      }
      buf = this.device.createBuffer({ size, usage: TENSOR_USAGE });
      this.created++;
    }
    this.liveBytes += size;
    if (this.liveBytes > this.peakBytes) this.peakBytes = this.liveBytes;
    return buf;
  }

  /** Returns `buf` to the pool. Work already recorded on it stays valid (queue order). */
  release(buf: GPUBuffer): void {
    const size = buf.size;
    this.liveBytes -= size;
    if (!this.#device) {
      buf.destroy(); // closed: keep nothing that holds the device
      return;
    }
    this.freeBytes += size;
    let list = this.#free.get(size);
    if (!list) this.#free.set(size, list = []);
    list.push(buf);
  }

  /** Resets the peak counter to the current live bytes. */
  resetPeak(): void {
    this.peakBytes = this.liveBytes;
  }

  /** Destroys every free buffer (call only after pending work was submitted). */
  clear(): void {
    for (const list of this.#free.values()) for (const b of list) b.destroy();
    this.#free.clear();
    this.freeBytes = 0;
  }

  /**
   * Destroys the free buffers and drops the device: buffers released later are
   * destroyed, not kept, and {@link BufferPool.acquire} throws.
   */
  close(): void {
    this.clear();
    this.#device = null;
  }
}
