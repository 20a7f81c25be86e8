import BlockwiseKernels
import BlockwiseTraining
import Foundation

/// The arena of one module phase as TinyEngine draws it (issue 19): operations on x, bytes on y,
/// one rectangle per tensor (from its first to its last operation, at its placed offset), the
/// liveness lower bound and today's slots as lines. Plain SVG 1.1.
public enum ArenaChart {
    static let colors: [MemoryCategory: String] = [.savedActivations: "#4e79a7", .workspace: "#f28e2b", .ioBuffers: "#59a14f"]

    /// The tag without its module prefix ("m0.").
    static func shortTag(_ tag: String) -> String {
        let parts = tag.split(separator: ".", maxSplits: 1)
        guard parts.count == 2, parts[0].first == "m", parts[0].dropFirst().allSatisfy(\.isNumber) else {
            return tag.replacingOccurrences(of: ".m\\d+\\.", with: ".", options: .regularExpression)
        }
        return String(parts[1])
    }

    public static func svg(title: String, lifetimes: PhaseLifetimes, placement: ArenaPlacement, slotArenaBytes: Int) -> String {
        let width = 1000.0, height = 620.0, left = 80.0, right = 90.0, top = 66.0, bottom = 190.0
        let plotW = width - left - right, plotH = height - top - bottom
        let ops = Double(max(lifetimes.operations.count, 1))
        let lowerBound = Double(lifetimes.peakOperation.bytes)
        let yMax = max(Double(placement.size), Double(slotArenaBytes), 1) * 1.04
        func sx(_ op: Double) -> Double { left + op / ops * plotW }
        func sy(_ bytes: Double) -> Double { top + plotH - bytes / yMax * plotH }
        func n(_ v: Double) -> String { String(format: "%.1f", v) }
        var svg = """
        <?xml version="1.0" encoding="UTF-8"?>
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="Helvetica, Arial, sans-serif" font-size="11">
        <rect x="0" y="0" width="\(Int(width))" height="\(Int(height))" fill="white"/>
        <text x="\(n(left))" y="22" font-size="15" font-weight="bold">\(SVGChart.escape(title))</text>
        <text x="\(n(left))" y="40" fill="#444">packed arena \(formatBytes(placement.size)), its lower bound \(formatBytes(Int(lowerBound))), the same tensors as slots \(formatBytes(slotArenaBytes)); not drawn: parameters, gradients, momentum, I/O \(formatBytes(lifetimes.resident)).</text>
        <text x="\(n(left))" y="55" fill="#444">Blue: saved activations, orange: workspace and gradients.</text>

        """
        // Ticks at round numbers of the unit the axis is read in (MiB, KiB or bytes).
        let unit: Double = yMax >= 1_048_576 ? 1_048_576 : yMax >= 1024 ? 1024 : 1
        for tick in SVGChart.ticks(0, yMax / unit, count: 6).map({ $0 * unit }) {
            svg += "<line x1=\"\(n(left))\" y1=\"\(n(sy(tick)))\" x2=\"\(n(left + plotW))\" y2=\"\(n(sy(tick)))\" stroke=\"#eeeeee\"/>\n"
            svg += "<text x=\"\(n(left - 6))\" y=\"\(n(sy(tick) + 4))\" text-anchor=\"end\">\(SVGChart.escape(formatBytes(Int(tick))))</text>\n"
        }
        for item in placement.placed where item.tensor.bytes > 0 {
            let t = item.tensor
            let x0 = sx(Double(t.first)), x1 = sx(Double(t.last + 1))
            let y0 = sy(Double(item.end)), y1 = sy(Double(item.offset))
            let color = colors[t.category] ?? "#999999"
            svg += "<rect x=\"\(n(x0 + 0.5))\" y=\"\(n(y0))\" width=\"\(n(max(x1 - x0 - 1, 0.5)))\" height=\"\(n(max(y1 - y0, 0.4)))\" fill=\"\(color)\" fill-opacity=\"0.55\" stroke=\"\(color)\" stroke-width=\"0.8\"><title>\(SVGChart.escape("\(t.tag): \(formatBytes(t.bytes)), operations \(t.first)...\(t.last), offset \(item.offset)"))</title></rect>\n"
            // The tag, cut to the rectangle's width (about 6 px a character at 11 px).
            let fits = Int((x1 - x0 - 8) / 6), tag = shortTag(t.tag)
            if y1 - y0 >= 13 && fits >= 6 {
                let label = tag.count <= fits ? tag : String(tag.prefix(fits - 1)) + "\u{2026}"
                svg += "<text x=\"\(n(x0 + 4))\" y=\"\(n((y0 + y1) / 2 + 4))\" fill=\"#111\">\(SVGChart.escape(label))</text>\n"
            }
        }
        for (value, label, dash) in [(lowerBound, "lower bound", "6,3"), (Double(slotArenaBytes), "today's slots", "2,3")] {
            svg += "<line x1=\"\(n(left))\" y1=\"\(n(sy(value)))\" x2=\"\(n(left + plotW))\" y2=\"\(n(sy(value)))\" stroke=\"#c00\" stroke-dasharray=\"\(dash)\"/>\n"
            svg += "<text x=\"\(n(left + plotW - 4))\" y=\"\(n(sy(value) - 4))\" text-anchor=\"end\" fill=\"#c00\">\(label) \(formatBytes(Int(value)))</text>\n"
        }
        svg += "<line x1=\"\(n(left))\" y1=\"\(n(top + plotH))\" x2=\"\(n(left + plotW))\" y2=\"\(n(top + plotH))\" stroke=\"#333\"/>\n"
        for (i, name) in lifetimes.operations.enumerated() {
            let x = sx(Double(i) + 0.5), y = top + plotH + 10
            svg += "<text x=\"\(n(x))\" y=\"\(n(y))\" transform=\"rotate(50 \(n(x)) \(n(y)))\" fill=\"#333\">\(SVGChart.escape(name))</text>\n"
        }
        svg += "<text x=\"14\" y=\"\(n(top + plotH / 2))\" transform=\"rotate(-90 14 \(n(top + plotH / 2)))\" text-anchor=\"middle\">arena bytes (offset)</text>\n"
        svg += "</svg>\n"
        return svg
    }
}
