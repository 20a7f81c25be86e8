import ArgumentParser
import BlockwiseKernels
import Foundation

extension ConvolutionEngine: ExpressibleByArgument {}

/// Threads and the convolution engine, shared by every command that computes.
struct ComputeOptions: ParsableArguments {
    @Option(help: "Threads for the kernels, oneDNN and OpenBLAS (default: all cores).")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    @Option(help: ArgumentHelp("Convolution engine: onednn (oneDNN's JIT kernels; falls back to reference when the workspace is too small for one image) or reference (im2col + sgemm).",
                               valueName: "onednn|reference"))
    var convEngine: ConvolutionEngine = .onednn

    func apply() {
        setBLASThreads(threads)
        ConvolutionEngine.selected = convEngine
    }
}
