/// A ReLU's backward mask kept as bits (issue 19): bit e of the mask is `y[e] > 0` for element e
/// of an output tensor [N, C, H, W] taken as one array, 1 bit per element instead of a float.
/// The words are `UInt32`, stored in a 4-byte-per-entry arena tensor; one padding word at the
/// end lets every read fetch two words at once.

/// 32-bit words a mask of `count` elements takes (with its padding word).
public func reluMaskWords(count: Int) -> Int { (count + 31) / 32 + 1 }

/// Writes the mask of `y > 0` over `count` elements into `words` (``reluMaskWords(count:)`` of them).
/// Memory: none besides the mask; reads y once.
public func packReLUMask(_ y: UnsafePointer<Float>, count: Int, into words: UnsafeMutablePointer<UInt32>) {
    let full = count / 32
    let lanes = laneBits
    parallelRanges(full, costPerItem: 32) { range in
        for w in range {
            let base = y + w * 32
            let low = lanes.replacing(with: 0, where: .!(loadLanes(base) .> 0)).wrappedSum()
            let high = lanes.replacing(with: 0, where: .!(loadLanes(base + 16) .> 0)).wrappedSum()
            words[w] = low | high << 16
        }
    }
    var tail: UInt32 = 0
    for e in (full * 32)..<count where y[e] > 0 { tail |= 1 << UInt32(e - full * 32) }
    words[full] = tail
    if full + 1 < reluMaskWords(count: count) { words[full + 1] = 0 }
}

/// 1, 2, 4, ... 2^15: lane i's bit in 16 mask bits (a literal, not a global: a global's lazy
/// initialisation would be checked on every read in the loops).
@inline(__always)
private var laneBits: SIMD16<UInt32> { SIMD16(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768) }

/// For each byte of mask bits, its 8 elements as floats: 1 where the bit is set, else 0. Read
/// once per call into a local (a global's lazy initialisation is checked on each read).
private let reluMaskByteLanes: UnsafePointer<SIMD8<Float>> = {
    let table = UnsafeMutablePointer<SIMD8<Float>>.allocate(capacity: 256)
    for byte in 0..<256 {
        var lanes = SIMD8<Float>(repeating: 0)
        for bit in 0..<8 where byte & (1 << bit) != 0 { lanes[bit] = 1 }
        table[byte] = lanes
    }
    return UnsafePointer(table)
}()

/// The 16 mask bits of elements `start ..< start + 16` (the padding word makes the second read safe).
@inline(__always)
func reluMaskBits16(_ words: UnsafePointer<UInt32>, _ start: Int) -> UInt32 {
    let w = start >> 5, shift = UInt64(start & 31)
    let pair = UInt64(words[w]) | UInt64(words[w + 1]) << 32
    return UInt32(truncatingIfNeeded: pair >> shift) & 0xFFFF
}

/// Whether element `e` of the mask is set.
@inline(__always)
public func reluMaskBit(_ words: UnsafePointer<UInt32>, _ e: Int) -> Bool { (words[e >> 5] >> UInt32(e & 31)) & 1 != 0 }

/// ``maskedResidualGradient(_:_:y:x:_:transportScale:a:b:)`` with the output ReLU's mask as bits:
/// element i of the plane is element `maskStart + i` of the mask. The same floats as the float mask.
@inline(__always)
public func maskedResidualGradient(_ g: UnsafeMutablePointer<Float>, _ r: UnsafeMutablePointer<Float>, mask: UnsafePointer<UInt32>,
                                   maskStart: Int, x: UnsafePointer<Float>, _ count: Int, transportScale: Float, a: Float, b: Float) {
    let zero = Lanes(repeating: 0), s = Lanes(repeating: transportScale), va = Lanes(repeating: a), vb = Lanes(repeating: b)
    let transport = transportScale != 0
    let table = reluMaskByteLanes
    var i = 0
    while i + 16 <= count {
        // The 16 bits as 16 floats (1 where set) from two byte look-ups, compared as floats: the
        // comparison the float mask uses (a comparison of integer lanes is not vectorised here).
        let bits = Int(reluMaskBits16(mask, maskStart + i))
        let set = Lanes(lowHalf: table[bits & 0xFF], highHalf: table[bits >> 8])
        let d = zero.replacing(with: loadLanes(UnsafePointer(g + i)), where: set .> zero)
        storeLanes(d, g + i)
        storeLanes(transport ? d + s * (loadLanes(x + i) * va + vb) : d, r + i)
        i += 16
    }
    while i < count {
        let d = reluMaskBit(mask, maskStart + i) ? g[i] : 0
        g[i] = d
        r[i] = transport ? d + transportScale * (x[i] * a + b) : d
        i += 1
    }
}
