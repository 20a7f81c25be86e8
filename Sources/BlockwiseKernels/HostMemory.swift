import Foundation

/// The host process's own memory, for comparison with the ledger's emulated figures.
public enum HostMemory {
    /// Peak resident set size (VmHWM in /proc/self/status), bytes; nil where unavailable.
    public static func peakResidentBytes() -> Int? { field("VmHWM:") }

    static func field(_ name: String) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix(name) {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            if parts.count >= 2, let kib = Int(parts[1]) { return kib * 1024 }
        }
        return nil
    }
}
