import BlockwiseDevice
import BlockwiseKernels
import BlockwiseTraining

/// What to change when a run does not fit its budget even at the smallest batch that trains:
/// every option that would change the outcome, each tried alone, with the run's planned peak and
/// how far it is from the budget, and all of them together.
///
/// Every figure comes from ``RunPlanner/modulePlan`` at the smallest batch (the same plan `train`
/// resolves), taken over all modules: a run fits when its largest module does.
public struct FitAdvice: Sendable {
    /// One change of the command line and the run's planned peak with it.
    public struct Change: Sendable {
        /// The options as typed, e.g. `--store-cache 16KiB`.
        public var options: String
        /// The run's largest module peak with the change, at ``FitAdvice/batch``.
        public var peak: Int
        public var fits: Bool
    }

    /// The smallest batch that trains (batch norm needs two samples), at which everything is planned.
    public var batch: Int
    /// The batch the run asked for (the advice holds at `batch`; above it, with `--fit microbatch`).
    public var requestedBatch: Int
    public var fit: FitPolicy
    public var budget: Int
    /// The run's largest module peak as configured, at `batch`, and that module's plan.
    public var peak: Int
    public var worst: ModuleMemoryPlan
    /// Each option alone (the largest saving first), then `--budget`.
    public var changes: [Change]
    /// Every option of `changes` that lowers the peak, applied together (nil when there is at most one).
    public var together: Change?

