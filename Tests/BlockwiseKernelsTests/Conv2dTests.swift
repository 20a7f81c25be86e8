import BlockwiseKernels
import XCTest

final class Conv2dTests: XCTestCase {
    /// Runs conv2dForward on arrays.
    func convolve(_ input: [Float], _ weight: [Float], _ bias: [Float]?, batch: Int, _ g: Conv2dGeometry,
                  workspace: Int? = nil) -> [Float] {
        var output = [Float](repeating: 0, count: batch * g.outputChannels * g.outputPixels)
        let count = g.workspaceFloats(bound: workspace, batch: batch)
        var space = [Float](repeating: 0, count: max(count, 1))
        output.withUnsafeMutableBufferPointer { out in
            space.withUnsafeMutableBufferPointer { ws in
                conv2dForward(output: out.baseAddress!, input: input, weight: weight, bias: bias,
                              batch: batch, geometry: g, workspace: ws.baseAddress!, workspaceCount: count)
            }
        }
        return output
    }

    func convolveBackward(_ input: [Float], _ weight: [Float], hasBias: Bool, dOutput: [Float], batch: Int,
                          _ g: Conv2dGeometry, workspace: Int? = nil) -> [[Float]] {
        var dInput = [Float](repeating: 0, count: input.count)
        var dWeight = [Float](repeating: 0, count: weight.count)
        var dBias = [Float](repeating: 0, count: g.outputChannels)
        let count = g.workspaceFloats(bound: workspace, batch: batch)
        var space = [Float](repeating: 0, count: max(count, 1))
        dInput.withUnsafeMutableBufferPointer { di in
            dWeight.withUnsafeMutableBufferPointer { dw in
                dBias.withUnsafeMutableBufferPointer { db in
                    space.withUnsafeMutableBufferPointer { ws in
                        conv2dBackward(dInput: di.baseAddress!, dWeight: dw.baseAddress!, dBias: hasBias ? db.baseAddress! : nil,
                                       dOutput: dOutput, input: input, weight: weight, batch: batch, geometry: g,
                                       workspace: ws.baseAddress!, workspaceCount: count)
                    }
                }
            }
        }
        return hasBias ? [dInput, dWeight, dBias] : [dInput, dWeight]
    }

    /// A 1-channel 3x3 image, a 3x3 kernel, padding 1: values worked out by hand.
    func testHandComputedConvolution() {
        let g = Conv2dGeometry(inputChannels: 1, outputChannels: 1, kernelSize: 3, stride: 1, padding: 1,
                               inputHeight: 3, inputWidth: 3)
        let input: [Float] = [1, 2, 3,
                              4, 5, 6,
                              7, 8, 9]
        let weight: [Float] = [0, 1, 0,
                               1, 1, 1,
                               0, 1, 0]  // a "plus" stencil: centre + 4 neighbours
        let output = convolve(input, weight, [0.5], batch: 1, g)
        // centre (1,1): 5 + 2 + 4 + 6 + 8 = 25; corner (0,0): 1 + 2 + 4 = 7; edge (0,1): 2 + 1 + 3 + 5 = 11
        let expected: [Float] = [7, 11, 11,
                                 17, 25, 23,
                                 19, 29, 23].map { $0 + 0.5 }
        XCTAssertEqual(output, expected)
        // Stride 2 keeps the corners and the centre of the padded grid: outputs (0,0), (0,2), (2,0), (2,2).
        let g2 = Conv2dGeometry(inputChannels: 1, outputChannels: 1, kernelSize: 3, stride: 2, padding: 1,
                                inputHeight: 3, inputWidth: 3)
        XCTAssertEqual(convolve(input, weight, nil, batch: 1, g2), [7, 11, 19, 23])
        // Backward-data of an all-ones gradient: each input gets the sum of the kernel taps that touch it.
        let grads = convolveBackward(input, weight, hasBias: true, dOutput: [Float](repeating: 1, count: 9), batch: 1, g)
        XCTAssertEqual(grads[0], [3, 4, 3, 4, 5, 4, 3, 4, 3])
        XCTAssertEqual(grads[2], [9])
    }

