import ArgumentParser
import BlockwiseKernels
import Foundation

@main
struct Blockwise: ParsableCommand {
    static func main() {
        BLASConfiguration.reexecIfNeeded()
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            exit(withError: error)
        }
    }

    static let configuration = CommandConfiguration(
        commandName: "blockwise",
        abstract: "Block-wise (minimizing-movement, TRGL) training of ResNets under a memory budget.",
        subcommands: [Train.self, Cache.self, Bench.self])
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure kernel throughput (use a release build: swift run -c release blockwise bench ...).",
        subcommands: [BenchKernels.self])
}

struct BenchKernels: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernels",
        abstract: "sgemm roofline and conv2d forward / backward-data / backward-weights GFLOP/s.",
        discussion: """
        Prints, in one run, the machine's sgemm rate on a large square product and the effective
        GFLOP/s of 3x3 convolutions at widths 16, 32, 64 (batch 128, 28x28), each as a ratio to it.

        Example:
          swift run -c release blockwise bench kernels --threads 2
        """)

    @Option(help: "BLAS threads (default: all cores).")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    @Option(help: "Batch size of the convolution benchmark.")
    var batchSize: Int = 128

    @Option(parsing: .upToNextOption, help: "Channel widths to measure.")
    var widths: [Int] = [16, 32, 64]

    @Option(help: "Bound on the im2col workspace in floats (default: one whole image).")
    var workspace: Int?

    func run() throws {
        setBLASThreads(threads)
        let roofline = try KernelBenchmark.sgemmRate()
        print("threads: \(threads), OpenBLAS core: \(BLASConfiguration.coreName)")
        print(pad("kernel", 44) + pad("ms", 10) + pad("GFLOP/s", 10) + "of sgemm")
        print(pad(roofline.name, 44) + pad(String(format: "%.1f", roofline.seconds * 1000), 10)
              + pad(String(format: "%.1f", roofline.gflops), 10) + "100%")
        for width in widths {
            for row in try KernelBenchmark.convolution(channels: width, batch: batchSize, workspaceBound: workspace) {
                print(pad(row.name, 44) + pad(String(format: "%.1f", row.seconds * 1000), 10)
                      + pad(String(format: "%.1f", row.gflops), 10)
                      + String(format: "%.0f%%", 100 * row.gflops / roofline.gflops))
            }
        }
    }
}

func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
}