    /// - Parameters:
    ///   - residence: where the features live, as the run would have them (its row buffer is
    ///     re-planned for each changed model).
    ///   - fit: the run's fit policy (the advice says how it holds at the requested batch).
    public init(configuration: TrainingConfiguration, residence: FeatureResidence, budget: Int,
                trainCount: Int, testCount: Int, fit: FitPolicy = .error) {
        self.fit = fit
        var base = configuration
        base.microBatches = [:]
        base.batchSize = min(RunPlanner.minimumBatch, configuration.batchSize)
        batch = base.batchSize
        requestedBatch = configuration.batchSize
        self.budget = budget

        /// A candidate: the configuration, the store's page cache and the encoding.
        struct Setting { var configuration: TrainingConfiguration; var cacheBytes: Int?; var encoding: FeatureEncoding }
        let given = residence
        func plans(_ s: Setting) -> [ModuleMemoryPlan] {
            var planned = given
            if let cache = s.cacheBytes { planned = .store(encoding: s.encoding, cacheBytes: cache) }
            return (0..<s.configuration.model.modules).map {
                RunPlanner.modulePlan(s.configuration, module: $0, batch: s.configuration.batchSize, residence: planned,
                                      trainCount: trainCount, testCount: testCount)
            }
        }
        func peakOf(_ s: Setting) -> Int { plans(s).map(\.peakBytes).max() ?? 0 }
        var cache: Int? = nil
        var encoding = FeatureEncoding.fp32
        if case .store(let stored, let bytes) = residence { cache = bytes; encoding = stored }
        let start = Setting(configuration: base, cacheBytes: cache, encoding: encoding)
        let startPlans = plans(start)
        worst = startPlans.max { $0.peakBytes < $1.peakBytes }!
        let basePeak = worst.peakBytes
        peak = basePeak

        /// The largest value in `range` for which `fits` holds (it holds for small values and not
        /// for large ones), or nil.
        func largest(_ range: ClosedRange<Int>, _ fits: (Int) -> Bool) -> Int? {
            guard fits(range.lowerBound) else { return nil }
            var low = range.lowerBound, high = range.upperBound
            if fits(high) { return high }
            while high - low > 1 {
                let middle = low + (high - low) / 2
                if fits(middle) { low = middle } else { high = middle }
            }
            return low
        }

        // Each option alone: (options, the changed setting).
        var candidates: [(String, (Setting) -> Setting)] = []
        if given == .memory {
            // In memory, both splits of two levels are in RAM: the store keeps them on storage.
            candidates.append(("--store-cache 16KiB (without --in-memory)", { var s = $0; s.cacheBytes = 16 * 1024; return s }))
        }
        if let cache {
            // The largest page cache that fits (whole KiB); if none does, 16 KiB (four pages: below
            // that the cache saves little more and SQLite slows down).
            let fitting = largest(1...max(1, cache / 1024)) { kib in
                var s = start; s.cacheBytes = kib * 1024; return peakOf(s) <= budget
            }.map { $0 * 1024 }
            let suggested = fitting ?? 16 * 1024
            if suggested < cache {
                candidates.append(("--store-cache \(suggested / 1024)KiB", { var s = $0; s.cacheBytes = min(s.cacheBytes ?? suggested, suggested); return s }))
            }
        }
        // The workspace bound: the largest that fits; if none does, the largest that saves all it can.
        let currentBound = base.workspaceBound ?? (1 << 30)
        func withBound(_ bound: Int) -> Setting { var s = start; s.configuration.workspaceBound = bound; return s }
        let smallestPeak = peakOf(withBound(1))
        if smallestPeak < basePeak {
            let bound = largest(1...currentBound) { peakOf(withBound($0)) <= budget }
                ?? largest(1...currentBound) { peakOf(withBound($0)) <= smallestPeak }!
            candidates.append(("--workspace \(bound)", { var s = $0; s.configuration.workspaceBound = min(s.configuration.workspaceBound ?? bound, bound); return s }))
        }
        if base.model.head == .oneCNN {
            candidates.append(("--head linear", { var s = $0; s.configuration.model.head = .linear; return s }))
        }
        if base.model.blocksPerModule > 1 {
            candidates.append(("--blocks 1", { var s = $0; s.configuration.model.blocksPerModule = 1; return s }))
        }
        if base.model.encoderDownsamplings < 4, base.model.inputHeight >> (base.model.encoderDownsamplings + 1) >= 4 {
            let n = base.model.encoderDownsamplings + 1
            candidates.append(("--encoder-downsamplings \(n)", { var s = $0; s.configuration.model.encoderDownsamplings = n; return s }))
        }
        if encoding != .fp32, cache != nil {
            candidates.append(("--feature-dtype fp32", { var s = $0; s.encoding = .fp32; return s }))
        }
        var alone: [(Change, (Setting) -> Setting)] = candidates.compactMap { option, change in
            let p = peakOf(change(start))
            return p < basePeak ? (Change(options: option, peak: p, fits: p <= budget), change) : nil
        }
        // The width: the largest that fits with the rest as given, else the saving at width 1.
        func withWidth(_ s: Setting, _ width: Int) -> Setting { var s = s; s.configuration.model.width = width; return s }
        if base.model.width > 1 {
            let width = largest(1...(base.model.width - 1)) { peakOf(withWidth(start, $0)) <= budget } ?? 1
            let p = peakOf(withWidth(start, width))
            if p < basePeak { alone.append((Change(options: "--width \(width)", peak: p, fits: p <= budget), { withWidth($0, width) })) }
        }
        alone.sort { $0.0.peak < $1.0.peak }
        changes = alone.map(\.0)
        changes.append(Change(options: "--budget \(FitAdvice.sizeOption(basePeak))", peak: basePeak, fits: true))

        // Together: every saving at its most (the page cache at 1 KiB, the other switches, and the
        // largest width that fits on top, or width 1), then, if that fits, each relaxed as far as
        // the budget allows: the largest page cache, no switch that is not needed, the largest width.
        struct Choice { var cacheKiB: Int?; var switches: [(String, (Setting) -> Setting)]; var width: Int? }
        func setting(_ c: Choice) -> Setting {
            var s = c.switches.reduce(start) { $1.1($0) }
            if let kib = c.cacheKiB { s.cacheBytes = kib * 1024 }
            if let w = c.width { s = withWidth(s, w) }
            return s
        }
        func fits(_ c: Choice) -> Bool { peakOf(setting(c)) <= budget }
        let switches = candidates.filter { !($0.0.hasPrefix("--store-cache") && cache != nil) && peakOf($0.1(start)) < basePeak }
        var choice = Choice(cacheKiB: cache.map { _ in 1 }, switches: switches, width: nil)
        if !fits(choice), base.model.width > 1 {
            let w = largest(1...base.model.width) { var c = choice; c.width = $0; return fits(c) } ?? 1
            if w < base.model.width { choice.width = w }
        }
        if fits(choice), let current = cache, current >= 16 * 1024 {
            // A page cache of 16 KiB (four pages) when that leaves a model that fits: below it SQLite
            // slows down for little saving.
            var roomier = choice
            roomier.cacheKiB = 16
            roomier.width = largest(1...base.model.width) { var c = roomier; c.width = $0; return fits(c) }
            if let w = roomier.width { roomier.width = w < base.model.width ? w : nil; choice = roomier }
        }
        if fits(choice) {
            for candidate in choice.switches.reversed() {
                var fewer = choice
                fewer.switches.removeAll { $0.0 == candidate.0 }
                if fits(fewer) { choice = fewer }
            }
            if let current = cache {
                choice.cacheKiB = largest(1...max(1, current / 1024)) { var c = choice; c.cacheKiB = $0; return fits(c) }
            }
            if let w = choice.width {
                choice.width = largest(w...base.model.width) { var c = choice; c.width = $0; return fits(c) }.flatMap { $0 < base.model.width ? $0 : nil }
            }
        }
        var options = choice.switches.map(\.0)
        if let kib = choice.cacheKiB, let current = cache, kib * 1024 < current { options.insert("--store-cache \(kib)KiB", at: 0) }
        if let w = choice.width { options.append("--width \(w)") }
        let combinedPeak = peakOf(setting(choice))
        together = options.count > 1 || (options.count == 1 && !changes.contains { $0.options == options[0] })
            ? Change(options: options.joined(separator: " "), peak: combinedPeak, fits: combinedPeak <= budget) : nil
    }

