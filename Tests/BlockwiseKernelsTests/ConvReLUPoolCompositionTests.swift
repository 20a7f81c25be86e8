import BlockwiseKernels
import XCTest

/// Kernels chained as in the 1cnn head, checked together by finite differences.
final class ConvReLUPoolCompositionTests: XCTestCase {
    func testConvReluGap() {
        let (n, c, h, w) = (4, 3, 4, 4)
        let g = Conv2dGeometry(inputChannels: c, outputChannels: c, kernelSize: 3, inputHeight: h, inputWidth: w)
        let x = randomArray(n * c * h * w, seed: 5)
        let wt = randomArray(c * c * 9, seed: 6, scale: 0.5), b = randomArray(c, seed: 7, scale: 0.3)
        let ws = g.workspaceFloats(bound: nil, batch: n)
        func fwd(_ v: [[Float]]) -> [Float] {
            var conv = [Float](repeating: 0, count: n * c * h * w)
            var space = [Float](repeating: 0, count: ws)
            conv.withUnsafeMutableBufferPointer { o in space.withUnsafeMutableBufferPointer { s in
                conv2dForward(output: o.baseAddress!, input: v[0], weight: v[1], bias: v[2], batch: n, geometry: g, workspace: s.baseAddress!, workspaceCount: ws)
                reluForward(output: o.baseAddress!, input: o.baseAddress!, count: n * c * h * w)
            } }
            var pool = [Float](repeating: 0, count: n * c)
            pool.withUnsafeMutableBufferPointer { globalAveragePoolForward(output: $0.baseAddress!, input: conv, batch: n, channels: c, spatial: h * w) }
            return pool
        }
        GradientCheck(step: 1e-3).check("conv-relu-gap", inputs: [x, wt, b], forward: fwd, backward: { v, dOut in
            var conv = [Float](repeating: 0, count: n * c * h * w)
            var space = [Float](repeating: 0, count: ws)
            conv.withUnsafeMutableBufferPointer { o in space.withUnsafeMutableBufferPointer { s in
                conv2dForward(output: o.baseAddress!, input: v[0], weight: v[1], bias: v[2], batch: n, geometry: g, workspace: s.baseAddress!, workspaceCount: ws)
                reluForward(output: o.baseAddress!, input: o.baseAddress!, count: n * c * h * w)
            } }
            var dConv = [Float](repeating: 0, count: n * c * h * w)
            dConv.withUnsafeMutableBufferPointer {
                globalAveragePoolBackward(dInput: $0.baseAddress!, dOutput: dOut, batch: n, channels: c, spatial: h * w)
                reluBackwardInPlace(gradient: $0.baseAddress!, output: conv, count: n * c * h * w)
            }
            var dx = [Float](repeating: 0, count: x.count), dw = [Float](repeating: 0, count: wt.count), db = [Float](repeating: 0, count: c)
            dx.withUnsafeMutableBufferPointer { a in dw.withUnsafeMutableBufferPointer { bb in db.withUnsafeMutableBufferPointer { cc in space.withUnsafeMutableBufferPointer { s in
                conv2dBackward(dInput: a.baseAddress!, dWeight: bb.baseAddress!, dBias: cc.baseAddress!, dOutput: dConv, input: v[0], weight: v[1], batch: n, geometry: g, workspace: s.baseAddress!, workspaceCount: ws)
            } } } }
            return [dx, dw, db]
        })
    }
}
