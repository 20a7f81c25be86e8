import BlockwiseDevice
import BlockwisePlan
import BlockwiseKernels
import BlockwiseTraining
import Foundation

/// Writes `report.json`, `accuracy.svg`, `memory.svg`, `report.html`, `modules.csv` (the per-module table) and, for
/// block-wise runs, `arena.svg` (the largest module's training arena) into a directory.
public enum ReportWriter {
    public static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]

    public static func accuracyChart(_ report: RunReport) -> String {
        let modules = report.modules.map(\.evaluation)
        var series = [SVGChart.Series(name: "test accuracy", color: palette[0],
                                      points: modules.map { (Double($0.module + 1), $0.testAccuracy * 100) })]
        let train = modules.compactMap { m in m.trainAccuracy.map { (Double(m.module + 1), $0 * 100) } }
        if !train.isEmpty { series.append(.init(name: "train accuracy", color: palette[2], points: train, dashed: true)) }
        return SVGChart.lines(title: "\(report.title): accuracy of each module's head", xLabel: "module (depth)", yLabel: "accuracy", series: series)
    }

    /// Test accuracy versus depth for several runs (VanGL vs TRGL).
    public static func comparisonChart(title: String, _ runs: [(label: String, report: RunReport)]) -> String {
        let series = runs.enumerated().map { index, run in
            SVGChart.Series(name: run.label, color: palette[index % palette.count],
                            points: run.report.modules.map { (Double($0.evaluation.module + 1), $0.evaluation.testAccuracy * 100) })
        }
        return SVGChart.lines(title: title, xLabel: "module (depth)", yLabel: "test accuracy", series: series)
    }

    public static func memoryChart(_ report: RunReport) -> String {
        SVGChart.memory(title: "\(report.title): ledger bytes by category", timeline: report.timeline, budget: report.budget,
                        peakTensors: report.peakTensors ?? [])
    }

    /// The training arena of the module whose packed arena is largest, as `--arena packed` places
    /// it (issue 19; block-wise runs only, nil for parallel and e2e, which is when `html` links it).
    public static func arenaChart(_ report: RunReport) -> String? {
        let c = report.configuration
        guard !c.procedure.keepsAllModulesResident else { return nil }
        let phases = ExecutionPlan(c).modules.map(\.training)
        let placed = phases.compactMap { phase in
            phase.lifetimes(configuration: c.model, recomputingOutputs: true).map { (phase, $0, ArenaPlacement($0)) }
        }
        guard let (phase, lifetimes, placement) = placed.max(by: { $0.2.size < $1.2.size }) else { return nil }
        let slots = phase.slotPerTensor(configuration: c.model).breakdown.total - lifetimes.resident
        let mode = c.packedArena == true ? "as this run placed it" : "as --arena packed would place it (this run: slots)"
        return ArenaChart.svg(title: "Module \(phase.module + 1) training arena, \(mode), batch \(phase.options.batch)",
                              lifetimes: lifetimes, placement: placement, slotArenaBytes: slots)
    }

    public static func html(_ report: RunReport) -> String {
        let escape = SVGChart.escape
        var rows = ""
        let (times, energies) = report.deviceColumns
        for module in report.modules {
            let m = module.evaluation
            let train: String = m.trainAccuracy.map { String(format: "%.2f%%", $0 * 100) } ?? "-"
            let time: String = module.device.map { escape(times.format($0.seconds)) } ?? "-"
            let energy: String = module.device.map { escape(energies.format($0.energyJoules)) } ?? "-"
            var row = "<tr><td>\(m.module + 1)</td><td>\(train)</td>"
            row += "<td>" + String(format: "%.2f%%", m.testAccuracy * 100) + "</td><td>" + String(format: "%.4g", m.kineticEnergy) + "</td>"
            row += "<td>\(formatBytes(m.peakBytes))</td><td>\(m.peakBreakdown.largest?.rawValue ?? "-")</td>"
            row += "<td>\(formatBytes(m.storeBytesWritten))</td><td>" + String(format: "%.1f s", m.seconds) + "</td>"
            row += "<td>\(time)</td><td>\(energy)</td></tr>\n"
            rows += row
        }
        var device = report.profile.map { "Emulated device: <b>\(escape($0.displayName))</b> (profile \(escape($0.name)))" } ?? "No emulated device"
        if let budget = report.budget {
            device += "; budget <b>\(escape(formatBytes(budget)))</b>, " + (report.budgetHeld == true ? "held" : "EXCEEDED")
                + " (peak \(escape(formatBytes(report.peakBytes))), \(String(format: "%.0f%%", 100 * Double(report.peakBytes) / Double(budget))) of it)"
        } else {
            device += "; no budget (peak \(escape(formatBytes(report.peakBytes))))"
        }
        device += "."
        var tensors = ""
        if let live = report.peakTensors, !live.isEmpty {
            tensors = "<h3>Live at the peak (\(escape(formatBytes(report.peakBytes)))), the largest first</h3>\n"
                + "<table><tr><th>buffer</th><th>category</th><th>count</th><th>bytes</th><th>share</th></tr>\n"
            for t in live.prefix(40) {
                tensors += "<tr><td style=\"text-align:left\">\(escape(t.tag))</td><td>\(t.category.rawValue)</td><td>\(t.count)</td>"
                    + "<td>\(formatBytes(t.bytes))</td><td>\(String(format: "%.1f%%", 100 * Double(t.bytes) / Double(max(report.peakBytes, 1))))</td></tr>\n"
            }
            if live.count > 40 { tensors += "<tr><td colspan=\"5\">and \(live.count - 40) more</td></tr>\n" }
            tensors += "</table>"
        }
        return """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>\(escape(report.title))</title>
        <style>body{font-family:Helvetica,Arial,sans-serif;margin:2em;max-width:1000px}table{border-collapse:collapse}
        td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}pre{background:#f7f7f7;padding:1em;white-space:pre-wrap;overflow-wrap:anywhere}</style>
        </head><body>
        <h1>\(escape(report.title))</h1>
        <p>\(escape(report.configuration.model.summary)); \(escape(report.configuration.procedure.rawValue)); tau \(escape(report.configuration.tau.description));
        \(report.trainSamples) training / \(report.testSamples) test samples of \(escape(report.dataset)).</p>
        <p>\(device)</p>
        <table><tr><th>module</th><th>train acc</th><th>test acc</th><th>kinetic energy</th><th>peak memory</th><th>largest category</th>
        <th>store written</th><th>host time</th><th>device time</th><th>device energy</th></tr>
        \(rows)</table>
        <h2>Run</h2>
        <pre>\(escape(report.closingLines().joined(separator: "\n")))</pre>
        <h2>Accuracy versus depth</h2><img src="accuracy.svg" alt="accuracy per module">
        <h2>Memory</h2><img src="memory.svg" alt="ledger bytes over the run">
        \(tensors)\(report.configuration.procedure.keepsAllModulesResident ? "" : "\n<h2>Arena</h2><img src=\"arena.svg\" alt=\"the largest module's training arena, one rectangle per tensor\">")
        </body></html>

        """
    }

    /// Writes the five files; returns their paths.
    /// - Throws: ``ReportWriteError`` naming the file and the reason (disk full, permission).
    @discardableResult
    public static func write(_ report: RunReport, to directory: String) throws -> [String] {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw ReportWriteError(path: directory, reason: ReportWriteError.reason(error, path: directory))
        }
        let files: [(String, Data)] = [
            ("report.json", try report.json()),
            ("accuracy.svg", Data(accuracyChart(report).utf8)),
            ("memory.svg", Data(memoryChart(report).utf8)),
            ("report.html", Data(html(report).utf8)),
            ("modules.csv", Data(report.table().csv.utf8)),
        ] + (arenaChart(report).map { [("arena.svg", Data($0.utf8))] } ?? [])
        var paths: [String] = []
        for (name, data) in files {
            let path = (directory as NSString).appendingPathComponent(name)
            do { try data.write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
                throw ReportWriteError(path: path, reason: ReportWriteError.reason(error, path: path))
            }
            paths.append(path)
        }
        return paths
    }
}

/// A report file could not be written; the run itself is safe in its store.
public struct ReportWriteError: Error, CustomStringConvertible {
    public var path: String
    public var reason: String
    /// The run's store, when it has one (the results are safe there).
    public var store: String?
    public init(path: String, reason: String, store: String? = nil) { self.path = path; self.reason = reason; self.store = store }

    public var description: String {
        guard let store else { return "cannot write '\(path)': \(reason). Free space or fix the directory, or pass another path." }
        return "cannot write '\(path)': \(reason). The run's results are saved in its store: free space or fix the directory, "
            + "then 'blockwise report --store \(store)' writes the report again (or pass --report DIR)."
    }

    /// The reason in words (see ``describeFileError(_:)``).
    public static func reason(_ error: Error, path: String? = nil) -> String { describeFileError(error, path: path) }
}
