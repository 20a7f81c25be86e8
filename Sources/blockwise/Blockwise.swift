import ArgumentParser
import BlockwiseData
import BlockwiseKernels
import BlockwiseRuntime
import BlockwiseStore
import BlockwiseTraining
import Foundation

/// The version `blockwise --version` prints (raised with each release of main).
let blockwiseVersion = "0.4.0"

@main
struct Blockwise: ParsableCommand {
    /// Exit codes: 0 success, 1 runtime failure, 2 usage error, 3 budget cannot be met.
    static func main() {
        BLASConfiguration.reexecIfNeeded()
        setvbuf(stdout, nil, _IOLBF, 0)  // progress lines reach CI logs as they happen
        do {
            var command = try parseAsRoot()
            do {
                try command.run()
            } catch let error as ValidationError {
                // A rule that needs the data or the options together, checked in run(): a usage
                // error of this subcommand, not of the root command.
                usageError(error.message, command: type(of: command))
            } catch StoreError.invalidArgument(let message) {
                usageError(message, command: type(of: command))  // an option value the store cannot give
            } catch let code as ExitCode {
                Foundation.exit(code.rawValue)  // a command's own verdict (plan: 3 when nothing fits)
            }
        } catch let error as BudgetCannotBeMet {
            FileHandle.standardError.write(Data(("error: " + error.description + "\n").utf8))
            Foundation.exit(3)
        } catch {
            let code = exitCode(for: error)
            if code == .success || code == ExitCode(1) && error is ExitCode {
                exit(withError: error)
            }
            let message = fullMessage(for: error)
            let isUsage = code == .validationFailure
            if !message.isEmpty {
                FileHandle.standardError.write(Data(((isUsage || message.hasPrefix("Error") || message.hasPrefix("error") ? "" : "error: ") + message + "\n").utf8))
            }
            Foundation.exit(isUsage ? 2 : (code == .success ? 0 : 1))
        }
    }

    /// Prints a usage error with the subcommand's help hint and exits 2.
    static func usageError(_ message: String, command: ParsableCommand.Type) -> Never {
        FileHandle.standardError.write(Data("error: \(message)\nSee '\(commandPath(command)) --help'.\n".utf8))
        Foundation.exit(2)
    }

    /// "blockwise cache show" for CacheShow: the subcommand's full name.
    static func commandPath(_ command: ParsableCommand.Type) -> String {
        func search(_ node: ParsableCommand.Type, _ path: [String]) -> [String]? {
            let here = path + [node._commandName]
            if node == command { return here }
            for child in node.configuration.subcommands { if let found = search(child, here) { return found } }
            return nil
        }
        return (search(Blockwise.self, []) ?? ["blockwise", command._commandName]).joined(separator: " ")
    }

    static let configuration = CommandConfiguration(
        commandName: "blockwise",
        abstract: "Block-wise (minimizing-movement, TRGL) training of ResNets under a memory budget.",
        version: blockwiseVersion,
        subcommands: [Train.self, Compare.self, Plan.self, Profiles.self, Cache.self, Report.self, Bench.self])
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure kernel throughput (use a release build: swift build -c release, then .build/release/blockwise bench ...).",
        subcommands: [BenchKernels.self, BenchTrain.self, BenchCache.self])
}

