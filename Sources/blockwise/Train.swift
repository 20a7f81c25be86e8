import ArgumentParser
import BlockwiseData
import BlockwiseDevice
import BlockwiseKernels
import BlockwiseStore
import BlockwiseTraining
import Foundation

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a ResNet module by module (minimizing-movement / TRGL local losses).",
        discussion: """
        Examples:
          blockwise train --train-size 600 --modules 4 --width 16 --epochs 2
          blockwise train --procedure parallel --tau off --train-size 1%
          blockwise train --modules 8 --width 32 --train-size 6000 --epochs 3 --json result.json
        """)

    @OptionGroup var dataOptions: DataOptions
    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var trainingOptions: TrainingOptions

    @Option(help: "The run's SQLite store (features between modules, checkpoints, metrics); sequential and multilap.")
    var store: String = "blockwise.sqlite"
    @Option(help: "Encoding of the stored features: fp32 (exact), fp16 or bf16 (half the bytes).")
    var featureDtype: String = "fp32"
    @Option(help: "Bound on SQLite's page cache (e.g. 64KiB, 2MiB); its memory counts in the budget as storeEngine.")
    var storeCache: String = "2MiB"
    @Flag(help: "Continue the run in --store: completed modules are reused, an interrupted one continues from its last epoch. (A matching store is resumed anyway; this flag also requires that it exists.)")
    var resume = false
    @Flag(help: "Empty --store and start over, whatever it holds.")
    var fresh = false
    @Flag(help: "Keep the features between modules in memory instead of the store (no resume).")
    var inMemory = false
    @OptionGroup var device: DeviceOptions
    @Option(help: "BLAS threads (default: all cores).")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    @Option(help: "Write the full result (configuration, epoch logs, per-module evaluation) as JSON to this file.")
    var json: String?
    @Flag(help: "Print nothing but the summary.")
    var quiet = false

    func run() throws {
        setBLASThreads(threads)
        let (train, test) = try dataOptions.load(seed: trainingOptions.seed)
        let model = try modelOptions.model(dataset: train)
        var configuration = try trainingOptions.configuration(model: model)
        let ledger = MemoryLedger()
        guard let encoding = FeatureEncoding(rawValue: featureDtype) else {
            throw ValidationError("--feature-dtype must be fp32, fp16 or bf16 (got '\(featureDtype)')")
        }
        if resume && fresh { throw ValidationError("--resume and --fresh contradict each other: pick one") }
        let usesStore = !inMemory && (configuration.procedure == .sequential || configuration.procedure == .multilap)
        let cacheBytes = try SizeParser.parse(storeCache)
        let rowBuffer = RunPlanner.rowBufferFloats(configuration, bytesPerValue: encoding.bytesPerValue) * 4
        let residence: FeatureResidence = usesStore ? .store(rowBufferBytes: rowBuffer, cacheBytes: cacheBytes)
            : (configuration.procedure == .sequential || configuration.procedure == .multilap ? .memory : .none)
        // The budget: --budget, else the profile's RAM less its reserve; checked before training.
        let (profile, budget) = try device.resolve()
        ledger.budget = budget
        if residence == .none {
            let resident = BudgetResolver.residentPlan(configuration)
            if let budget, resident.total > budget {
                throw BudgetCannotBeMet(message: "\(configuration.procedure.rawValue) keeps all \(model.modules) modules resident: "
                    + "\(formatBytes(resident.total)) (\(resident)) exceed the budget \(formatBytes(budget)). Use --procedure sequential, "
                    + "or lower --batch-size / --width.")
            }
        } else {
            do {
                configuration = try BudgetResolver.resolve(configuration, budget: budget, fit: device.fitPolicy(), residence: residence,
                                                           trainCount: train.count, testCount: test.count).configuration
            } catch let error as ModuleDoesNotFitError {
                throw BudgetCannotBeMet(message: error.description)
            }
            if !quiet {
                for (k, micro) in configuration.microBatches.sorted(by: { $0.key < $1.key }) {
                    print("budget: module \(k + 1) trains in micro-batches of \(micro) (gradients accumulated to batch \(configuration.batchSize))")
                }
            }
        }
        var featureStore: FeatureStore?
        if usesStore {
            if resume && !FileManager.default.fileExists(atPath: store) {
                throw ValidationError("--resume: no store at '\(store)'. Run without --resume to start, or pass --store PATH.")
            }
            let opened = try FeatureStore(path: store, encoding: encoding, ledger: ledger, cacheKiB: max(1, cacheBytes / 1024))
            let identity = FeatureStore.RunIdentity(configuration: configuration, data: .init(train: train, test: test),
                                                    encoding: encoding, formatVersion: FeatureStore.formatVersion)
            switch try opened.begin(identity, fresh: fresh) {
            case .created: if !quiet { print("store: \(store) (new)") }
            case .restarted: if !quiet { print("store: \(store) emptied (--fresh)") }
            case .resumed: if !quiet { print("store: \(store) holds this run: resuming (completed modules are reused; --fresh starts over)") }
            }
            try opened.reserveRowBuffer(floats: rowBuffer / 4)
            featureStore = opened
        }
        let trainer = try Trainer(configuration: configuration, ledger: ledger, cache: featureStore)
        trainer.journal = featureStore
        if !quiet {
            print("blockwise: \(model.summary); \(configuration.procedure.rawValue), tau \(configuration.tau.description)")
            print("data: \(train.count) training / \(test.count) test samples from \(dataOptions.data); batch \(configuration.batchSize); seed \(configuration.seed)")
        }
        let progress = ProgressPrinter(quiet: quiet, modules: model.modules)
        trainer.observer = progress.handle
        let result = try trainer.run(train: train, test: test)
        progress.finish()
        print(summaryTable(result, profile: profile, budget: budget))
        if let store = featureStore {
            print("store: \(store.path), \(formatBytes(store.bytesWritten)) of features written, \(formatBytes(store.bytesRead)) read in this process")
        }
        if let rss = HostMemory.peakResidentBytes() {
            print("host peak RSS (VmHWM): \(formatBytes(rss)) -- the whole process: Swift runtime, the loaded data set, OpenBLAS buffers; the ledger counts what the emulated device would hold")
        }
        if let json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(result).write(to: URL(fileURLWithPath: json))
            print("wrote \(json)")
        }
    }
}

