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
        print("report: \((directory as NSString).appendingPathComponent("report.html")) (report.json, accuracy.svg, memory.svg, modules.csv)")
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

    func run() throws {
        compute.apply()
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
            if !quiet { print("== \(label)") }
            var session = TrainingSession(configuration: configuration, train: train, test: test)
            session.title = label
            session.storePath = "\(base)-\(suffix).sqlite"
            session.fresh = fresh
            session.profile = profile
            session.budget = budget
            session.fit = try device.fitPolicy()
            session.say = { if !quiet { print($0) } }
            let progress = ProgressPrinter(quiet: quiet, modules: model.modules)
            session.observer = progress.handle
            let (runReport, _) = try session.run()
            progress.finish()
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
