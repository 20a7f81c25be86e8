import BlockwiseKernels
import XCTest

/// Finite-difference checks for the element-wise, pooling, linear and loss kernels.
final class LayerGradientTests: XCTestCase {
    func testReLU() {
        // Inputs kept away from 0 so that +-h does not cross the kink.
        var x = randomArray(40, seed: 31)
        x = x.map { $0 >= 0 ? $0 + 0.1 : $0 - 0.1 }
        GradientCheck().check("relu", inputs: [x], forward: { v in v[0].map { max($0, 0) } }, backward: { v, dOut in
            var out = [Float](repeating: 0, count: v[0].count)
            out.withUnsafeMutableBufferPointer { reluForward(output: $0.baseAddress!, input: v[0], count: v[0].count) }
            var dx = [Float](repeating: 0, count: v[0].count)
            dx.withUnsafeMutableBufferPointer { reluBackward(dInput: $0.baseAddress!, dOutput: dOut, output: out, count: out.count) }
            return [dx]
        })
    }

    func testResidualAddAndMeanSquare() {
        let a = randomArray(12, seed: 32), b = randomArray(12, seed: 33)
        var sum = [Float](repeating: 0, count: 12)
        sum.withUnsafeMutableBufferPointer { addForward(output: $0.baseAddress!, a, b, count: 12) }
        XCTAssertEqual(sum, zip(a, b).map { $0 + $1 })
        // mean(x^2) on a hand case: (1 + 4 + 9 + 16) / 4 = 7.5
        XCTAssertEqual(meanSquare([1, -2, 3, 4], count: 4), 7.5)
        GradientCheck().check("meanSquare", inputs: [a], forward: { v in [Float(0.7 * meanSquare(v[0], count: v[0].count))] },
                              backward: { v, dOut in
            var dx = [Float](repeating: 0, count: v[0].count)
            dx.withUnsafeMutableBufferPointer { meanSquareBackward(dInput: $0.baseAddress!, input: v[0], count: v[0].count, weight: 0.7 * dOut[0]) }
            return [dx]
        })
    }

    func testAveragePool() {
        let (n, c, h, w, k, s) = (2, 2, 6, 5, 2, 2)
        let oh = averagePoolOutputSize(h, kernel: k, stride: s), ow = averagePoolOutputSize(w, kernel: k, stride: s)
        XCTAssertEqual([oh, ow], [3, 2])
        let x = randomArray(n * c * h * w, seed: 34)
        GradientCheck().check("avgpool", inputs: [x], forward: { v in
            var out = [Float](repeating: 0, count: n * c * oh * ow)
            out.withUnsafeMutableBufferPointer { averagePoolForward(output: $0.baseAddress!, input: v[0], batch: n, channels: c, height: h, width: w, kernel: k, stride: s) }
            return out
        }, backward: { v, dOut in
            var dx = [Float](repeating: 0, count: v[0].count)
            dx.withUnsafeMutableBufferPointer { averagePoolBackward(dInput: $0.baseAddress!, dOutput: dOut, batch: n, channels: c, height: h, width: w, kernel: k, stride: s) }
            return [dx]
        })
    }

    func testGlobalAveragePool() {
        let (n, c, sp) = (3, 4, 7)
        let x = randomArray(n * c * sp, seed: 35)
        GradientCheck().check("global avgpool", inputs: [x], forward: { v in
            var out = [Float](repeating: 0, count: n * c)
            out.withUnsafeMutableBufferPointer { globalAveragePoolForward(output: $0.baseAddress!, input: v[0], batch: n, channels: c, spatial: sp) }
            return out
        }, backward: { v, dOut in
            var dx = [Float](repeating: 0, count: v[0].count)
            dx.withUnsafeMutableBufferPointer { globalAveragePoolBackward(dInput: $0.baseAddress!, dOutput: dOut, batch: n, channels: c, spatial: sp) }
            return [dx]
        })
    }

