import CZlib

/// CRC-32 (zlib) of a byte range, seeded with `seed` to chain fields.
public func checksum(_ bytes: UnsafeRawBufferPointer, seed: UInt32 = 0) -> UInt32 {
    UInt32(crc32(uLong(seed), bytes.baseAddress?.assumingMemoryBound(to: Bytef.self), uInt(bytes.count)))
}
