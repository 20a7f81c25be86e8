/// How feature values are stored on disk.
public enum FeatureEncoding: String, Codable, Sendable, CaseIterable {
    /// IEEE float32, little-endian: exact.
    case fp32
    /// IEEE float16 (round to nearest even): ~3 decimal digits, range +-65504.
    case fp16
    /// bfloat16, the top half of a float32 rounded to nearest even: float32's range, ~2-3 digits.
    case bf16

    public var bytesPerValue: Int { self == .fp32 ? 4 : 2 }

    /// Floats of the row buffer one sample [C, H, W] needs to be written in this encoding: its
    /// encoded bytes rounded up to whole floats; none for fp32, whose rows are bound straight
    /// from the batch. The one place the store's write path and the plan take it from.
    public func rowBufferFloats(shape: [Int]) -> Int {
        self == .fp32 ? 0 : (shape.reduce(1, *) * bytesPerValue + 3) / 4
    }

    /// Encodes `count` floats into `destination` (count * bytesPerValue bytes).
    public func encode(_ values: UnsafePointer<Float>, count: Int, into destination: UnsafeMutableRawPointer) {
        switch self {
        case .fp32:
            destination.copyMemory(from: values, byteCount: count * 4)
        case .fp16:
            let out = destination.assumingMemoryBound(to: UInt16.self)
            for i in 0..<count { out[i] = Float16(values[i]).bitPattern.littleEndian }
        case .bf16:
            let out = destination.assumingMemoryBound(to: UInt16.self)
            for i in 0..<count { out[i] = bfloat16Bits(values[i]).littleEndian }
        }
    }

    /// Decodes `count` values from `source` into floats.
    public func decode(_ source: UnsafeRawPointer, count: Int, into values: UnsafeMutablePointer<Float>) {
        switch self {
        case .fp32:
            UnsafeMutableRawPointer(values).copyMemory(from: source, byteCount: count * 4)
        case .fp16:
            let out = UnsafeMutableRawPointer(values).assumingMemoryBound(to: UInt32.self)
            for i in 0..<count {
                out[i] = float32Bits(half: UInt16(littleEndian: source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
            }
        case .bf16:
            for i in 0..<count {
                let bits = UInt16(littleEndian: source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                values[i] = Float(bitPattern: UInt32(bits) << 16)
            }
        }
    }
}

/// float32 bits of an IEEE half, by bit manipulation (Swift's Float16 conversion is a library call
/// on x86-64 without F16C): normal numbers shift the exponent and significand into place; zero,
/// subnormals, infinities and NaNs take the slow branch.
@inline(__always)
public func float32Bits(half: UInt16) -> UInt32 {
    let sign = UInt32(half & 0x8000) << 16
    let exponent = UInt32(half & 0x7C00)
    let significand = UInt32(half & 0x03FF)
    if exponent != 0 && exponent != 0x7C00 {
        return sign | ((exponent + 0x1_C000) << 13) | (significand << 13)  // rebias 15 -> 127
    }
    return Float(Float16(bitPattern: half)).bitPattern
}

/// bfloat16 bits of a float, rounding to nearest even (NaN kept quiet).
@inline(__always)
public func bfloat16Bits(_ value: Float) -> UInt16 {
    let bits = value.bitPattern
    if value.isNaN { return UInt16(bits >> 16) | 0x40 }
    let rounding = 0x7FFF + ((bits >> 16) & 1)
    return UInt16((bits &+ rounding) >> 16)
}

