import BlockwiseKernels
import XCTest

/// The ReLU mask as bits (issue 19): packing is `y > 0` element by element, and the residual
/// gradient from the bits gives the same floats as from y, at any offset and length.
final class ReLUMaskTests: XCTestCase {
    func testBitsAreTheMaskAndGiveTheSameResidualGradient() {
        var generator = SeededGenerator(seed: 3)
        let count = 1001  // not a multiple of 32 or 16
        // Positive, negative, zeros, -0 and NaN: only y > 0 keeps the gradient.
        var y = (0..<count).map { _ in Float(generator.nextNormal()) }
        for i in stride(from: 0, to: count, by: 7) { y[i] = 0 }
        y[5] = -0.0; y[6] = .nan
        let words = reluMaskWords(count: count)
        var mask = [UInt32](repeating: 0xFFFF_FFFF, count: words)
        packReLUMask(y, count: count, into: &mask)
        for e in 0..<count { XCTAssertEqual(reluMaskBit(mask, e), y[e] > 0, "element \(e)") }
        XCTAssertEqual(mask[words - 1], 0, "the padding word is zero")
        let x = (0..<count).map { _ in Float(generator.nextNormal()) }
        let g = (0..<count).map { _ in Float(generator.nextNormal()) }
        for (start, length) in [(0, count), (37, 53), (196, 196), (990, 11), (3, 16)] {
            var gFloat = Array(g[start..<(start + length)]), rFloat = [Float](repeating: 0, count: length)
            var gBits = gFloat, rBits = rFloat
            let xs = Array(x[start..<(start + length)]), ys = Array(y[start..<(start + length)])
            maskedResidualGradient(&gFloat, &rFloat, y: ys, x: xs, length, transportScale: 0.25, a: 1.5, b: -0.5)
            maskedResidualGradient(&gBits, &rBits, mask: mask, maskStart: start, x: xs, length, transportScale: 0.25, a: 1.5, b: -0.5)
            XCTAssertEqual(gBits.map(\.bitPattern), gFloat.map(\.bitPattern), "g at \(start), \(length)")
            XCTAssertEqual(rBits.map(\.bitPattern), rFloat.map(\.bitPattern), "r at \(start), \(length)")
        }
    }
}
