import BlockwiseDevice
import BlockwisePlan
import BlockwiseKernels
import BlockwiseTraining
import Foundation

/// Everything a run reports: `report.json`, the terminal summary, the plots and the HTML page.
public struct RunReport: Codable, Sendable {
    public struct Module: Codable, Sendable {
        public var evaluation: ModuleEvaluation
        public var device: DeviceCost?
    }
    public var title: String
    public var configuration: TrainingConfiguration
    public var dataset: String
    public var trainSamples: Int
    public var testSamples: Int
    public var profile: DeviceProfile?
    public var budget: Int?
    public var budgetHeld: Bool?
    public var modules: [Module]
    public var epochs: [EpochLog]
    public var peakBytes: Int
    public var peakBreakdown: MemoryBreakdown
    public var hostSeconds: Double
    public var hostPeakResidentBytes: Int?
    public var device: DeviceCost?
    /// The ledger's timeline (at most ~2000 points: the peak of each stretch and every phase
    /// marker are kept).
    public var timeline: [LedgerEvent]
    /// The buffers live at the run's peak, the largest first (nil in reports of earlier versions).
    public var peakTensors: [LiveTensor]?
    /// "validation" when the evaluations ran on a split held out of the training data
    /// (`--validation-size`); nil: the test split.
    public var evaluationSplit: String?
    public var bestModule: Int?
    public var lastModule: Int?
    /// The store's share of the device's storage capacity and the run's writes' of its endurance.
    public var wear: StorageWear?

    /// The emulated cost of one module's counted work: its work by class (or, from an older
    /// store, its FLOPs), the bytes SQLite wrote to the file system where they were measured
    /// (else the feature bytes), the feature bytes read and the storage operations.
    public static func cost(of evaluation: ModuleEvaluation, on profile: DeviceProfile) -> DeviceCost {
        let written = evaluation.storeFileBytesWritten ?? evaluation.storeBytesWritten
        if let work = evaluation.work {
            return DeviceCost(profile: profile, work: work, bytesRead: evaluation.storeBytesRead, bytesWritten: written,
                              operations: evaluation.storeOperations)
        }
        return DeviceCost(profile: profile, flops: evaluation.flops, bytesRead: evaluation.storeBytesRead, bytesWritten: written,
                          operations: evaluation.storeOperations)
    }

    /// - storeBytes: the store file's size after the run (for the share of the device's capacity).
    public init(title: String, result: TrainingResult, dataset: String, trainSamples: Int, testSamples: Int,
                profile: DeviceProfile?, budget: Int?, timeline: [LedgerEvent], peakTensors: [LiveTensor]? = nil,
                hostPeakResidentBytes: Int?, storeBytes: Int? = nil, evaluationSplit: String = "test") {
        self.title = title
        self.evaluationSplit = evaluationSplit == "test" ? nil : evaluationSplit
        configuration = result.configuration
        self.dataset = dataset
        self.trainSamples = trainSamples
        self.testSamples = testSamples
        self.profile = profile
        self.budget = budget
        budgetHeld = budget.map { result.peakBytes <= $0 }
        modules = result.modules.map { evaluation in
            Module(evaluation: evaluation, device: profile.map { RunReport.cost(of: evaluation, on: $0) })
        }
        epochs = result.epochs
        peakBytes = result.peakBytes
        peakBreakdown = result.peakBreakdown
        hostSeconds = result.seconds
        self.hostPeakResidentBytes = hostPeakResidentBytes
        // The resident procedures train every module at once: each module's figures are the
        // whole run's (one FLOP count, one time), not parts to add up.
        let resident = result.configuration.procedure.keepsAllModulesResident
        let cost: DeviceCost? = profile.map { profile in
            // Resident: each module carries the whole run's figures, counted once.
            resident ? (result.modules.first.map { RunReport.cost(of: $0, on: profile) } ?? DeviceCost.total([], profile: profile))
                     : DeviceCost.total(result.modules.map { RunReport.cost(of: $0, on: profile) }, profile: profile)
        }
        device = cost
        wear = profile.map { StorageWear(profile: $0, storeBytes: storeBytes ?? 0, bytesWritten: cost?.bytesWritten ?? 0) }
        // A module-by-module run keeps each module's own timeline and peak buffers with its
        // evaluation (in the store), so a resumed run reports every module, not only those this
        // process trained: the modules' timelines follow one another on the modules' own clocks.
        let evaluations = result.modules
        if !resident, !evaluations.isEmpty, evaluations.allSatisfy({ $0.timeline != nil }) {
            var joined: [LedgerEvent] = [], offset = 0.0
            for evaluation in evaluations {
                joined += evaluation.timeline!.map { var event = $0; event.seconds = ($0.seconds ?? 0) + offset; return event }
                offset += evaluation.seconds
            }
            self.timeline = MemoryLedger.downsample(joined, to: 2000)
            self.peakTensors = evaluations.max { $0.peakBytes < $1.peakBytes }?.peakTensors
        } else {
            self.timeline = MemoryLedger.downsample(timeline, to: 2000)
            self.peakTensors = peakTensors
        }
        // The report holds them once, at the top.
        for index in modules.indices { modules[index].evaluation.timeline = nil; modules[index].evaluation.peakTensors = nil }
        bestModule = result.best?.module
        lastModule = result.last?.module
    }


    public var best: ModuleEvaluation? { modules.map(\.evaluation).max { $0.testAccuracy < $1.testAccuracy } }
    public var last: ModuleEvaluation? { modules.last?.evaluation }