    /// A byte count as an option value that is at least `bytes` (whole KiB or MiB with one decimal).
    static func sizeOption(_ bytes: Int) -> String {
        if bytes >= 1 << 20 {
            let tenths = (bytes * 10 + (1 << 20) - 1) / (1 << 20)
            return tenths % 10 == 0 ? "\(tenths / 10)MiB" : "\(tenths / 10).\(tenths % 10)MiB"
        }
        return "\((bytes + 1023) / 1024)KiB"
    }

    /// The advice as printed by `plan` and in the error `train` stops with: the breakdown at the
    /// smallest batch, then one line per option.
    public var text: String {
        func outcome(_ c: Change) -> String {
            c.fits ? "fits (\(formatBytes(budget - c.peak)) to spare)" : "still \(formatBytes(c.peak - budget)) over"
        }
        var lines = ["at batch \(batch), the smallest that trains, module \(worst.module + 1) needs \(formatBytes(peak)) of the "
            + "\(formatBytes(budget)) budget (\(worst.breakdown.description)\(worst.storeEngineBound > 0 ? ", storeEngine up to \(formatBytes(worst.storeEngineBound))" : "")). "
            + "Each option alone, at batch \(batch)"
            + (requestedBatch > batch ? (fit == .microbatch ? " (--fit microbatch trains batch \(requestedBatch) in micro-batches of \(batch))"
                                                            : " (with --batch-size \(batch), or --fit microbatch to keep batch \(requestedBatch))") : "") + ":"]
        let width = max(24, changes.map(\.options.count).max()! + 2)
        for change in changes {
            let saved = peak - change.peak
            let result = change.options.hasPrefix("--budget") ? "fits (a budget of the peak itself)" : outcome(change)
            lines.append("  " + pad(change.options, width) + pad("peak \(formatBytes(change.peak))", 16)
                         + pad(saved > 0 ? "-\(formatBytes(saved))" : "", 12) + result)
        }
        if let together {
            lines.append("  together: " + together.options + " -> peak \(formatBytes(together.peak)): " + outcome(together))
        }
        return lines.joined(separator: "\n")
    }
}
