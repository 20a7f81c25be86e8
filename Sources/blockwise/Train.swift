import ArgumentParser
import BlockwiseData
import BlockwiseDevice
import BlockwisePlan
import BlockwiseKernels
import BlockwiseReports
import BlockwiseRuntime
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
          blockwise train --modules 8 --width 32 --train-size 6000 --epochs 3 \\
              --json result.json
        """)

    @OptionGroup var dataOptions: DataOptions
    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var trainingOptions: TrainingOptions

    @Option(help: "The run's SQLite store (features between modules, checkpoints, metrics); sequential and multilap.")
    var store: String = "blockwise.sqlite"
    @Option(help: "Encoding of the stored features: fp32 (exact), fp16 or bf16 (half the bytes).")
    var featureDtype: String = "fp32"
    @Option(parsing: .unconditional, help: "Bound on SQLite's page cache (e.g. 64KiB, 2MiB; a larger one saves almost no I/O: rows are read in order); its memory counts in the budget as storeEngine.")
    var storeCache: String = "1MiB"
    @Flag(help: "Continue the run in --store: completed modules are reused, an interrupted one continues from its last epoch. (A matching store is resumed anyway; this flag also requires that it exists.)")
    var resume = false
    @Flag(help: "Empty --store and start over, whatever it holds.")
    var fresh = false
    @Flag(help: "Keep the features between modules in memory instead of the store (no resume).")
    var inMemory = false
    @OptionGroup var device: DeviceOptions
    @OptionGroup var compute: ComputeOptions
    @Option(help: "Write the full result (configuration, epoch logs, per-module evaluation) as JSON to this file.")
    var json: String?
    @Flag(help: "Print nothing but the summary.")
    var quiet = false
    @Flag(help: "Check every option (ranges, names, the profile, sizes that need no data) and exit 0 without reading data or training; a bad option exits 2 as it would in a run (tools/sweep checks a spec's cells with it).")
    var checkOptions = false

    @Option(help: "Directory for report.json, accuracy.svg, memory.svg, report.html and modules.csv (default: <store>-report next to the store).")
    var report: String?

    func run() throws {
        compute.apply()
        // Every option is checked before the data is read (the model's input shape is checked
        // again once the data is known).
        let checked = try trainingOptions.configuration(model: try modelOptions.model(dataset: nil))
        try refusePagingInMemory(checked, inMemory: inMemory)
        guard let encoding = FeatureEncoding(rawValue: featureDtype) else {
            throw ValidationError("--feature-dtype must be fp32, fp16 or bf16 (got '\(featureDtype)')")
        }
        if resume && fresh { throw ValidationError("--resume and --fresh contradict each other: pick one") }
        if !inMemory && store.isEmpty { throw ValidationError("--store needs a file name (got an empty path)") }
        for (option, value) in [("--json", json), ("--report", report)] {
            guard let value else { continue }
            if value.isEmpty { throw ValidationError("\(option) needs a path (got an empty one)") }
            if !inMemory && StoreFile.isSameFile(value, store) {
                throw ValidationError("\(option) '\(value)' is the store itself: pass another path, or it would overwrite the store")
            }
        }
        if resume && !FileManager.default.fileExists(atPath: store) {
            throw ValidationError("--resume: no store at '\(store)'. Run without --resume to start, or pass --store PATH.")
        }
        let (profile, budget) = try device.resolve()
        let storeCacheBytes = try parseSize(storeCache, option: "--store-cache", minimum: 1024)
        do {
            _ = try SubsetSize(parsing: dataOptions.trainSize, option: "--train-size")
            _ = try SubsetSize(parsing: dataOptions.testSize, option: "--test-size")
        } catch DataError.badSubset(let message) { throw ValidationError(message) }
        _ = try device.fitPolicy()
        if checkOptions {
            print("options: ok")
            return
        }
        let (train, test) = try dataOptions.load(seed: trainingOptions.seed)
        let model = try modelOptions.model(dataset: train)
        let configuration = try trainingOptions.configuration(model: model)
        var session = TrainingSession(configuration: configuration, train: train, test: test)
        session.title = "\(model.modules)-\(model.blocksPerModule) ResNet w\(model.width), \(configuration.procedure.rawValue), tau \(configuration.tau.isOff ? "off (VanGL)" : "on (TRGL)")"
        session.storePath = inMemory ? nil : store
        session.encoding = encoding
        session.storeCacheBytes = storeCacheBytes
        session.fresh = fresh
        session.profile = profile
        session.budget = budget
        session.fit = try device.fitPolicy()
        session.evaluationSplit = dataOptions.validationSize == nil ? "test" : "validation"
        session.say = { if !quiet { print($0) } }
        if !quiet {
            let technique = configuration.endToEndMemory.map { $0 == .recompute ? " --recompute modules" : $0 == .pageActivations ? " --page activations" : " --page activations,weights" } ?? ""
            let augmentation = configuration.augment.map {
                "; augment \($0)" + (configuration.procedure.keepsAllModulesResident ? "" : " (later modules: \(configuration.augmentedInputsChoice))")
            } ?? ""
            print("blockwise: \(model.summary); \(configuration.procedure.rawValue)\(technique), tau \(configuration.tau.description)\(augmentation)")
            print("data: \(train.count) training / \(test.count) \(dataOptions.validationSize == nil ? "test" : "validation") samples from \(dataOptions.dataDescription); batch \(configuration.batchSize); seed \(configuration.seed)")
            if let profile { print("device: \(profile.displayName); budget \(budget.map(formatBytes) ?? "unlimited")") }
        }
        let progress = ProgressPrinter(quiet: quiet, modules: model.modules, estimates: session.progress)
        progress.evaluationSplit = session.evaluationSplit
        progress.plans = session.modulePlans()
        session.observer = progress.handle
        let (runReport, featureStore) = try session.run()
        progress.finish()
        print(runReport.summary())
        if let featureStore {
            let what = configuration.procedure.keepsAllModulesResident ? "pages" : "features"
            print("store: \(featureStore.path), \(formatBytes(featureStore.bytesWritten)) of \(what) written, \(formatBytes(featureStore.bytesRead)) read in this process")
        }
        let directory = report ?? defaultReportDirectory(store: store)
        do { try ReportWriter.write(runReport, to: directory) } catch var error as ReportWriteError {
            error.store = featureStore?.path
            throw error
        }
        print("report: \((directory as NSString).appendingPathComponent("report.html")) (report.json, accuracy.svg, memory.svg, modules.csv" + (runReport.configuration.procedure.keepsAllModulesResident ? "" : ", arena.svg") + ")")
        if let json {
            do { try runReport.json().write(to: URL(fileURLWithPath: json)) } catch {
                throw ReportWriteError(path: json, reason: ReportWriteError.reason(error, path: json), store: featureStore?.path)
            }
            print("wrote \(json)")
        }
    }
}

/// `<store without .sqlite>-report` next to the store.
func defaultReportDirectory(store: String) -> String {
    (store.hasSuffix(".sqlite") ? String(store.dropLast(7)) : store) + "-report"
}

/// Progress: one updating line on a terminal, a line every few seconds otherwise, nothing when quiet.
final class ProgressPrinter {
    let quiet: Bool
    let modules: Int
    let isTerminal = isatty(STDOUT_FILENO) != 0
    var lastPrint = DispatchTime.now().uptimeNanoseconds
    var lineOpen = false
    /// The planned peaks `blockwise plan` prints (one figure for a module in both commands).
    var plans: [ModuleMemoryPlan]?
    /// The run's remaining host time and emulated device time so far.
    let estimates: RunProgress?
    /// What the evaluations ran on: "test", or "validation" (`--validation-size`).
    var evaluationSplit = "test"

    init(quiet: Bool, modules: Int, estimates: RunProgress? = nil) { self.quiet = quiet; self.modules = modules; self.estimates = estimates }

    func handle(_ event: TrainingEvent) {
        guard !quiet else { return }
        switch event {
        case .moduleStarted(let module, let lap, let epochs, let plan):
            endLine()
            if let plans, module < plans.count {
                // plan's figure: the larger of training and streaming, plus SQLite's bound.
                var parts = plans[module].breakdown
                parts[.storeEngine] = plans[module].storeEngineBound
                print("module \(module + 1)/\(modules)\(lap > 0 ? " lap \(lap + 1)" : ""): \(epochs) epochs, planned peak \(formatBytes(plans[module].peakBytes)) (\(parts))")
            } else {
                print("module \(module + 1)/\(modules)\(lap > 0 ? " lap \(lap + 1)" : ""): \(epochs) epochs, planned memory \(formatBytes(plan.totalBytes)) (\(plan.breakdown))")
            }
        case .batch(let module, _, let epoch, let batch, let batches, let metrics, let rate):
            let now = DispatchTime.now().uptimeNanoseconds
            let interval: UInt64 = isTerminal ? 100_000_000 : 5_000_000_000
            guard now - lastPrint >= interval || batch == batches else { return }
            lastPrint = now
            var line = String(format: "  module %d/%d epoch %d batch %d/%d loss %.4f kinetic %.4g acc %.1f%% %.0f samples/s",
                              module + 1, modules, epoch + 1, batch, batches, metrics.taskLoss, metrics.kineticEnergy,
                              100 * Double(metrics.correct) / Double(max(metrics.samples, 1)), rate)
            if let estimate = estimates?.estimate {
                if let remaining = estimate.remainingHostSeconds { line += ", ETA " + formatDuration(remaining) }
                if let device = estimate.deviceSeconds { line += ", device " + formatDuration(device) + " so far" }
            }
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
            print(String(format: "module %d: %@ accuracy %.2f%%, kinetic %.4g, peak %@",
                         evaluation.module + 1, evaluationSplit, evaluation.testAccuracy * 100, evaluation.kineticEnergy, formatBytes(evaluation.peakBytes)))
        }
    }

    func endLine() {
        if lineOpen { print(""); lineOpen = false }
    }

    func finish() { if !quiet { endLine() } }
}
