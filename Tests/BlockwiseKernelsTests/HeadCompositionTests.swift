import BlockwiseKernels
import XCTest

/// Kernels chained as in the 1cnn head, checked together by finite differences.
final class HeadCompositionTests: XCTestCase {
    func testGapBn1dLinearCE() {
        let (n, c, sp, k) = (4, 3, 5, 3)
        let labels: [Int32] = [0, 1, 2, 1]
        let x = randomArray(n * c * sp, seed: 5).map { abs($0) }
        let gamma = randomArray(c, seed: 6), beta = randomArray(c, seed: 7)
        let w = randomArray(k * c, seed: 8)
        func fwd(_ v: [[Float]], dLogits: UnsafeMutablePointer<Float>?) -> ([Float], [Float], [Float], [Float], [Float], Double) {
            var pool = [Float](repeating: 0, count: n * c)
            pool.withUnsafeMutableBufferPointer { globalAveragePoolForward(output: $0.baseAddress!, input: v[0], batch: n, channels: c, spatial: sp) }
            var bn = [Float](repeating: 0, count: n * c), mean = [Float](repeating: 0, count: c), rstd = mean
            bn.withUnsafeMutableBufferPointer { b in mean.withUnsafeMutableBufferPointer { m in rstd.withUnsafeMutableBufferPointer { r in
                batchNormForwardTraining(output: b.baseAddress!, input: pool, weight: v[1], bias: v[2], mean: m.baseAddress!, inverseStd: r.baseAddress!, runningMean: nil, runningVariance: nil, batch: n, channels: c, spatial: 1)
            } } }
            var logits = [Float](repeating: 0, count: n * k)
            logits.withUnsafeMutableBufferPointer { linearForward(output: $0.baseAddress!, input: bn, weight: v[3], bias: nil, batch: n, inputFeatures: c, outputFeatures: k) }
            let ce = softmaxCrossEntropy(logits: logits, labels: labels, batch: n, classes: k, labelSmoothing: 0, dLogits: dLogits)
            return (pool, bn, mean, rstd, logits, ce.loss)
        }
        GradientCheck(step: 1e-3).check("gap-bn1d-linear-ce", inputs: [x, gamma, beta, w], forward: { v in [Float(fwd(v, dLogits: nil).5)] }, backward: { v, dOut in
            var dLogits = [Float](repeating: 0, count: n * k)
            let (pool, bn, mean, rstd, _, _) = dLogits.withUnsafeMutableBufferPointer { fwd(v, dLogits: $0.baseAddress!) }
            var dBn = [Float](repeating: 0, count: n * c), dW = [Float](repeating: 0, count: k * c)
            dBn.withUnsafeMutableBufferPointer { a in dW.withUnsafeMutableBufferPointer { b in
                linearBackward(dInput: a.baseAddress!, dWeight: b.baseAddress!, dBias: nil, dOutput: dLogits, input: bn, weight: v[3], batch: n, inputFeatures: c, outputFeatures: k) } }
            var dPool = [Float](repeating: 0, count: n * c), dG = [Float](repeating: 0, count: c), dB = dG
            dPool.withUnsafeMutableBufferPointer { a in dG.withUnsafeMutableBufferPointer { b in dB.withUnsafeMutableBufferPointer { cc in
                batchNormBackward(dInput: a.baseAddress!, dWeight: b.baseAddress!, dBias: cc.baseAddress!, dOutput: dBn, input: pool, weight: v[1], mean: mean, inverseStd: rstd, batch: n, channels: c, spatial: 1) } } }
            var dx = [Float](repeating: 0, count: x.count)
            dx.withUnsafeMutableBufferPointer { globalAveragePoolBackward(dInput: $0.baseAddress!, dOutput: dPool, batch: n, channels: c, spatial: sp) }
            return [dx.map { $0 * dOut[0] }, dG.map { $0 * dOut[0] }, dB.map { $0 * dOut[0] }, dW.map { $0 * dOut[0] }]
        })
    }
}