/// The per-module summary table.
func summaryTable(_ result: TrainingResult, profile: DeviceProfile? = nil, budget: Int? = nil) -> String {
    var lines: [String] = []
    lines.append(pad("module", 8) + pad("train acc", 11) + pad("test acc", 10) + pad("kinetic", 10) + pad("peak memory", 13)
                 + pad("largest", 18) + pad("store written", 15) + pad("host time", 11)
                 + (profile.map { pad("\($0.name) time", 24) + "energy" } ?? ""))
    for m in result.modules {
        var line = pad("\(m.module + 1)", 8)
            + pad(m.trainAccuracy.map { String(format: "%.2f%%", $0 * 100) } ?? "-", 11)
            + pad(String(format: "%.2f%%", m.testAccuracy * 100), 10)
            + pad(String(format: "%.4g", m.kineticEnergy), 10)
            + pad(formatBytes(m.peakBytes), 13)
            + pad(m.peakBreakdown.largest?.rawValue ?? "-", 18)
            + pad(formatBytes(m.storeBytesWritten), 15)
            + pad(String(format: "%.1f s", m.seconds), 11)
        if let profile {
            let cost = DeviceCost(profile: profile, flops: m.flops, bytesRead: m.storeBytesRead, bytesWritten: m.storeBytesWritten,
                                  operations: m.storeOperations)
            line += pad(formatDuration(cost.seconds), 24) + formatEnergy(cost.energyJoules)
        }
        lines.append(line)
    }
    if let budget {
        lines.append("budget: \(formatBytes(budget))\(profile.map { " (\($0.displayName))" } ?? ""): "
                     + (result.peakBytes <= budget ? "held (peak \(formatBytes(result.peakBytes)))" : "EXCEEDED (peak \(formatBytes(result.peakBytes)))"))
    }
    if let profile {
        let flops = result.modules.reduce(0) { $0 + $1.flops }
        let cost = DeviceCost(profile: profile, flops: flops, bytesRead: result.modules.reduce(0) { $0 + $1.storeBytesRead },
                              bytesWritten: result.modules.reduce(0) { $0 + $1.storeBytesWritten },
                              operations: result.modules.reduce(0) { $0 + $1.storeOperations })
        lines.append("emulated \(profile.name): \(formatDuration(cost.seconds)) (compute \(formatDuration(cost.computeSeconds)), storage \(formatDuration(cost.storageSeconds))), \(formatEnergy(cost.energyJoules)); host \(String(format: "%.1f s", result.seconds))")
    }
    if let best = result.best, let last = result.last {
        lines.append(String(format: "best: module %d (%.2f%%); last: module %d (%.2f%%); peak %@; %.1fs",
                            best.module + 1, best.testAccuracy * 100, last.module + 1, last.testAccuracy * 100,
                            formatBytes(result.peakBytes), result.seconds))
    }
    return lines.joined(separator: "\n")
}