    func checkGradients(_ name: String, batch: Int, _ g: Conv2dGeometry, bias: Bool, workspace: Int? = nil) {
        let input = randomArray(batch * g.inputChannels * g.inputPixels, seed: 1)
        let weight = randomArray(g.outputChannels * g.columnRows, seed: 2, scale: 0.5)
        var inputs = [input, weight]
        if bias { inputs.append(randomArray(g.outputChannels, seed: 3)) }
        GradientCheck().check(name, inputs: inputs, forward: { v in
            self.convolve(v[0], v[1], bias ? v[2] : nil, batch: batch, g, workspace: workspace)
        }, backward: { v, dOut in
            self.convolveBackward(v[0], v[1], hasBias: bias, dOutput: dOut, batch: batch, g, workspace: workspace)
        })
    }

    func testGradient3x3Stride1() {
        checkGradients("conv3x3 s1", batch: 2, Conv2dGeometry(inputChannels: 3, outputChannels: 4, kernelSize: 3,
                                                              inputHeight: 5, inputWidth: 6), bias: true)
    }

    func testGradient3x3Stride2OddSize() {
        checkGradients("conv3x3 s2 odd", batch: 2, Conv2dGeometry(inputChannels: 2, outputChannels: 3, kernelSize: 3, stride: 2,
                                                                  inputHeight: 7, inputWidth: 5), bias: false)
    }

    func testGradient1x1() {
        checkGradients("conv1x1 s1", batch: 3, Conv2dGeometry(inputChannels: 4, outputChannels: 3, kernelSize: 1,
                                                              inputHeight: 3, inputWidth: 5), bias: true)
        checkGradients("conv1x1 s2", batch: 2, Conv2dGeometry(inputChannels: 3, outputChannels: 2, kernelSize: 1, stride: 2,
                                                              inputHeight: 5, inputWidth: 5), bias: false)
    }

    func testGradientWithTinyWorkspace() {
        // 1 output pixel per chunk: the bounded-workspace path.
        let g = Conv2dGeometry(inputChannels: 2, outputChannels: 3, kernelSize: 3, stride: 1, inputHeight: 5, inputWidth: 4)
        checkGradients("conv3x3 chunked", batch: 2, g, bias: true, workspace: g.minimumWorkspace)
    }

    /// Chunking the im2col workspace changes nothing but the order of the sums.
    func testBoundedWorkspaceMatchesWholeImage() {
        for (stride, size) in [(1, 9), (2, 11)] {
            let g = Conv2dGeometry(inputChannels: 5, outputChannels: 6, kernelSize: 3, stride: stride,
                                   inputHeight: size, inputWidth: size - 2)
            let input = randomArray(2 * g.inputChannels * g.inputPixels, seed: 11)
            let weight = randomArray(g.outputChannels * g.columnRows, seed: 12)
            let whole = convolve(input, weight, nil, batch: 2, g)
            let dOut = randomArray(whole.count, seed: 13)
            let wholeGrads = convolveBackward(input, weight, hasBias: false, dOutput: dOut, batch: 2, g)
            // Chunks of 1, 7 and 13 pixels, and chunks that span image boundaries.
            let perPixel = g.floatsPerPixel
            for bound in [g.minimumWorkspace, perPixel * 7, perPixel * 13, perPixel * (g.outputPixels + 5), perPixel * 2 * g.outputPixels] {
                XCTAssertLessThan(g.workspaceFloats(bound: bound, batch: 2), bound + 1)
                XCTAssertLessThan(maxDifference(convolve(input, weight, nil, batch: 2, g, workspace: bound), whole), 1e-4)
                let grads = convolveBackward(input, weight, hasBias: false, dOutput: dOut, batch: 2, g, workspace: bound)
                XCTAssertLessThan(maxDifference(grads[0], wholeGrads[0]), 1e-4)
                XCTAssertLessThan(maxDifference(grads[1], wholeGrads[1]), 1e-3)
            }
        }
    }

