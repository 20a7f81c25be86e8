import ArgumentParser
import BlockwiseKernels
import Foundation

extension ConvolutionEngine: ExpressibleByArgument {}

/// Threads and the convolution engine, shared by every command that computes.
struct ComputeOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: "Threads for the kernels, oneDNN and OpenBLAS (default: all cores).")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    @Option(help: ArgumentHelp("Convolution engine: onednn (oneDNN's JIT kernels; falls back to reference when the workspace is too small for one image) or reference (im2col + sgemm).",
                               valueName: "onednn|reference"))
    var convEngine: ConvolutionEngine = .onednn

    /// More threads than this only oversubscribes the cores (and thousands hang the OpenMP team).
    static let maximumThreads = 256

    func validate() throws {
        guard (1...Self.maximumThreads).contains(threads) else {
            throw ValidationError("--threads must be in 1...\(Self.maximumThreads) (got \(threads)); this machine has \(ProcessInfo.processInfo.activeProcessorCount) cores")
        }
    }

    func apply() {
        setBLASThreads(threads)
        ConvolutionEngine.selected = convEngine
    }
}
