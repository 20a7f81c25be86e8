import CBLAS
import Foundation

/// Throughput measurements of the GEMM roofline and of the convolution kernels
/// (`blockwise bench kernels`). Run it from a release build; timings are the best of
/// several repetitions after a warm-up.
public enum KernelBenchmark {
    public struct Row: Sendable {
        public var name: String
        public var seconds: Double
        public var flops: Int
        public var gflops: Double { Double(flops) / seconds / 1e9 }
    }

    /// Best wall time of `body` over `repetitions` runs after one warm-up run.
    public static func bestTime(repetitions: Int, _ body: () -> Void) -> Double {
        body()
        var best = Double.infinity
        for _ in 0..<repetitions {
            let start = DispatchTime.now().uptimeNanoseconds
            body()
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        return best
    }

    /// The sgemm rate on a square `size` x `size` product (the roofline for our convolutions).
    public static func sgemmRate(size: Int = 2048, repetitions: Int = 5) throws -> Row {
        let ledger = MemoryLedger()
        let a = try Tensor([size, size], category: .workspace, tag: "A", ledger: ledger)
        let b = try Tensor([size, size], category: .workspace, tag: "B", ledger: ledger)
        let c = try Tensor([size, size], category: .workspace, tag: "C", ledger: ledger)
        a.fill(0.5); b.fill(0.25)
        let n = Int32(size)
        // The roofline uses OpenBLAS's own threads (the convolutions split the batch instead).
        openblas_set_num_threads(Int32(KernelThreads.count))
        defer { openblas_set_num_threads(1) }
        let seconds = bestTime(repetitions: repetitions) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a.data, n, b.data, n, 0, c.data, n)
        }
        return Row(name: "sgemm \(size)x\(size)x\(size)", seconds: seconds, flops: 2 * size * size * size)
    }

    /// Forward, backward-data and backward-weights of a 3x3, stride-1 convolution
    /// width -> width on `height` x `width` images.
    public static func convolution(channels: Int, batch: Int = 128, size: Int = 28, repetitions: Int = 3,
                                   workspaceBound: Int? = nil) throws -> [Row] {
        let ledger = MemoryLedger()
        let g = Conv2dGeometry(inputChannels: channels, outputChannels: channels, kernelSize: 3,
                               inputHeight: size, inputWidth: size)
        let input = try Tensor([batch, channels, size, size], category: .ioBuffers, tag: "input", ledger: ledger)
        let output = try Tensor([batch, channels, size, size], category: .savedActivations, tag: "output", ledger: ledger)
        let dInput = try Tensor([batch, channels, size, size], category: .workspace, tag: "dInput", ledger: ledger)
        let weight = try Tensor(g.weightShape, category: .parameters, tag: "weight", ledger: ledger)
        let dWeight = try Tensor(g.weightShape, category: .gradients, tag: "dWeight", ledger: ledger)
        let workspace = try Tensor([max(1, g.workspaceFloats(bound: workspaceBound, batch: batch))], category: .workspace, tag: "im2col", ledger: ledger)
        var generator = SeededGenerator(seed: 1)
        for i in 0..<input.count { input[i] = Float(generator.nextNormal()) }
        for i in 0..<weight.count { weight[i] = Float(generator.nextNormal()) * 0.05 }
        let flops = g.forwardFlops(batch: batch)
        let forward = bestTime(repetitions: repetitions) {
            conv2dForward(output: output.data, input: input.data, weight: weight.data, bias: nil, batch: batch,
                          geometry: g, workspace: workspace.data, workspaceCount: workspace.count)
        }
        let backwardData = bestTime(repetitions: repetitions) {
            conv2dBackward(dInput: dInput.data, dWeight: nil, dBias: nil, dOutput: output.data, input: input.data,
                           weight: weight.data, batch: batch, geometry: g, workspace: workspace.data, workspaceCount: workspace.count)
        }
        let backwardWeights = bestTime(repetitions: repetitions) {
            conv2dBackward(dInput: nil, dWeight: dWeight.data, dBias: nil, dOutput: output.data, input: input.data,
                           weight: weight.data, batch: batch, geometry: g, workspace: workspace.data, workspaceCount: workspace.count)
        }
        let label = "conv3x3 w\(channels) b\(batch) \(size)x\(size)"
        return [Row(name: "\(label) forward", seconds: forward, flops: flops),
                Row(name: "\(label) backward-data", seconds: backwardData, flops: flops),
                Row(name: "\(label) backward-weights", seconds: backwardWeights, flops: flops)]
    }
}
