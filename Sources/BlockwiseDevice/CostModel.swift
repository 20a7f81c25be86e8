/// The emulated device's time and energy for some work: compute at the profile's sustained
/// rate, storage bytes at its bandwidths plus a latency per operation, energy = time x active power.
public struct DeviceCost: Codable, Equatable, Sendable {
    public var computeSeconds: Double
    public var storageSeconds: Double
    public var energyJoules: Double
    public var seconds: Double { computeSeconds + storageSeconds }

    public init(profile: DeviceProfile, flops: Int, bytesRead: Int, bytesWritten: Int, operations: Int) {
        computeSeconds = Double(flops) / (profile.computeGflops * 1e9)
        storageSeconds = Double(bytesRead) / (profile.storage.readMBps * 1e6)
            + Double(bytesWritten) / (profile.storage.writeMBps * 1e6)
            + Double(operations) * profile.storage.latencyMs / 1e3
        energyJoules = (computeSeconds + storageSeconds) * profile.power.activeW
    }
}

/// "1.2 s", "3 min 20 s", "2.5 h".
public func formatDuration(_ seconds: Double) -> String {
    if seconds < 1 { return String(format: "%.0f ms", seconds * 1000) }
    if seconds < 120 { return String(format: "%.1f s", seconds) }
    if seconds < 7200 {
        // Rounded to whole seconds first: 4659.7 s is "77 min 40 s" and 4679.6 s "78 min 0 s", never "77 min 60 s".
        let total = seconds.rounded()
        let minutes = (total / 60).rounded(.down)
        return String(format: "%.0f min %.0f s", minutes, total - 60 * minutes)
    }
    if seconds < 172_800 { return String(format: "%.1f h", seconds / 3600) }
    return String(format: "%.1f days", seconds / 86400)
}

/// "12 J", "3.4 kJ", "1.2 Wh".
public func formatEnergy(_ joules: Double) -> String {
    if joules < 1 { return String(format: "%.0f mJ", joules * 1000) }
    if joules < 3600 { return String(format: "%.1f J", joules) }
    return String(format: "%.2f Wh", joules / 3600)
}

import Foundation

/// One unit for a whole table column of durations, chosen by its largest value (so a column
/// never mixes "16 min 3 s" with "2.8 h").
public struct DurationColumn: Sendable {
    enum Unit { case milliseconds, seconds, minutes, hours, days }
    let unit: Unit
    public init(_ values: [Double]) {
        let largest = values.max() ?? 0
        unit = largest < 1 ? .milliseconds : largest < 120 ? .seconds : largest < 7200 ? .minutes : largest < 172_800 ? .hours : .days
    }
    public func format(_ seconds: Double) -> String {
        switch unit {
        case .milliseconds: return String(format: "%.0f ms", seconds * 1000)
        case .seconds: return String(format: "%.1f s", seconds)
        case .minutes:
            let total = seconds.rounded()
            let minutes = (total / 60).rounded(.down)
            return String(format: "%.0f min %.0f s", minutes, total - 60 * minutes)
        case .hours:
            // Hours and minutes, so that a short row in a column of hours keeps its figure ("0 h 26 min").
            let minutes = (seconds / 60).rounded()
            let hours = (minutes / 60).rounded(.down)
            return String(format: "%.0f h %.0f min", hours, minutes - 60 * hours)
        case .days: return String(format: "%.1f days", seconds / 86400)
        }
    }
}

/// One unit for a whole table column of energies (mJ, J or Wh), chosen by its largest value.
public struct EnergyColumn: Sendable {
    enum Unit { case millijoules, joules, wattHours }
    let unit: Unit
    public init(_ values: [Double]) {
        let largest = values.max() ?? 0
        unit = largest < 1 ? .millijoules : largest < 3600 ? .joules : .wattHours
    }
    public func format(_ joules: Double) -> String {
        switch unit {
        case .millijoules: return String(format: "%.0f mJ", joules * 1000)
        case .joules: return String(format: "%.1f J", joules)
        case .wattHours: return String(format: "%.2f Wh", joules / 3600)
        }
    }
}
