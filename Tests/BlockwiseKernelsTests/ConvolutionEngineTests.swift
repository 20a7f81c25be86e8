import BlockwiseKernels
import XCTest

/// The oneDNN path against the reference im2col path: same outputs and accumulated gradients
/// (within float tolerance) on random geometries, batches and workspace bounds.
final class ConvolutionEngineTests: XCTestCase {
    override func tearDown() { ConvolutionEngine.selected = .onednn }

    struct Case {
        var geometry: Conv2dGeometry
        var batch: Int
        var bound: Int?
        var bias: Bool
    }

    /// Forward output and (dInput, dWeight, dBias) accumulated onto non-zero starting values.
    func run(_ c: Case, engine: ConvolutionEngine, seed: UInt64) -> [[Float]] {
        ConvolutionEngine.selected = engine
        let g = c.geometry
        var generator = SeededGenerator(seed: seed)
        func random(_ n: Int) -> [Float] { (0..<n).map { _ in Float(generator.nextNormal()) } }
        let input = random(c.batch * g.inputChannels * g.inputPixels)
        let weight = random(g.outputChannels * g.columnRows).map { $0 * 0.2 }
        let bias = c.bias ? random(g.outputChannels) : nil
        let dOutput = random(c.batch * g.outputChannels * g.outputPixels)
        var dInput = random(input.count), dWeight = random(weight.count), dBias = random(g.outputChannels)
        var output = [Float](repeating: .nan, count: dOutput.count)
        let count = g.workspaceFloats(bound: c.bound, batch: c.batch)
        let space = [Float](repeating: .nan, count: max(count, 1))  // NaN: nothing may read it unwritten
        let ws = UnsafeMutablePointer<Float>.allocate(capacity: space.count)
        ws.initialize(from: space, count: space.count)
        defer { ws.deallocate() }
        conv2dForward(output: &output, input: input, weight: weight, bias: bias, batch: c.batch, geometry: g,
                      workspace: ws, workspaceCount: count)
        dBias.withUnsafeMutableBufferPointer { db in
            conv2dBackward(dInput: &dInput, dWeight: &dWeight, dBias: c.bias ? db.baseAddress! : nil, dOutput: dOutput, input: input,
                           weight: weight, batch: c.batch, geometry: g, workspace: ws, workspaceCount: count)
        }
        return [output, dInput, dWeight] + (c.bias ? [dBias] : [])
    }

    func assertClose(_ a: [Float], _ b: [Float], _ what: String) {
        XCTAssertEqual(a.count, b.count)
        let scale = max(1, a.map(abs).max() ?? 1)
        let worst = zip(a, b).map { abs($0 - $1) }.max() ?? 0
        XCTAssertFalse(a.contains { $0.isNaN } || b.contains { $0.isNaN }, "\(what): NaN")
        XCTAssertLessThan(worst, 2e-4 * scale, "\(what): worst difference \(worst) (scale \(scale))")
    }

    func testOneDNNMatchesReferenceOnRandomShapes() {
        var generator = SeededGenerator(seed: 7)
        var usedOneDNN = 0
        for trial in 0..<24 {
            let stride = Int(generator.next() % 2) + 1
            let kernel = trial % 6 == 5 ? 1 : 3
            let g = Conv2dGeometry(inputChannels: [1, 3, 8, 16, 32][Int(generator.next() % 5)],
                                   outputChannels: [4, 8, 16, 24, 32][Int(generator.next() % 5)],
                                   kernelSize: kernel, stride: kernel == 1 ? 2 : stride,
                                   inputHeight: 8 + Int(generator.next() % 21), inputWidth: 8 + Int(generator.next() % 21))
            let batch = 1 + Int(generator.next() % 16)
            let bounds: [Int?] = [nil, 200_000, 1_000_000]
            let c = Case(geometry: g, batch: batch, bound: bounds[Int(generator.next() % 3)], bias: generator.next() % 2 == 0)
            ConvolutionEngine.selected = .onednn
            if g.oneDNNChunk(batch: batch, hasBias: c.bias, workspaceCount: g.workspaceFloats(bound: c.bound, batch: batch)) != nil {
                usedOneDNN += 1
            }
            let reference = run(c, engine: .reference, seed: UInt64(trial))
            let onednn = run(c, engine: .onednn, seed: UInt64(trial))
            for (i, name) in ["output", "dInput", "dWeight", "dBias"].prefix(reference.count).enumerated() {
                assertClose(onednn[i], reference[i], "trial \(trial) \(g) batch \(batch) bound \(String(describing: c.bound)): \(name)")
            }
        }
        // Small images with many channels do not fit oneDNN's padded weight copies in the
        // workspace the reference path would use; those cases check the fallback instead.
        print("oneDNN ran \(usedOneDNN) of 24 random cases")
        XCTAssertGreaterThanOrEqual(usedOneDNN, 10, "enough random cases should run through oneDNN")
    }

    /// Several chunks and a remainder chunk: a workspace that fits a few images, not the batch.
    func testChunkedBatchWithRemainder() {
        let g = Conv2dGeometry(inputChannels: 16, outputChannels: 16, kernelSize: 3, inputHeight: 12, inputWidth: 12)
        let c = Case(geometry: g, batch: 11, bound: nil, bias: false)  // one image of im2col workspace
        ConvolutionEngine.selected = .onednn
        let chunk = g.oneDNNChunk(batch: 11, hasBias: false, workspaceCount: g.workspaceFloats(bound: nil, batch: 11))
        XCTAssertNotNil(chunk)
        XCTAssertLessThan(chunk ?? 11, 11)
        XCTAssertNotEqual(11 % (chunk ?? 11), 0, "the case should exercise a remainder chunk")
        let reference = run(c, engine: .reference, seed: 3), onednn = run(c, engine: .onednn, seed: 3)
        for i in 0..<3 { assertClose(onednn[i], reference[i], "chunked \(i)") }
    }

    /// A workspace below one image in oneDNN's layout falls back to the reference path (tiny budgets).
    func testTinyWorkspaceFallsBackToReference() {
        let g = Conv2dGeometry(inputChannels: 8, outputChannels: 8, kernelSize: 3, inputHeight: 10, inputWidth: 10)
        ConvolutionEngine.selected = .onednn
        XCTAssertNil(g.oneDNNChunk(batch: 4, hasBias: false, workspaceCount: g.minimumWorkspace))
        let c = Case(geometry: g, batch: 4, bound: g.minimumWorkspace, bias: true)
        let reference = run(c, engine: .reference, seed: 5), fallback = run(c, engine: .onednn, seed: 5)
        XCTAssertEqual(reference, fallback, "the fallback is the reference path itself")
    }
}
