import BlockwiseDevice
import BlockwiseKernels
import BlockwiseTraining

/// The ways to train under a budget that `plan --techniques` and `compare --techniques` put side by
/// side: end-to-end (plain, recomputing, paging) and the block-wise procedures.
public enum Technique: String, CaseIterable, Codable, Sendable {
    case e2e
    case e2eRecompute = "e2e-recompute"
    /// End-to-end with activations and weights paged to the store (POET).
    case e2ePaged = "e2e-paged"
    /// End-to-end with activations only paged.
    case e2ePagedActivations = "e2e-paged-activations"
    case sequential
    case parallel

    /// The configuration that trains `base` with this technique.
    public func configuration(_ base: TrainingConfiguration) -> TrainingConfiguration {
        var c = base
        c.endToEndMemory = nil
        // From a base whose procedure keeps every module resident (its arena is slots), a
        // block-wise technique takes its own procedure's default layout, as train would.
        let fromResident = base.procedure.keepsAllModulesResident
        switch self {
        case .e2e: c.procedure = .e2e
        case .e2eRecompute: c.procedure = .e2e; c.endToEndMemory = .recompute
        case .e2ePaged: c.procedure = .e2e; c.endToEndMemory = .pageActivationsAndWeights
        case .e2ePagedActivations: c.procedure = .e2e; c.endToEndMemory = .pageActivations
        case .sequential: c.procedure = .sequential
        case .parallel: c.procedure = .parallel
        }
        // A packed arena is a block-wise module phase's; every module resident holds slots.
        if c.procedure.keepsAllModulesResident { c.setArenaLayout(.slots); c.placedWorkspace = nil }
        else if fromResident { c.setArenaLayout(.default(for: c.procedure)) }
        return c
    }

    /// Whether the transport term applies (block-wise: each module's own loss); the end-to-end
    /// techniques train one loss, so VanGL and TRGL are the same run.
    public var hasLocalLosses: Bool { self == .sequential || self == .parallel }

    /// Parses "e2e,e2e-recompute,sequential" (refused, naming the flag and the accepted names, and
    /// the end-to-end techniques with fewer than 2 modules).
    public static func parse(_ text: String, option: String = "--techniques", modules: Int) throws -> [Technique] {
        let result = try parse(text, option: option)
        if modules < 2, let one = result.first(where: { $0 != .e2e && !$0.hasLocalLosses }) {
            throw TechniqueError(message: "\(option): \(one.rawValue) needs at least 2 modules (--modules \(modules)): with one module there is nothing to recompute or page")
        }
        return result
    }

