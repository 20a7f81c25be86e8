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

struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Re-render a finished run's report files (report.json, accuracy.svg, memory.svg, report.html, modules.csv) from its store.",
        discussion: """
        Example:
          blockwise report --store blockwise.sqlite --report out/
        """)
    @OptionGroup var options: StoreOption
    @Option(help: "Output directory (default: <store>-report next to the store).")
    var report: String?

    func run() throws {
        let store = try FeatureStore(readingAt: options.store)
        guard let json = try store.savedReport() else {
            // The store is what it is (exit 1), not a wrong option.
            throw StoreError.unfinished(path: options.store)
        }
        let runReport = try RunReport.decode(Data(json.utf8))
        let directory = report ?? defaultReportDirectory(store: options.store)
        try ReportWriter.write(runReport, to: directory)
        print(runReport.summary())
        print("report: \((directory as NSString).appendingPathComponent("report.html")) (report.json, accuracy.svg, memory.svg, modules.csv" + (runReport.configuration.procedure.keepsAllModulesResident ? "" : ", arena.svg") + ")")
    }
}

struct Compare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train the same configuration and seed with --tau off (VanGL) and with the transport term (TRGL); plot both accuracy-versus-depth curves.",
        discussion: """
        Each run has its own store (<store>-vangl.sqlite, <store>-trgl.sqlite), so an interrupted \
        compare resumes. Writes compare.svg and compare.json into --report.

        Examples:
          blockwise compare --train-size 600 --modules 6
          blockwise compare --tau 2 --tau-schedule fixed --report compare-out
        """)

    @OptionGroup var dataOptions: DataOptions
    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var trainingOptions: TrainingOptions
    @OptionGroup var device: DeviceOptions
    @Option(help: "Base name of the two stores.")
    var store: String = "blockwise.sqlite"
    @Option(help: "Output directory (default: <store>-compare).")
    var report: String?
    @Flag(help: "Start both runs over.")
    var fresh = false
    @OptionGroup var compute: ComputeOptions
    @Flag(help: "Print only the summaries.")
    var quiet = false
    @Option(help: ArgumentHelp("Train the configuration with each technique instead (block-wise ones with VanGL and TRGL) and print one table: accuracy, peak, smallest budget, device time and energy, storage written, host time; plots accuracy and device time against peak memory.",
                               valueName: "e2e,e2e-recompute,e2e-paged,e2e-paged-activations,sequential,parallel"))
    var techniques: String?
    @Option(help: "Encoding of the stored features (block-wise techniques): fp32, fp16 or bf16.")
    var featureDtype: String = "fp32"
    @Option(parsing: .unconditional, help: "Bound on SQLite's page cache.")
    var storeCache: String = "1MiB"

    func run() throws {
        compute.apply()
        if let techniques { return try compareTechniques(techniques) }
        // Every option is checked before the data is read (the model's input shape is checked
        // again once the data is known).
        _ = try trainingOptions.configuration(model: try modelOptions.model(dataset: nil))
        let (train, test) = try dataOptions.load(seed: trainingOptions.seed)
        let model = try modelOptions.model(dataset: train)
        let trgl = try trainingOptions.configuration(model: model)
        guard !trgl.tau.isOff else { throw ValidationError("compare trains --tau off itself; pass the TRGL --tau value (e.g. --tau 1)") }
        var vangl = trgl
        vangl.tau = .off
        let (profile, budget) = try device.resolve()
        let base = store.hasSuffix(".sqlite") ? String(store.dropLast(7)) : store
        var reports: [(label: String, report: RunReport)] = []
        for (label, suffix, configuration) in [("VanGL (tau off)", "vangl", vangl), ("TRGL (tau \(trgl.tau.shortDescription))", "trgl", trgl)] {
            let runReport = try trainOne(configuration, label: label, storePath: "\(base)-\(suffix).sqlite", train: train, test: test,
                                         profile: profile, budget: budget, fit: try device.fitPolicy())
            reports.append((label, runReport))
        }
        let directory = report ?? base + "-compare"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let title = "\(model.modules)-\(model.blocksPerModule) ResNet w\(model.width), \(trgl.procedure.rawValue): VanGL vs TRGL"
        try Data(ReportWriter.comparisonChart(title: title, reports).utf8).write(to: URL(fileURLWithPath: directory + "/compare.svg"))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(reports.map(\.report)).write(to: URL(fileURLWithPath: directory + "/compare.json"))
        for (label, runReport) in reports { try ReportWriter.write(runReport, to: directory + "/" + (label.hasPrefix("VanGL") ? "vangl" : "trgl")) }
        // Side by side.
        print(pad("module", 8) + pad("VanGL test acc", 16) + pad("TRGL test acc", 16) + pad("VanGL kinetic", 15) + "TRGL kinetic")
        let a = reports[0].report.modules.map(\.evaluation), b = reports[1].report.modules.map(\.evaluation)
        for (x, y) in zip(a, b) {
            print(pad("\(x.module + 1)", 8) + pad(String(format: "%.2f%%", x.testAccuracy * 100), 16)
                  + pad(String(format: "%.2f%%", y.testAccuracy * 100), 16) + pad(String(format: "%.4g", x.kineticEnergy), 15)
                  + String(format: "%.4g", y.kineticEnergy))
        }
        for (label, runReport) in reports {
            if let best = runReport.best, let last = runReport.last {
                print(String(format: "%@: best module %d (%.2f%%), last module %d (%.2f%%)", label, best.module + 1, best.testAccuracy * 100,
                             last.module + 1, last.testAccuracy * 100))
            }
        }
        print("compare: \(directory)/compare.svg, compare.json, vangl/ and trgl/ reports")
    }
}

