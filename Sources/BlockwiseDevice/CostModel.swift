import BlockwiseKernels

/// The emulated device's time and energy for some work.
///
/// - Compute, per operation class (3x3 convolutions, GEMM, element-wise and normalisation
///   passes): the class's FLOPs at its sustained rate or its bytes at the memory bandwidth,
///   whichever takes longer (a roofline per class, over the class's summed work).
/// - Storage: bytes read and written at the storage bandwidths plus a latency per operation.
///   Where the profile's storage overlaps computation (DMA), only the storage time beyond the
///   compute time is waited for; otherwise all of it is.
/// - Energy: compute time at the active power plus the storage wait at the idle power (schema
///   2; version-1 profiles count the wait at the active power, as version 1 did).
public struct DeviceCost: Codable, Equatable, Sendable {
    public var convolutionSeconds: Double
    public var gemmSeconds: Double
    public var elementwiseSeconds: Double
    /// The three classes together.
    public var computeSeconds: Double
    /// All storage transfers and operations.
    public var storageSeconds: Double
    /// The part of `storageSeconds` not hidden behind computation.
    public var storageWaitSeconds: Double
    /// Compute plus the storage wait.
    public var seconds: Double
    public var energyJoules: Double
    /// The bytes written to the device's storage this cost counts (what wears the medium).
    public var bytesWritten: Int

    public init(profile: DeviceProfile, work: OperationWork, bytesRead: Int, bytesWritten: Int, operations: Int) {
        let rates = profile.rates
        func roofline(_ flops: Int, _ bytes: Int, _ gflops: Double) -> Double {
            max(Double(flops) / (gflops * 1e9), rates.memoryGBps.map { Double(bytes) / ($0 * 1e9) } ?? 0)
        }
        convolutionSeconds = roofline(work.convolutionFlops, work.convolutionBytes, rates.convolutionGflops)
        gemmSeconds = roofline(work.gemmFlops, work.gemmBytes, rates.gemmGflops)
        elementwiseSeconds = roofline(work.elementwiseFlops, work.elementwiseBytes, rates.elementwiseGflops)
        computeSeconds = convolutionSeconds + gemmSeconds + elementwiseSeconds
        storageSeconds = Double(bytesRead) / (profile.storage.readMBps * 1e6)
            + Double(bytesWritten) / (profile.storage.writeMBps * 1e6)
            + Double(operations) * profile.storage.latencyMs / 1e3
        storageWaitSeconds = profile.storage.overlapsCompute == true ? max(0, storageSeconds - computeSeconds) : storageSeconds
        seconds = computeSeconds + storageWaitSeconds
        energyJoules = computeSeconds * profile.power.activeW + storageWaitSeconds * profile.storageWaitW
        self.bytesWritten = bytesWritten
    }

    /// For work counted before the classes were (stores of earlier versions): all of it at the
    /// 3x3 convolution rate, no bytes.
    public init(profile: DeviceProfile, flops: Int, bytesRead: Int, bytesWritten: Int, operations: Int) {
        self.init(profile: profile, work: OperationWork(convolutionFlops: flops), bytesRead: bytesRead, bytesWritten: bytesWritten,
                  operations: operations)
    }

    /// The cost of both pieces of work, with the overlap decided on the whole.
    public static func total(_ costs: [DeviceCost], profile: DeviceProfile) -> DeviceCost {
        var total = costs.first ?? DeviceCost(profile: profile, work: .zero, bytesRead: 0, bytesWritten: 0, operations: 0)
        guard costs.count > 1 else { return total }
        total.convolutionSeconds = costs.reduce(0) { $0 + $1.convolutionSeconds }
        total.gemmSeconds = costs.reduce(0) { $0 + $1.gemmSeconds }
        total.elementwiseSeconds = costs.reduce(0) { $0 + $1.elementwiseSeconds }
        total.computeSeconds = costs.reduce(0) { $0 + $1.computeSeconds }
        total.storageSeconds = costs.reduce(0) { $0 + $1.storageSeconds }
        total.storageWaitSeconds = costs.reduce(0) { $0 + $1.storageWaitSeconds }
        total.seconds = costs.reduce(0) { $0 + $1.seconds }
        total.energyJoules = costs.reduce(0) { $0 + $1.energyJoules }
        total.bytesWritten = costs.reduce(0) { $0 + $1.bytesWritten }
        return total
    }
}