    public static func parse(_ text: String, option: String = "--techniques") throws -> [Technique] {
        let names = text.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        if names.contains("") && names.count > 1 {
            throw TechniqueError(message: "\(option): an empty name in '\(text)'; list techniques separated by commas: \(allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard !names.isEmpty, names != [""] else { throw TechniqueError(message: "\(option) needs at least one technique: \(allCases.map(\.rawValue).joined(separator: ", "))") }
        var result: [Technique] = []
        for name in names {
            guard let technique = Technique(rawValue: name) else {
                throw TechniqueError(message: "\(option): unknown technique '\(name)'; accepted: \(allCases.map(\.rawValue).joined(separator: ", "))")
            }
            if !result.contains(technique) { result.append(technique) }
        }
        return result
    }
}

public struct TechniqueError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// One technique's plan: its peak by category (SQLite's bound included), the smallest budget at
/// which it fits (block-wise: with `--fit microbatch` at the smallest micro-batch; the end-to-end
/// techniques have no micro-batches), the emulated time and energy, and what SQLite writes.
public struct TechniquePlan: Codable, Sendable {
    public var technique: Technique
    public var label: String
    public var peak: MemoryBreakdown
    public var peakBytes: Int { peak.total }
    public var smallestBudget: Int
    public var fits: Bool?
    public var cost: DeviceCost?
    /// Bytes SQLite is planned to write to the device's storage (features or pages).
    public var storageBytesWritten: Int
    public var flops: Int

    /// - residence: where the block-wise techniques keep features (the store's page cache also
    ///   bounds SQLite's memory when an end-to-end technique pages).
    /// - fit: the block-wise techniques' policy, as `train` would use it (the smallest budget assumes
    ///   `--fit microbatch` whatever it is).
    public init(_ technique: Technique, label: String? = nil, base: TrainingConfiguration, residence: FeatureResidence, cacheBytes: Int,
                budget: Int?, profile: DeviceProfile?, trainCount: Int, testCount: Int, encoding: FeatureEncoding, fit: FitPolicy = .error) {
        self.technique = technique
        self.label = label ?? technique.rawValue
        let c = technique.configuration(base)
        if c.procedure.keepsAllModulesResident {
            let resident = ResidentPlan(configuration: c, trainCount: trainCount, testCount: testCount, budget: budget, profile: profile,
                                        cacheBytes: cacheBytes)
            peak = resident.peak
            smallestBudget = resident.peakBytes
            cost = resident.cost
            storageBytesWritten = resident.paging.storeFileBytesWritten
            flops = resident.flops
        } else {
            let report = PlanReport(configuration: c, trainCount: trainCount, testCount: testCount, residence: residence, budget: budget,
                                    profile: profile, encoding: encoding, fit: fit)
            let top = report.modules.max { $0.plan.peakBytes < $1.plan.peakBytes }
            peak = top?.plan.breakdown ?? MemoryBreakdown()
            peak[.storeEngine] = top?.plan.storeEngineBound ?? 0
            // The smallest micro-batch that still learns: every module at batch 2.
            smallestBudget = (0..<c.model.modules).map {
                RunPlanner.modulePlan(c, module: $0, batch: min(RunPlanner.minimumBatch, c.batchSize), residence: residence,
                                      trainCount: trainCount, testCount: testCount).peakBytes
            }.max() ?? 0
            cost = report.cost
            storageBytesWritten = report.modules.reduce(0) { $0 + $1.plan.work.storeFileBytesWritten + (c.lapCount - 1) * $1.plan.work.storeFileBytesRewritten }
            flops = report.modules.reduce(0) { $0 + c.lapCount * $1.plan.work.flops }
        }
        fits = budget.map { [peak] in peak.total <= $0 }
    }

    /// The table `plan --techniques` prints (and `--csv` writes): one row per technique.
    public static func table(_ plans: [TechniquePlan]) -> Table {
        let time = DurationColumn(plans.compactMap { $0.cost?.seconds }), energy = EnergyColumn(plans.compactMap { $0.cost?.energyJoules })
        var table = Table([.init("technique", width: 24, csv: "technique"), .init("peak", width: 11, csv: "peak_bytes"),
                           .init("largest", width: 18, csv: "largest_category"), .init("smallest budget", width: 17, csv: "smallest_budget_bytes"),
                           .init("fits", width: 6, csv: "fits"), .init("device time", width: 16, csv: "device_seconds"),
                           .init("energy", width: 10, csv: "device_joules"), .init("storage written", width: 0, csv: "storage_bytes_written")])
        for plan in plans {
            let largest = plan.peak.bytes.max { $0.value < $1.value }?.key.rawValue ?? "-"
            table.append([.init(plan.label), .bytes(plan.peakBytes), .init(largest), .bytes(plan.smallestBudget),
                          .init(plan.fits.map { $0 ? "yes" : "NO" } ?? "-"),
                          plan.cost.map { .init(time.format($0.seconds), value: "\($0.seconds)") } ?? .init("-", value: ""),
                          plan.cost.map { .init(energy.format($0.energyJoules), value: "\($0.energyJoules)") } ?? .init("-", value: ""),
                          .bytes(plan.storageBytesWritten)])
        }
        return table
    }
}
