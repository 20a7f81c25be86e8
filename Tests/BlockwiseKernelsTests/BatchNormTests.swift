import BlockwiseKernels
import XCTest

final class BatchNormTests: XCTestCase {
    struct Shape { var batch: Int, channels: Int, spatial: Int }

    func forward(_ x: [Float], _ gamma: [Float], _ beta: [Float], _ s: Shape,
                 running: inout ([Float], [Float])) -> (out: [Float], mean: [Float], rstd: [Float]) {
        var out = [Float](repeating: 0, count: x.count)
        var mean = [Float](repeating: 0, count: s.channels), rstd = mean
        var (rm, rv) = running
        out.withUnsafeMutableBufferPointer { o in mean.withUnsafeMutableBufferPointer { m in rstd.withUnsafeMutableBufferPointer { r in
            rm.withUnsafeMutableBufferPointer { rmp in rv.withUnsafeMutableBufferPointer { rvp in
                batchNormForwardTraining(output: o.baseAddress!, input: x, weight: gamma, bias: beta,
                                         mean: m.baseAddress!, inverseStd: r.baseAddress!,
                                         runningMean: rmp.baseAddress!, runningVariance: rvp.baseAddress!,
                                         batch: s.batch, channels: s.channels, spatial: s.spatial)
            } }
        } } }
        running = (rm, rv)
        return (out, mean, rstd)
    }

    /// One channel, values 1, 2, 3, 4: mean 2.5, biased variance 1.25.
    func testHandComputed() {
        var running: ([Float], [Float]) = ([0], [1])
        let (out, mean, rstd) = forward([1, 2, 3, 4], [2], [1], Shape(batch: 2, channels: 1, spatial: 2), running: &running)
        XCTAssertEqual(mean[0], 2.5, accuracy: 1e-6)
        XCTAssertEqual(rstd[0], Float(1 / (1.25 + 1e-5).squareRoot()), accuracy: 1e-6)
        let r = 1 / (1.25 + 1e-5).squareRoot()
        for (value, x) in zip(out, [1.0, 2, 3, 4]) { XCTAssertEqual(Double(value), 2 * (x - 2.5) * r + 1, accuracy: 1e-5) }
        // running = 0.9 * old + 0.1 * batch; unbiased variance 5/3
        XCTAssertEqual(running.0[0], 0.25, accuracy: 1e-6)
        XCTAssertEqual(running.1[0], 0.9 + 0.1 * 5.0 / 3.0, accuracy: 1e-6)
        // Eval mode uses the running statistics.
        var evalOut = [Float](repeating: 0, count: 1)
        evalOut.withUnsafeMutableBufferPointer { o in
            batchNormForwardInference(output: o.baseAddress!, input: [1.25], weight: [2], bias: [1],
                                      runningMean: [0.25], runningVariance: [3], batch: 1, channels: 1, spatial: 1)
        }
        XCTAssertEqual(Double(evalOut[0]), 2 * 1.0 / (3 + 1e-5).squareRoot() + 1, accuracy: 1e-5)
    }

    func check(_ name: String, _ s: Shape) {
        let x = randomArray(s.batch * s.channels * s.spatial, seed: 21, scale: 2)
        let gamma = randomArray(s.channels, seed: 22), beta = randomArray(s.channels, seed: 23)
        var check = GradientCheck()
        check.step = 1e-3
        check.absolute = 5e-3
        check.relative = 3e-2
        check.check(name, inputs: [x, gamma, beta], forward: { v in
            var running: ([Float], [Float]) = (Array(repeating: 0, count: s.channels), Array(repeating: 1, count: s.channels))
            return self.forward(v[0], v[1], v[2], s, running: &running).out
        }, backward: { v, dOut in
            var running: ([Float], [Float]) = (Array(repeating: 0, count: s.channels), Array(repeating: 1, count: s.channels))
            let saved = self.forward(v[0], v[1], v[2], s, running: &running)
            var dx = [Float](repeating: 0, count: v[0].count)
            var dg = [Float](repeating: 0, count: s.channels), db = dg
            dx.withUnsafeMutableBufferPointer { a in dg.withUnsafeMutableBufferPointer { b in db.withUnsafeMutableBufferPointer { c in
                batchNormBackward(dInput: a.baseAddress!, dWeight: b.baseAddress!, dBias: c.baseAddress!, dOutput: dOut,
                                  input: v[0], weight: v[1], mean: saved.mean, inverseStd: saved.rstd,
                                  batch: s.batch, channels: s.channels, spatial: s.spatial)
            } } }
            return [dx, dg, db]
        })
    }

    func testGradient2d() { check("batchnorm2d", Shape(batch: 3, channels: 2, spatial: 5)) }
    func testGradient1d() { check("batchnorm1d", Shape(batch: 6, channels: 4, spatial: 1)) }
}