    func testOptionAShortcut() {
        // Odd sizes: 5x7 -> 3x4, the same as a 3x3 stride-2 padding-1 convolution.
        let g = ShortcutGeometry(inputChannels: 2, outputChannels: 4, inputHeight: 5, inputWidth: 7)
        XCTAssertEqual(g.outputHeight, Conv2dGeometry(inputChannels: 2, outputChannels: 4, kernelSize: 3, stride: 2, inputHeight: 5, inputWidth: 7).outputHeight)
        XCTAssertEqual(g.outputWidth, 4)
        let n = 2
        let x = randomArray(n * 2 * 5 * 7, seed: 36)
        let forward: ([[Float]]) -> [Float] = { v in
            var out = [Float](repeating: 9, count: n * 4 * 3 * 4)
            out.withUnsafeMutableBufferPointer { shortcutForward(output: $0.baseAddress!, input: v[0], batch: n, geometry: g) }
            return out
        }
        let out = forward([x])
        // Channel 0 of the output is padding; channel 1 is input channel 0 averaged over 2x2 windows.
        XCTAssertEqual(Array(out[0..<12]), [Float](repeating: 0, count: 12))
        XCTAssertEqual(out[12], (x[0] + x[1] + x[7] + x[8]) / 4, accuracy: 1e-6)
        XCTAssertEqual(out[12 + 3], (x[6] + x[13]) / 2, accuracy: 1e-6)  // last column: a 2x1 window
        GradientCheck().check("option-A shortcut", inputs: [x], forward: forward, backward: { v, dOut in
            var dx = [Float](repeating: 0, count: v[0].count)
            dx.withUnsafeMutableBufferPointer { shortcutBackward(dInput: $0.baseAddress!, dOutput: dOut, batch: n, geometry: g) }
            return [dx]
        })
    }

    func testLinear() {
        let (n, i, o) = (3, 5, 4)
        GradientCheck().check("linear", inputs: [randomArray(n * i, seed: 37), randomArray(o * i, seed: 38), randomArray(o, seed: 39)],
                              forward: { v in
            var out = [Float](repeating: 0, count: n * o)
            out.withUnsafeMutableBufferPointer { linearForward(output: $0.baseAddress!, input: v[0], weight: v[1], bias: v[2], batch: n, inputFeatures: i, outputFeatures: o) }
            return out
        }, backward: { v, dOut in
            var dx = [Float](repeating: 0, count: n * i), dw = [Float](repeating: 0, count: o * i), db = [Float](repeating: 0, count: o)
            dx.withUnsafeMutableBufferPointer { a in dw.withUnsafeMutableBufferPointer { b in db.withUnsafeMutableBufferPointer { c in
                linearBackward(dInput: a.baseAddress!, dWeight: b.baseAddress!, dBias: c.baseAddress!, dOutput: dOut, input: v[0], weight: v[1], batch: n, inputFeatures: i, outputFeatures: o)
            } } }
            return [dx, dw, db]
        })
    }

    func testCrossEntropyWithLabelSmoothing() {
        let (n, c) = (4, 5)
        let labels: [Int32] = [0, 3, 4, 1]
        // Hand case: uniform logits give loss log(C) whatever the smoothing.
        let uniform = softmaxCrossEntropy(logits: [Float](repeating: 0.3, count: c), labels: [Int32(2)], batch: 1, classes: c,
                                          labelSmoothing: 0.1, dLogits: nil)
        XCTAssertEqual(uniform.loss, log(5.0), accuracy: 1e-6)
        for smoothing: Float in [0, 0.1] {
            var check = GradientCheck()
            check.step = 1e-3
            check.check("cross-entropy (smoothing \(smoothing))", inputs: [randomArray(n * c, seed: 40, scale: 2)], forward: { v in
                [Float(softmaxCrossEntropy(logits: v[0], labels: labels, batch: n, classes: c, labelSmoothing: smoothing, dLogits: nil).loss)]
            }, backward: { v, dOut in
                var g = [Float](repeating: 0, count: n * c)
                _ = g.withUnsafeMutableBufferPointer { softmaxCrossEntropy(logits: v[0], labels: labels, batch: n, classes: c, labelSmoothing: smoothing, dLogits: $0.baseAddress!, scale: dOut[0]) }
                return [g]
            })
        }
    }
}