/// Progress: one updating line on a terminal, a line every few seconds otherwise, nothing when quiet.
final class ProgressPrinter {
    let quiet: Bool
    let modules: Int
    let isTerminal = isatty(STDOUT_FILENO) != 0
    var lastPrint = DispatchTime.now().uptimeNanoseconds
    var lineOpen = false

    init(quiet: Bool, modules: Int) { self.quiet = quiet; self.modules = modules }

    func handle(_ event: TrainingEvent) {
        guard !quiet else { return }
        switch event {
        case .moduleStarted(let module, let lap, let epochs, let plan):
            endLine()
            print("module \(module + 1)/\(modules)\(lap > 0 ? " lap \(lap + 1)" : ""): \(epochs) epochs, planned memory \(formatBytes(plan.totalBytes)) (\(plan.breakdown))")
        case .batch(let module, _, let epoch, let batch, let batches, let metrics, let rate):
            let now = DispatchTime.now().uptimeNanoseconds
            let interval: UInt64 = isTerminal ? 100_000_000 : 5_000_000_000
            guard now - lastPrint >= interval || batch == batches else { return }
            lastPrint = now
            let line = String(format: "  module %d/%d epoch %d batch %d/%d loss %.4f kinetic %.4g acc %.1f%% %.0f samples/s",
                              module + 1, modules, epoch + 1, batch, batches, metrics.taskLoss, metrics.kineticEnergy,
                              100 * Double(metrics.correct) / Double(max(metrics.samples, 1)), rate)
            if isTerminal {
                print("\r" + line + "   ", terminator: "")
                fflush(stdout)
                lineOpen = true
            } else if batch != batches {
                print(line)
            }
        case .epochFinished(let log):
            endLine()
            print(String(format: "  module %d epoch %d: loss %.4f kinetic %.4g train acc %.2f%% lr %.4g w %.4g (%.1fs)",
                         log.module + 1, log.epoch + 1, log.taskLoss, log.kineticEnergy, log.trainAccuracy * 100,
                         log.learningRate, log.transportWeight, log.seconds))
        case .moduleResumed(let module, let lap):
            endLine()
            print("module \(module + 1)/\(modules)\(lap > 0 ? " lap \(lap + 1)" : ""): complete in the store, reused")
        case .moduleResumedAtEpoch(let module, _, let epoch):
            endLine()
            print("module \(module + 1)/\(modules): resuming after epoch \(epoch) from its checkpoint")
        case .moduleEvaluated(let evaluation):
            endLine()
            print(String(format: "module %d: test accuracy %.2f%%, kinetic %.4g, peak %@",
                         evaluation.module + 1, evaluation.testAccuracy * 100, evaluation.kineticEnergy, formatBytes(evaluation.peakBytes)))
        }
    }

    func endLine() {
        if lineOpen { print(""); lineOpen = false }
    }

    func finish() { if !quiet { endLine() } }
}
