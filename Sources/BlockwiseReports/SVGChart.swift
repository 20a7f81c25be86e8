import BlockwiseKernels
import Foundation

/// Plots written as plain SVG 1.1 (no scripts, no external resources): readable in any browser.
public enum SVGChart {
    public struct Series {
        public var name: String
        public var color: String
        public var points: [(x: Double, y: Double)]
        public var dashed: Bool
        public init(name: String, color: String, points: [(x: Double, y: Double)], dashed: Bool = false) {
            self.name = name; self.color = color; self.points = points; self.dashed = dashed
        }
    }

    static let width = 720.0, height = 420.0
    static let left = 70.0, right = 180.0, top = 40.0, bottom = 50.0

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }

    static func number(_ value: Double) -> String { String(format: "%.1f", value) }

    /// "Nice" tick values covering [low, high]: the step of 1, 2, 2.5 or 5 times a power of ten
    /// whose number of ticks is closest to `count` (the larger step on a tie), so a 6-point range
    /// gets 83, 84, ..., 87 and not only 84 and 86, and half a second not twelve ticks.
    static func ticks(_ low: Double, _ high: Double, count: Int = 5) -> [Double] {
        let span = max(high - low, 1e-12)
        let magnitude = pow(10, floor(log10(span / Double(max(count - 1, 1)))))
        let candidates = [0.1, 0.2, 0.25, 0.5, 1, 2, 2.5, 5, 10, 20].map { $0 * magnitude }
        func tickCount(_ step: Double) -> Int { Int(floor(high / step + 1e-9) - ceil(low / step - 1e-9)) + 1 }
        let step = candidates.min { a, b in
            let (da, db) = (abs(tickCount(a) - count), abs(tickCount(b) - count))
            return da != db ? da < db : a > b
        }!
        let first = ceil(low / step) * step
        return stride(from: first, through: high + step * 1e-9, by: step).map { $0 }
    }

    static func frame(title: String, xLabel: String, yLabel: String, xRange: (Double, Double), yRange: (Double, Double),
                      integerX: Bool = false, yTickMax: Double? = nil,
                      xFormat: (Double) -> String, yFormat: (Double) -> String, body: ((Double) -> Double, (Double) -> Double) -> String,
                      legend: [(String, String, Bool)]) -> String {
        let plotW = width - left - right, plotH = height - top - bottom
        let sx = { (x: Double) in left + (x - xRange.0) / max(xRange.1 - xRange.0, 1e-12) * plotW }
        let sy = { (y: Double) in top + plotH - (y - yRange.0) / max(yRange.1 - yRange.0, 1e-12) * plotH }
        var svg = """
        <?xml version="1.0" encoding="UTF-8"?>
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="Helvetica, Arial, sans-serif" font-size="12">
        <rect x="0" y="0" width="\(Int(width))" height="\(Int(height))" fill="white"/>
        <text x="\(number(left))" y="22" font-size="15" font-weight="bold">\(escape(title))</text>

        """
        for tick in ticks(yRange.0, yTickMax ?? yRange.1) {
            svg += "<line x1=\"\(number(left))\" y1=\"\(number(sy(tick)))\" x2=\"\(number(left + plotW))\" y2=\"\(number(sy(tick)))\" stroke=\"#e5e5e5\"/>\n"
            svg += "<text x=\"\(number(left - 6))\" y=\"\(number(sy(tick) + 4))\" text-anchor=\"end\">\(escape(yFormat(tick)))</text>\n"
        }
        let xTicks = integerX ? ticks(xRange.0, xRange.1, count: 8).filter { $0 == $0.rounded() } : ticks(xRange.0, xRange.1, count: 8)
        for tick in xTicks {
            svg += "<line x1=\"\(number(sx(tick)))\" y1=\"\(number(top + plotH))\" x2=\"\(number(sx(tick)))\" y2=\"\(number(top + plotH + 4))\" stroke=\"#333\"/>\n"
            svg += "<text x=\"\(number(sx(tick)))\" y=\"\(number(top + plotH + 18))\" text-anchor=\"middle\">\(escape(xFormat(tick)))</text>\n"
        }
        svg += "<rect x=\"\(number(left))\" y=\"\(number(top))\" width=\"\(number(plotW))\" height=\"\(number(plotH))\" fill=\"none\" stroke=\"#333\"/>\n"
        svg += "<text x=\"\(number(left + plotW / 2))\" y=\"\(number(height - 10))\" text-anchor=\"middle\">\(escape(xLabel))</text>\n"
        svg += "<text transform=\"translate(16 \(number(top + plotH / 2))) rotate(-90)\" text-anchor=\"middle\">\(escape(yLabel))</text>\n"
        svg += body(sx, sy)
        for (index, item) in legend.enumerated() {
            let y = top + 10 + Double(index) * 20
            let x = left + plotW + 16
            svg += "<line x1=\"\(number(x))\" y1=\"\(number(y))\" x2=\"\(number(x + 22))\" y2=\"\(number(y))\" stroke=\"\(item.1)\" stroke-width=\"\(item.2 ? 2 : 8)\"\(item.2 ? "" : "")/>\n"
            svg += "<text x=\"\(number(x + 28))\" y=\"\(number(y + 4))\">\(escape(item.0))</text>\n"
        }
        return svg + "</svg>\n"
    }

    /// One labelled point per item, x on a log axis of bytes (peak memory): `compare --techniques`.
    /// `yFormat` nil: percent labels with the decimals the ticks need (82.5%, not 82%).
    public static func scatter(title: String, xLabel: String, yLabel: String, points: [(label: String, bytes: Int, y: Double)],
                               yFormat: ((Double) -> String)? = nil) -> String {
        let xs = points.map { log10(Double(max($0.bytes, 1))) }, ys = points.map(\.y)
        let xRange = ((xs.min() ?? 0) - 0.25, (xs.max() ?? 1) + 0.35)
        let yLow = ys.min() ?? 0, yHigh = ys.max() ?? 1, margin = max((yHigh - yLow) * 0.15, abs(yHigh) * 0.05 + 1e-9)
        let yRange = (max(0, yLow - margin), yHigh + margin)
        let yFormat = yFormat ?? percentFormat(yRange)
        return frame(title: title, xLabel: xLabel + " (log scale)", yLabel: yLabel, xRange: xRange, yRange: yRange,
                     xFormat: { formatBytes(Int(pow(10, $0).rounded())) }, yFormat: yFormat, body: { sx, sy in
            var svg = ""
            // Labels right of their point, moved down past any label already placed and any other
            // point that they would overlap.
            var placed: [(x: Double, y: Double, width: Double)] = []
            let dots = points.indices.map { (x: sx(xs[$0]), y: sy(points[$0].y)) }
            for (index, point) in points.enumerated() {
                let x = sx(xs[index]), y = sy(point.y), color = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"][index % 7]
                svg += "<circle cx=\"\(number(x))\" cy=\"\(number(y))\" r=\"5\" fill=\"\(color)\"><title>\(escape(point.label)): \(formatBytes(point.bytes)), \(escape(yFormat(point.y)))</title></circle>\n"
                let width = 6.2 * Double(point.label.count)
                var labelY = y + 4
                func covers(_ dot: (x: Double, y: Double)) -> Bool { abs(dot.y - (labelY - 4)) < 9 && x + 8 < dot.x + 6 && dot.x - 6 < x + 8 + width }
                while placed.contains(where: { abs($0.y - labelY) < 12 && x + 8 < $0.x + $0.width && $0.x < x + 8 + width })
                        || dots.indices.contains(where: { $0 != index && covers(dots[$0]) }) { labelY += 12 }
                placed.append((x + 8, labelY, width))
                svg += "<text x=\"\(number(x + 8))\" y=\"\(number(labelY))\" font-size=\"11\" fill=\"\(color)\">\(escape(point.label))</text>\n"
            }
            return svg
        }, legend: [])
    }

    /// Lines with markers (accuracy versus module depth).
    /// Decimals that label every multiple of `step` exactly (2.5 needs one: "62.5%", not "62%").
    static func decimals(step: Double) -> Int {
        (0...3).first { d in let scaled = step * pow(10, Double(d)); return abs(scaled - scaled.rounded()) < 1e-6 } ?? 3
    }

    /// Percent labels with the decimals the ticks of `range` need.
    static func percentFormat(_ range: (Double, Double)) -> (Double) -> String {
        let t = ticks(range.0, range.1)
        let d = t.count > 1 ? decimals(step: t[1] - t[0]) : 0
        return { String(format: "%.\(d)f%%", $0) }
    }

    public static func lines(title: String, xLabel: String, yLabel: String, series: [Series],
                             yFormat: ((Double) -> String)? = nil,
                             xFormat: @escaping (Double) -> String = { String(format: "%.0f", $0) }) -> String {
        let xs = series.flatMap { $0.points.map(\.x) }, ys = series.flatMap { $0.points.map(\.y) }
        // One point (e2e has one head) sits in the middle of a one-module-wide axis.
        let xRange = xs.min() == xs.max() ? ((xs.min() ?? 1) - 0.5, (xs.max() ?? 1) + 0.5)
            : (xs.min() ?? 0, max(xs.max() ?? 1, (xs.min() ?? 0) + 1))
        let yLow = ys.min() ?? 0, yHigh = ys.max() ?? 1
        let margin = max((yHigh - yLow) * 0.1, 0.5)
        let yRange = (yLow - margin, yHigh + margin)
        let yFormat = yFormat ?? percentFormat(yRange)
        return frame(title: title, xLabel: xLabel, yLabel: yLabel, xRange: xRange, yRange: yRange, integerX: true,
                     xFormat: xFormat, yFormat: yFormat, body: { sx, sy in
            var body = ""
            for s in series where !s.points.isEmpty {
                let path = s.points.map { "\(number(sx($0.x))),\(number(sy($0.y)))" }.joined(separator: " ")
                body += "<polyline points=\"\(path)\" fill=\"none\" stroke=\"\(s.color)\" stroke-width=\"2\"\(s.dashed ? " stroke-dasharray=\"6 4\"" : "")/>\n"
                for p in s.points {
                    body += "<circle cx=\"\(number(sx(p.x)))\" cy=\"\(number(sy(p.y)))\" r=\"3.5\" fill=\"\(s.color)\"><title>\(escape(s.name)): \(escape(yFormat(p.y)))</title></circle>\n"
                }
            }
            return body
        }, legend: series.map { ($0.name, $0.color, true) })
    }

    static let categoryColors: [MemoryCategory: String] = [
        .parameters: "#4e79a7", .gradients: "#f28e2b", .optimizerState: "#e15759", .savedActivations: "#76b7b2",
        .workspace: "#59a14f", .ioBuffers: "#edc948", .storeEngine: "#b07aa1",
    ]

    /// The ledger's live bytes over the run, stacked by category, against host time: a solid line
    /// where each module (phase) starts, labelled with its number, a dotted one where it streams its
    /// outputs; the peak marked (hover: the buffers live at it); the budget as a line, above a
    /// broken axis when it is far above the data.
    public static func memory(title: String, timeline: [LedgerEvent], budget: Int?, peakTensors: [LiveTensor] = []) -> String {
        let timed = !timeline.isEmpty && timeline.allSatisfy { $0.seconds != nil }
        let points = timeline.enumerated().map { (timed ? $0.element.seconds! : Double($0.offset), $0.element) }
        let allocations = points.filter { !$0.1.isMarker }
        let peakPoint = allocations.max { $0.1.total < $1.1.total }
        let peak = max(peakPoint?.1.total ?? 1, 1)
        // The budget is drawn on the data's scale when it is within 3x the peak; further above,
        // over a break in the axis (the data keep the lower 85% of the height).
        let budgetOnScale = budget.map { $0 <= 3 * peak } ?? true
        let dataTop = Double(max(peak, budgetOnScale ? (budget ?? 0) : 0)) * 1.08
        let unit: (Double, String) = dataTop >= 1_073_741_824 ? (1_073_741_824, "GiB") : dataTop >= 1_048_576 ? (1_048_576, "MiB") : (1024, "KiB")
        let broken = !budgetOnScale
        let top = broken ? dataTop / 0.85 : dataTop
        let categories = MemoryCategory.allCases.filter { c in timeline.contains { $0.live[c] > 0 } }
        let xMax = max(points.last?.0 ?? 1, 1e-9)
        // The caption names only the lines the plot has.
        let markers = timeline.filter(\.isMarker).map(\.event)
        let starts = markers.contains { $0.hasPrefix("module ") && !$0.contains("streams") }, streams = markers.contains { $0.contains("streams") }
        let xLabel = (timed ? "host time (s)" : "ledger events (in order)")
            + (starts ? "; solid line: a module starts (its number)" : markers.isEmpty ? "" : "; solid line: the resident phase starts")
            + (streams ? ", dotted: it streams its outputs" : "")
        return frame(title: title, xLabel: xLabel, yLabel: "live bytes (\(unit.1))",
                     xRange: (0, xMax), yRange: (0, top / unit.0), yTickMax: broken ? dataTop / unit.0 : nil,
                     xFormat: { String(format: timed ? "%g" : "%.0f", $0) }, yFormat: { String(format: "%g", $0) }, body: { sx, sy in
            var body = ""
            var lower = [Double](repeating: 0, count: allocations.count)
            for category in categories {
                let upper = zip(lower, allocations).map { $0 + Double($1.1.live[category]) / unit.0 }
                // Steps: a value holds until the next event changes it.
                var path = "M \(number(sx(allocations.first?.0 ?? 0))) \(number(sy(lower.first ?? 0)))"
                for (i, p) in allocations.enumerated() {
                    if i > 0 { path += " L \(number(sx(p.0))) \(number(sy(upper[i - 1])))" }
                    path += " L \(number(sx(p.0))) \(number(sy(upper[i])))"
                }
                for (i, p) in allocations.enumerated().reversed() {
                    path += " L \(number(sx(p.0))) \(number(sy(lower[i])))"
                    if i > 0 { path += " L \(number(sx(p.0))) \(number(sy(lower[i - 1])))" }
                }
                body += "<path d=\"\(path) Z\" fill=\"\(categoryColors[category]!)\" fill-opacity=\"0.85\" stroke=\"none\"><title>\(category.rawValue)</title></path>\n"
                lower = upper
            }
            // Phase boundaries.
            let plotTop = sy(top / unit.0)
            // Labels sit at the top of the data's scale (below the break, if there is one).
            let labelTop = broken ? sy(dataTop / unit.0) : plotTop
            for (x, event) in points where event.isMarker {
                let streams = event.event.contains("streams")
                body += "<line x1=\"\(number(sx(x)))\" y1=\"\(number(plotTop))\" x2=\"\(number(sx(x)))\" y2=\"\(number(sy(0)))\" stroke=\"#555\" stroke-width=\"1\"\(streams ? " stroke-dasharray=\"2 3\"" : "")><title>\(escape(event.event)) at \(escape(String(format: "%.2f s", x)))</title></line>\n"
                if !streams {
                    let label = event.event.hasPrefix("module ") ? String(event.event.dropFirst("module ".count)) : event.event
                    body += "<text x=\"\(number(sx(x) + 3))\" y=\"\(number(labelTop + 12))\" font-size=\"10\" fill=\"#333\">\(escape(label))</text>\n"
                }
            }
            // Where the budget line runs: on the data's scale, or above the break.
            let budgetY = budget.map { broken ? sy(top / unit.0 * 0.93) : sy(Double($0) / unit.0) }
            // The peak, with the buffers live at it.
            if let (x, event) = peakPoint {
                let module = points.last { $0.1.isMarker && $0.0 <= x && !$0.1.event.contains("streams") }?.1.event
                let shown = peakTensors.prefix(12).map { "\($0.tag)\($0.count > 1 ? " x\($0.count)" : "") (\($0.category.rawValue)) \(formatBytes($0.bytes))" }
                let more = peakTensors.count > 12 ? ["and \(peakTensors.count - 12) more"] : []
                let tip = (["peak \(formatBytes(event.total))\(module.map { " in \($0)" } ?? ""): \(event.live.description)"] + shown + more)
                    .joined(separator: "\n")
                let cx = sx(x), cy = sy(Double(event.total) / unit.0)
                body += "<circle cx=\"\(number(cx))\" cy=\"\(number(cy))\" r=\"5\" fill=\"none\" stroke=\"#d62728\" stroke-width=\"2\"><title>\(escape(tip))</title></circle>\n"
                let anchor = cx > left + (width - left - right) * 0.6 ? "end" : "start"
                // Above the circle, unless that is where the budget line runs: then below it.
                var labelY = max(cy - 8, labelTop + 26)
                if let budgetY, abs(labelY - 4 - budgetY) < 12 { labelY = cy + 20 }
                body += "<text x=\"\(number(cx + (anchor == "end" ? -10 : 10)))\" y=\"\(number(labelY))\" text-anchor=\"\(anchor)\" font-weight=\"bold\">peak \(escape(formatBytes(event.total)))\(module.map { " (\(escape($0)))" } ?? "")</text>\n"
            }
            if let budget {
                let y = budgetY!
                let x0 = sx(0), x1 = sx(xMax)
                if broken {
                    // The break: two zigzags across the axis between the data and the budget.
                    let yb = sy(top / unit.0 * 0.88)
                    for x in [x0, x1] {
                        body += "<path d=\"M \(number(x - 6)) \(number(yb + 3)) L \(number(x + 6)) \(number(yb - 3)) M \(number(x - 6)) \(number(yb + 8)) L \(number(x + 6)) \(number(yb + 2))\" stroke=\"#333\" stroke-width=\"1.5\"/>\n"
                    }
                    body += "<rect x=\"\(number(x0 + 1))\" y=\"\(number(yb - 2))\" width=\"\(number(x1 - x0 - 2))\" height=\"6\" fill=\"white\"/>\n"
                }
                body += "<line x1=\"\(number(x0))\" y1=\"\(number(y))\" x2=\"\(number(x1))\" y2=\"\(number(y))\" stroke=\"#d62728\" stroke-width=\"2\" stroke-dasharray=\"8 4\"/>\n"
                let note = broken ? " (axis broken: \(String(format: "%.1f", Double(budget) / Double(peak)))x the peak)" : ""
                body += "<text x=\"\(number(x1 - 6))\" y=\"\(number(y - 6))\" text-anchor=\"end\" fill=\"#d62728\">budget \(escape(formatBytes(budget)))\(note)</text>\n"
            }
            return body
        }, legend: categories.map { ($0.rawValue, categoryColors[$0]!, false) } + (budget != nil ? [("budget", "#d62728", true)] : []))
    }
}