struct BenchKernels: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernels",
        abstract: "sgemm roofline and conv2d forward / backward-data / backward-weights GFLOP/s.",
        discussion: """
        Prints, in one run, the machine's sgemm rate on a large square product and the effective \
        GFLOP/s of 3x3 convolutions at widths 16, 32, 64 (batch 128, 28x28), each as a ratio to it.

        Example:
          .build/release/blockwise bench kernels --threads 2
        """)

    @OptionGroup var compute: ComputeOptions

    @Option(parsing: .unconditional, help: "Batch size of the convolution benchmark.")
    var batchSize: Int = 128

    @Option(parsing: .upToNextOption, help: "Channel widths to measure.")
    var widths: [Int] = [16, 32, 64]

    @Option(parsing: .unconditional, help: "Bound on the im2col workspace in floats (default: one whole image).")
    var workspace: Int?

    func run() throws {
        // Refused before anything runs.
        try checkBenchmarkOptions(widths: widths, workspace: workspace)
        if batchSize < 1 { throw ValidationError("--batch-size must be at least 1 (got \(batchSize))") }
        compute.apply()
        let roofline = try KernelBenchmark.sgemmRate()
        print("threads: \(compute.threads), convolutions: \(compute.convEngine.rawValue), OpenBLAS core: \(BLASConfiguration.coreName)")
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


struct BenchCache: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cache",
        abstract: "Feature store write and shuffled-read MB/s per encoding, beside a plain file.",
        discussion: """
        Writes `--rows` samples of 32x28x28 (width 32 features) through the store in one transaction \
        per batch, reads them back in shuffled mini-batches, and does the same bytes with a plain \
        file (sequential write + fsync, sequential read) in the same run.

        Example:
          .build/release/blockwise bench cache --rows 2000
        """)

    @Option(parsing: .unconditional, help: "Samples to write and read.")
    var rows: Int = 2000
    @Option(help: "Directory for the temporary files.")
    var directory: String = NSTemporaryDirectory()

    func run() throws {
        let rows = try StoreBenchmark.run(directory: directory, rows: self.rows)
        let plain = rows.last!
        print(pad("path", 34) + pad("MB", 8) + pad("write MB/s", 12) + pad("of plain", 10) + pad("read MB/s", 12) + "of plain")
        for row in rows {
            print(pad(row.name, 34) + pad(String(format: "%.0f", Double(row.bytes) / 1e6), 8)
                  + pad(String(format: "%.0f", row.writeMBps), 12) + pad(String(format: "%.0f%%", 100 * row.writeMBps / plain.writeMBps), 10)
                  + pad(String(format: "%.0f", row.readMBps), 12) + String(format: "%.0f%%", 100 * row.readMBps / plain.readMBps))
        }
    }
}