    /// With two threads a convolution splits the batch (the second half's weight gradient goes
    /// through a partial buffer in the workspace, and each half gets half the workspace, so sgemm
    /// sees other shapes): results equal one thread's up to the order of the sums.
    func testThreadedConvolutionMatchesSingleThread() {
        // Both engines, each at one and two threads (setKernelThreads sets oneDNN's team and the
        // reference path's split; the test named only KernelThreads, which oneDNN ignores).
        defer { setKernelThreads(1); ConvolutionEngine.selected = .onednn }
        for engine in ConvolutionEngine.allCases {
        ConvolutionEngine.selected = engine
        let g = Conv2dGeometry(inputChannels: 8, outputChannels: 6, kernelSize: 3, stride: 1, inputHeight: 28, inputWidth: 28)
        let input = randomArray(2 * g.inputChannels * g.inputPixels, seed: 21)
        let weight = randomArray(g.outputChannels * g.columnRows, seed: 22)
        let dOut = randomArray(2 * g.outputChannels * g.outputPixels, seed: 23)
        setKernelThreads(1)
        let one = (convolve(input, weight, nil, batch: 2, g), convolveBackward(input, weight, hasBias: false, dOutput: dOut, batch: 2, g))
        setKernelThreads(2)
        let two = (convolve(input, weight, nil, batch: 2, g), convolveBackward(input, weight, hasBias: false, dOutput: dOut, batch: 2, g))
        XCTAssertLessThan(maxDifference(one.0, two.0), 1e-4)
        XCTAssertLessThan(maxDifference(one.1[0], two.1[0]), 1e-4)
        XCTAssertLessThan(maxDifference(one.1[1], two.1[1]), 1e-3)
        // Also with bias, stride 2, an odd batch and a bounded workspace.
        let g2 = Conv2dGeometry(inputChannels: 5, outputChannels: 7, kernelSize: 3, stride: 2, inputHeight: 11, inputWidth: 9)
        let x2 = randomArray(3 * g2.inputChannels * g2.inputPixels, seed: 24)
        let w2 = randomArray(g2.outputChannels * g2.columnRows, seed: 25)
        let d2 = randomArray(3 * g2.outputChannels * g2.outputPixels, seed: 26)
        let bound = 3 * g2.floatsPerPixel * 5 + g2.outputChannels * g2.columnRows
        setKernelThreads(1)
        let a = (convolve(x2, w2, [1, 2, 3, 4, 5, 6, 7], batch: 3, g2, workspace: bound),
                 convolveBackward(x2, w2, hasBias: true, dOutput: d2, batch: 3, g2, workspace: bound))
        setKernelThreads(2)
        let b = (convolve(x2, w2, [1, 2, 3, 4, 5, 6, 7], batch: 3, g2, workspace: bound),
                 convolveBackward(x2, w2, hasBias: true, dOutput: d2, batch: 3, g2, workspace: bound))
        XCTAssertLessThan(maxDifference(a.0, b.0), 1e-4)
        XCTAssertLessThan(maxDifference(a.1[0], b.1[0]), 1e-4)
        XCTAssertLessThan(maxDifference(a.1[1], b.1[1]), 1e-3)
        XCTAssertLessThan(maxDifference(a.1[2], b.1[2]), 1e-4, "\(engine)")
        }
    }

    func testGeometry() {
        let g = Conv2dGeometry(inputChannels: 16, outputChannels: 32, kernelSize: 3, stride: 2, inputHeight: 7, inputWidth: 7)
        XCTAssertEqual(g.outputHeight, 4)
        XCTAssertEqual(g.columnRows, 144)
        XCTAssertEqual(g.fullImageWorkspace, (144 + 32) * 16)
        XCTAssertEqual(g.workspaceFloats(bound: 1000), 176 * 5)
        XCTAssertEqual(g.workspaceFloats(bound: 176 * 40, batch: 2), 176 * 32, "at most the whole batch")
        XCTAssertEqual(Conv2dGeometry(inputChannels: 4, outputChannels: 4, kernelSize: 1, inputHeight: 5, inputWidth: 5).minimumWorkspace, 0)
    }
}
