import ArgumentParser
import BlockwiseKernels
import Foundation

extension ConvolutionEngine: ExpressibleByArgument {}

/// Threads and the convolution engine, shared by every command that computes.
struct ComputeOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: "Threads for the kernels (oneDNN's team; OpenBLAS runs one), at most this machine's cores; results are reproducible at a fixed count.")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    @Option(help: ArgumentHelp("Convolution engine: onednn (oneDNN's JIT kernels; falls back to reference when the workspace is too small for one image) or reference (im2col + sgemm).",
                               valueName: "onednn|reference"))
    var convEngine: ConvolutionEngine = .onednn

    /// The machine's cores: more threads than cores only oversubscribes them, and the OpenMP
    /// team's spin-waiting turns that into minutes per epoch (measured: 2 threads on a 2-core
    /// machine with one core busy, 114 s against 1 s; 8 threads never finished).
    static var maximumThreads: Int { max(1, ProcessInfo.processInfo.activeProcessorCount) }

    func validate() throws {
        guard (1...Self.maximumThreads).contains(threads) else {
            throw ValidationError("--threads must be in 1...\(Self.maximumThreads), this machine's cores (got \(threads))")
        }
    }

    func apply() {
        setKernelThreads(threads)
        ConvolutionEngine.selected = convEngine
    }
}