struct BenchTrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Steady-state module training throughput (images/s, effective GFLOP/s, ratio to sgemm, ledger peak).",
        discussion: """
        One BasicBlock at each width plus the 1cnn head, the transport term and an SGD momentum step, \
        on cached W x 28 x 28 inputs at batch 128. Effective GFLOP/s counts 3 convolutions x (forward + \
        backward-data + backward-weights), as the PyTorch reference figures do. Then a short \
        sequential run on Fashion-MNIST, once through the SQLite store and once with the features \
        in memory: the difference is the store's I/O.

        Example:
          .build/release/blockwise bench train --threads 2
        """)

    @OptionGroup var compute: ComputeOptions
    @Option(parsing: .upToNextOption, help: "Widths to measure.")
    var widths: [Int] = [16, 32, 64]
    @Option(parsing: .unconditional, help: "Batch size.")
    var batchSize: Int = 128
    @Option(parsing: .unconditional, help: "Timed steps per width (after one warm-up step).")
    var steps: Int = 8
    @Option(parsing: .unconditional, help: "Bound on the im2col workspace in floats (default: one image).")
    var workspace: Int?
    @Option(parsing: .unconditional, help: "Fashion-MNIST training samples for the end-to-end sequential run through the store (0: skip it).")
    var pipelineSamples: Int = 6000
    @Option(help: ArgumentHelp("The module's arena: slots (a buffer per tensor), packed (one arena placed by lifetime) or smallest (packed, the block's first convolution computed again in the backward; train's default).", valueName: "slots|packed|smallest"))
    var arena: String = ArenaLayout.default(for: .sequential).rawValue
    @Flag(help: "With --arena packed or smallest: each convolution's workspace is the largest part of the arena free at all its operations (train's --placed-workspace).")
    var placedWorkspace = false

    func run() throws {
        // Refused before anything runs (they used to divide by zero, or run and print 0 images/s).
        try checkBenchmarkOptions(widths: widths, workspace: workspace)
        if batchSize < 2 { throw ValidationError("--batch-size must be at least 2: batch norm needs two samples to learn (got \(batchSize))") }
        if steps < 1 { throw ValidationError("--steps must be at least 1 timed step (got \(steps))") }
        if !(0...60_000).contains(pipelineSamples) {
            throw ValidationError("--pipeline-samples must be 0 (skip the run) ... 60000, Fashion-MNIST's training split (got \(pipelineSamples))")
        }
        let layout = try TrainingOptions.arenaLayout(arena)
        // The same refusal as train's (TrainingConfiguration.problems).
        var options = TrainingConfiguration()
        options.setArenaLayout(layout)
        options.placedWorkspace = placedWorkspace ? true : nil
        if let problem = options.problems().first { throw ValidationError(problem) }
        compute.apply()
        let roofline = try KernelBenchmark.sgemmRate()
        print("threads: \(compute.threads), convolutions: \(compute.convEngine.rawValue), OpenBLAS core: \(BLASConfiguration.coreName); sgemm \(String(format: "%.1f", roofline.gflops)) GFLOP/s")
        print(pad("width", 8) + pad("ms/step", 10) + pad("images/s", 10) + pad("eff. GFLOP/s", 14) + pad("of sgemm", 10) + "ledger peak")
        for width in widths {
            let row = try TrainingBenchmark.run(width: width, batch: batchSize, steps: steps, workspaceBound: workspace,
                                                arena: layout, placedWorkspace: placedWorkspace)
            print(pad("\(width)", 8) + pad(String(format: "%.1f", row.secondsPerStep * 1000), 10)
                  + pad(String(format: "%.0f", row.imagesPerSecond), 10) + pad(String(format: "%.1f", row.effectiveGflops), 14)
                  + pad(String(format: "%.0f%%", 100 * row.effectiveGflops / roofline.gflops), 10) + formatBytes(row.peakBytes))
        }
        guard pipelineSamples > 0 else { return }
        let (train, test) = try FashionMNIST.load()
        let subset = try train.balancedSubset(size: .count(pipelineSamples), seed: 1)
        let testSubset = try test.balancedSubset(size: .count(1000), seed: 1)
        print("\nend to end: 3-1 ResNet width 16 (stride-2 encoder), \(subset.count) training samples, 2 epochs per module, 1000 test samples, batch 128, "
              + "--arena \(layout.rawValue)" + (placedWorkspace ? " --placed-workspace" : "") + (workspace.map { " --workspace \($0)" } ?? ""))
        print(pad("run", 36) + pad("seconds", 10) + pad("images/s", 10) + "ledger peak")
        let rows = try PipelineBenchmark.run(train: subset, test: testSubset, arena: layout, placedWorkspace: placedWorkspace, workspaceBound: workspace)
        for row in rows {
            print(pad(row.name, 36) + pad(String(format: "%.1f", row.seconds), 10) + pad(String(format: "%.0f", row.imagesPerSecond), 10)
                  + formatBytes(row.peakBytes))
        }
        if rows.count == 2 {
            print(String(format: "the store costs %.0f%% of the in-memory run's time", 100 * (rows[0].seconds / rows[1].seconds - 1)))
        }
    }
}

/// The options `bench kernels` and `bench train` share, refused before anything runs.
func checkBenchmarkOptions(widths: [Int], workspace: Int?) throws {
    if widths.isEmpty || widths.contains(where: { !(1...1024).contains($0) }) {
        throw ValidationError("--widths takes channel counts 1...1024 (got \(widths.map(String.init).joined(separator: " ")))")
    }
    if let workspace, workspace < 1 { throw ValidationError("--workspace must be at least 1 float (got \(workspace))") }
}