extension Compare {
    /// One of compare's runs: its own store, the device and budget, progress unless `--quiet`.
    func trainOne(_ configuration: TrainingConfiguration, label: String, storePath: String, train: Dataset, test: Dataset,
                  profile: DeviceProfile?, budget: Int?, fit: FitPolicy, encoding: FeatureEncoding = .fp32,
                  cacheBytes: Int = RunPlanner.defaultStoreCacheBytes) throws -> RunReport {
        if !quiet { print("== \(label)") }
        var session = TrainingSession(configuration: configuration, train: train, test: test)
        session.title = label
        session.storePath = storePath
        session.encoding = encoding
        session.storeCacheBytes = cacheBytes
        session.fresh = fresh
        session.profile = profile
        session.budget = budget
        session.fit = fit
        session.say = { if !quiet { print($0) } }
        let progress = ProgressPrinter(quiet: quiet, modules: configuration.model.modules, estimates: session.progress)
        session.observer = progress.handle
        let (runReport, _) = try session.run()
        progress.finish()
        return runReport
    }

    /// `compare --techniques`: the same configuration trained with each technique.
    func compareTechniques(_ names: String) throws {
        let list: [Technique]
        do { list = try Technique.parse(names, modules: try modelOptions.model(dataset: nil).modules) } catch let error as TechniqueError {
            throw ValidationError(error.message)
        }
        guard let encoding = FeatureEncoding(rawValue: featureDtype) else { throw ValidationError("--feature-dtype must be fp32, fp16 or bf16") }
        let cacheBytes = try parseSize(storeCache, option: "--store-cache", minimum: 1024)
        _ = try trainingOptions.configuration(model: try modelOptions.model(dataset: nil))
        let (train, test) = try dataOptions.load(seed: trainingOptions.seed)
        let model = try modelOptions.model(dataset: train)
        let base = try trainingOptions.configuration(model: model)
        let trgl = base.tau.isOff ? TauSchedule.doubled(tau: 1) : base.tau
        let (profile, budget) = try device.resolve()
        let fit = try device.fitPolicy()
        // Before anything trains: every technique must fit the budget, as `plan --techniques` says.
        if let budget {
            let over = list.map {
                TechniquePlan($0, base: base, residence: .store(encoding: encoding, cacheBytes: cacheBytes), cacheBytes: cacheBytes, budget: budget,
                              profile: profile, trainCount: train.count, testCount: test.count, encoding: encoding, fit: fit)
            }.filter { $0.fits == false }
            if !over.isEmpty {
                print(TechniquePlan.table(over).text)
                throw BudgetCannotBeMet(message: "compare --techniques: \(over.map(\.label).joined(separator: ", ")) do not fit the budget \(formatBytes(budget)) "
                                        + "(their plans above; `blockwise plan --techniques ...` shows all of them): drop them from --techniques, or raise --budget")
            }
        }
        let stem = store.hasSuffix(".sqlite") ? String(store.dropLast(7)) : store
        let directory = report ?? stem + "-techniques"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var rows: [(label: String, plan: TechniquePlan, report: RunReport)] = []
        for technique in list {
            for tau in technique.hasLocalLosses ? [TauSchedule.off, trgl] : [base.tau] {
                var configuration = technique.configuration(base)
                configuration.tau = tau
                let label = technique.rawValue + (technique.hasLocalLosses ? (tau.isOff ? " VanGL" : " TRGL") : "")
                let slug = label.replacingOccurrences(of: " ", with: "-").lowercased()
                let runReport = try trainOne(configuration, label: label, storePath: "\(stem)-\(slug).sqlite", train: train, test: test,
                                             profile: profile, budget: budget, fit: fit, encoding: encoding, cacheBytes: cacheBytes)
                try ReportWriter.write(runReport, to: directory + "/" + slug)
                let plan = TechniquePlan(technique, label: label, base: configuration, residence: .store(encoding: encoding, cacheBytes: cacheBytes),
                                         cacheBytes: cacheBytes, budget: budget, profile: profile, trainCount: train.count, testCount: test.count,
                                         encoding: encoding, fit: fit)
                rows.append((label, plan, runReport))
            }
        }
        var table = Table([.init("technique", width: 24, csv: "technique"), .init("last acc", width: 10, csv: "last_test_accuracy"),
                           .init("best acc", width: 10, csv: "best_test_accuracy"), .init("peak", width: 11, csv: "peak_bytes"),
                           .init("largest", width: 18, csv: "largest_category"), .init("smallest budget", width: 17, csv: "smallest_budget_bytes"),
                           .init("device time", width: 16, csv: "device_seconds"), .init("energy", width: 10, csv: "device_joules"),
                           .init("storage written", width: 17, csv: "storage_bytes_written"), .init("host time", width: 0, csv: "host_seconds")])
        let times = DurationColumn(rows.compactMap { $0.report.device?.seconds }), energies = EnergyColumn(rows.compactMap { $0.report.device?.energyJoules })
        for (label, plan, runReport) in rows {
            let largest = runReport.peakBreakdown.bytes.max { $0.value < $1.value }?.key.rawValue ?? "-"
            let device = runReport.device
            table.append([.init(label), .init(String(format: "%.2f%%", (runReport.last?.testAccuracy ?? 0) * 100), value: "\(runReport.last?.testAccuracy ?? 0)"),
                          .init(String(format: "%.2f%%", (runReport.best?.testAccuracy ?? 0) * 100), value: "\(runReport.best?.testAccuracy ?? 0)"),
                          .bytes(runReport.peakBytes), .init(largest), .bytes(plan.smallestBudget),
                          device.map { .init(times.format($0.seconds), value: "\($0.seconds)") } ?? .init("-", value: ""),
                          device.map { .init(energies.format($0.energyJoules), value: "\($0.energyJoules)") } ?? .init("-", value: ""),
                          .bytes(device?.bytesWritten ?? 0), .init(String(format: "%.1f s", runReport.hostSeconds), value: "\(runReport.hostSeconds)")])
        }
        print("techniques: \(model.summary); batch \(base.batchSize); \(train.count) train / \(test.count) test samples"
              + (profile.map { "; device \($0.name)" } ?? ""))
        print(table.text)
        try Data(table.csv.utf8).write(to: URL(fileURLWithPath: directory + "/techniques.csv"))
        let title = "\(model.modules)-\(model.blocksPerModule) ResNet w\(model.width)"
        let accuracy = SVGChart.scatter(title: title + ": last module's test accuracy against peak memory", xLabel: "peak memory", yLabel: "test accuracy",
                                        points: rows.map { ($0.label, $0.report.peakBytes, ($0.report.last?.testAccuracy ?? 0) * 100) })
        try Data(accuracy.utf8).write(to: URL(fileURLWithPath: directory + "/accuracy-vs-memory.svg"))
        if profile != nil {
            let time = SVGChart.scatter(title: title + ": emulated \(profile!.name) time against peak memory", xLabel: "peak memory",
                                        yLabel: "device time (minutes)",
                                        points: rows.map { ($0.label, $0.report.peakBytes, ($0.report.device?.seconds ?? 0) / 60) },
                                        yFormat: { String(format: "%.3g", $0) })
            try Data(time.utf8).write(to: URL(fileURLWithPath: directory + "/time-vs-memory.svg"))
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        // What was measured beside what was planned, per technique.
        struct Row: Encodable {
            var technique: String, lastTestAccuracy: Double?, bestTestAccuracy: Double?, measuredPeakBytes: Int, measuredPeak: MemoryBreakdown
            var device: DeviceCost?, hostSeconds: Double, planned: TechniquePlan
        }
        try encoder.encode(rows.map {
            Row(technique: $0.label, lastTestAccuracy: $0.report.last?.testAccuracy, bestTestAccuracy: $0.report.best?.testAccuracy,
                measuredPeakBytes: $0.report.peakBytes, measuredPeak: $0.report.peakBreakdown, device: $0.report.device,
                hostSeconds: $0.report.hostSeconds, planned: $0.plan)
        }).write(to: URL(fileURLWithPath: directory + "/techniques.json"))
        print("compare: \(directory)/techniques.csv, accuracy-vs-memory.svg\(profile != nil ? ", time-vs-memory.svg" : ""), techniques.json and one report per technique")
    }
}