extension DeviceCost {
    /// "16 min 35 s (3x3 conv 15 min 2 s, GEMM 1 s, element-wise 1 min 32 s; storage 13 min 30 s, overlapped), 2985.7 J".
    public var breakdownText: String {
        let storage = storageWaitSeconds + 1e-9 >= storageSeconds ? "storage \(formatDuration(storageSeconds))"
            : storageWaitSeconds <= 0 ? "storage \(formatDuration(storageSeconds)), hidden behind compute"
            : "storage \(formatDuration(storageSeconds)), \(formatDuration(storageWaitSeconds)) of it waited for"
        return "\(formatDuration(seconds)) (3x3 conv \(formatDuration(convolutionSeconds)), GEMM \(formatDuration(gemmSeconds)), "
            + "element-wise \(formatDuration(elementwiseSeconds)); \(storage)), \(formatEnergy(energyJoules))"
    }

    /// One row per cost (modules), the device time by operation class: what `plan` prints and the
    /// report's modules.csv carries.
    public static func classTable(_ rows: [(label: String, cost: DeviceCost)]) -> Table {
        let column = DurationColumn(rows.flatMap { [$0.cost.seconds, $0.cost.storageSeconds] })
        var table = Table([.init("module", width: 8, csv: "module"), .init("3x3 conv", width: 14, csv: "convolution_seconds"),
                           .init("GEMM", width: 12, csv: "gemm_seconds"), .init("element-wise", width: 14, csv: "elementwise_seconds"),
                           .init("storage", width: 14, csv: "storage_seconds"), .init("waited", width: 14, csv: "storage_wait_seconds"),
                           .init("total", width: 14, csv: "device_seconds"), .init("energy", width: 0, csv: "device_joules")])
        let energy = EnergyColumn(rows.map(\.cost.energyJoules))
        for (label, cost) in rows {
            table.append([.init(label)] + [cost.convolutionSeconds, cost.gemmSeconds, cost.elementwiseSeconds, cost.storageSeconds,
                                           cost.storageWaitSeconds, cost.seconds].map { .init(column.format($0), value: "\($0)") }
                         + [.init(energy.format(cost.energyJoules), value: "\(cost.energyJoules)")])
        }
        return table
    }
}

/// What a run does to the device's storage: the share of its capacity the store takes and the
/// share of its write endurance the run's writes use. Warnings, not failures, past the capacity
/// or past 1% of the endurance.
public struct StorageWear: Codable, Equatable, Sendable {
    /// The store's size over the medium's capacity (nil: the profile gives no capacity).
    public var capacityShare: Double?
    /// Bytes written over the medium's write endurance (nil: the profile gives none).
    public var enduranceShare: Double?
    public var warnings: [String]

    public static let enduranceWarningShare = 0.01

    public init(profile: DeviceProfile, storeBytes: Int, bytesWritten: Int) {
        capacityShare = profile.storage.capacityBytes.map { Double(storeBytes) / Double($0) }
        enduranceShare = profile.storage.endurance.map { Double(bytesWritten) / Double($0) }
        warnings = []
        if let capacityShare, capacityShare > 1, let capacity = profile.storage.capacityBytes {
            warnings.append("the store (\(formatBytes(storeBytes))) is larger than \(profile.name)'s \(profile.storage.medium) "
                            + "(\(formatBytes(capacity))): use --feature-dtype fp16, fewer samples, or a larger medium")
        }
        if let enduranceShare, enduranceShare > StorageWear.enduranceWarningShare, let endurance = profile.storage.endurance {
            warnings.append(String(format: "the run writes %@, %.1f%% of the write endurance of %@'s %@ (%@)",
                                   formatBytes(bytesWritten), 100 * enduranceShare, profile.name, profile.storage.medium, formatBytes(endurance)))
        }
    }

    /// "0.41% of capacity, 0.0012% of endurance" (or what the profile cannot say).
    public var summary: String {
        func percent(_ share: Double?) -> String { share.map { $0 >= 0.001 ? String(format: "%.2f%%", 100 * $0) : String(format: "%.5f%%", 100 * $0) } ?? "unknown" }
        return "storage: \(percent(capacityShare)) of capacity, \(percent(enduranceShare)) of write endurance"
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