    public func json() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        // A test accuracy or kinetic energy that is not finite is reported as such, not a crash.
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return try encoder.encode(self)
    }

    public static func decode(_ data: Data) throws -> RunReport {
        let decoder = JSONDecoder()
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return try decoder.decode(RunReport.self, from: data)
    }

    /// One unit for each of the per-module device columns (time, energy).
    public var deviceColumns: (DurationColumn, EnergyColumn) {
        let costs = modules.compactMap(\.device)
        return (DurationColumn(costs.map(\.seconds)), EnergyColumn(costs.map(\.energyJoules)))
    }

    /// The per-module table as printed at the end of a run (and `modules.csv` in the report).
    public func table() -> Table {
        var table = Table([
            .init("module", width: 8, csv: "module"), .init("train acc", width: 11, csv: "train_accuracy"), .init("test acc", width: 10, csv: "test_accuracy"),
            .init("kinetic", width: 10, csv: "kinetic_energy"), .init("peak memory", width: 13, csv: "peak_bytes"),
            .init("largest", width: 18, csv: "largest_category"), .init("store written", width: 15, csv: "store_bytes_written"),
            .init("host time", width: 11, csv: "host_seconds"),
            .init("\(profile?.name ?? "device") time", width: 24, csv: "device_seconds", inText: profile != nil),
            .init("energy", width: 0, csv: "device_joules", inText: profile != nil),
        ])
        let (times, energies) = deviceColumns
        for module in modules {
            let m = module.evaluation
            var row: [Table.Cell] = [
                .int(m.module + 1),
                .init(m.trainAccuracy.map { String(format: "%.2f%%", $0 * 100) } ?? "-", value: m.trainAccuracy.map { String($0) } ?? ""),
                .init(String(format: "%.2f%%", m.testAccuracy * 100), value: String(m.testAccuracy)),
                .init(String(format: "%.4g", m.kineticEnergy), value: String(m.kineticEnergy)),
                .bytes(m.peakBytes), .init(m.peakBreakdown.largest?.rawValue ?? "-", value: m.peakBreakdown.largest?.rawValue ?? ""),
                .bytes(m.storeBytesWritten), .init(String(format: "%.1f s", m.seconds), value: String(m.seconds)),
            ]
            let cost = module.device
            row += [.init(cost.map { times.format($0.seconds) } ?? "-", value: cost.map { String($0.seconds) } ?? ""),
                    .init(cost.map { energies.format($0.energyJoules) } ?? "-", value: cost.map { String($0.energyJoules) } ?? "")]
            table.append(row)
        }
        return table
    }

    /// The per-module table and the closing lines, as printed at the end of a run.
    public func summary() -> String {
        ([table().text] + closingLines()).joined(separator: "\n")
    }

    /// The lines after the per-module table: best and last module, peak and budget, times, RSS.
    public func closingLines() -> [String] {
        var lines: [String] = []
        if let best, let last {
            lines.append(String(format: "best: module %d (%.2f%%); last: module %d (%.2f%%)", best.module + 1, best.testAccuracy * 100,
                                last.module + 1, last.testAccuracy * 100))
        }
        // `--eval-each-epoch`: the best epoch's accuracy per module, as the authors report it (on
        // the test split; with --validation-size, on the validation split).
        let split = evaluationSplit ?? "test"
        let perEpoch = Dictionary(grouping: epochs.filter { $0.testAccuracy != nil }, by: \.module)
        if !perEpoch.isEmpty {
            let best = perEpoch.keys.sorted().map { module -> String in
                let top = perEpoch[module]!.max { $0.testAccuracy! < $1.testAccuracy! }!
                return String(format: "module %d %.2f%% (epoch %d)", module + 1, top.testAccuracy! * 100, top.epoch + 1)
            }
            lines.append("best epoch's \(split) accuracy, the authors' protocol (selected on \(split) data; evaluated after each epoch, "
                         + "before the final batch-norm recalibration): " + best.joined(separator: ", "))
        }
        var memory = "peak memory \(formatBytes(peakBytes)) (\(peakBreakdown))"
        if let budget { memory += "; budget \(formatBytes(budget)) " + (budgetHeld == true ? "held" : "EXCEEDED") }
        lines.append(memory)
        // A resumed run reuses modules trained by earlier processes: the run's time is the modules'
        // own, this process's is said beside it (it was "0.0 s" after a resume).
        let resident = configuration.procedure.keepsAllModulesResident
        let modulesSeconds = resident ? (modules.map(\.evaluation.seconds).max() ?? 0) : modules.reduce(0) { $0 + $1.evaluation.seconds }
        var time = String(format: "host time %.1f s", max(modulesSeconds, hostSeconds))
        if hostSeconds + 0.05 < modulesSeconds {
            time += String(format: " (%.1f s in this process; the rest by earlier runs on this store)", hostSeconds)
        }
        if let device, let profile {
            time += "; emulated \(profile.name): \(device.breakdownText)"
        }
        lines.append(time)
        if let device, let profile {
            let rows = resident ? [("all", device)] : modules.compactMap { module in module.device.map { ("\(module.evaluation.module + 1)", $0) } }
            lines.append("device time by operation class on \(profile.name) (each class: its FLOPs at its rate or its bytes at the memory bandwidth, the longer):")
            lines += DeviceCost.classTable(rows).text.split(separator: "\n").map { "  " + $0 }
            if let wear {
                let measured = modules.contains { $0.evaluation.storeFileBytesWritten != nil }
                lines.append(wear.summary + " (\(formatBytes(device.bytesWritten)) written\(measured ? " by SQLite, measured" : ""))")
                lines += wear.warnings.map { "warning: " + $0 }
            }
        }
        if let rss = hostPeakResidentBytes {
            lines.append("host peak RSS (VmHWM) \(formatBytes(rss)): the whole host process (Swift runtime, the loaded data set, OpenBLAS's buffers); the ledger counts what the emulated device holds")
        }
        return lines
    }
}
