import BlockwiseDevice
import BlockwiseTraining

/// A configuration value `blockwise plan --maximize` can search.
public enum PlanParameter: String, CaseIterable, Sendable {
    case width, modules
    case batchSize = "batch-size"

    /// The values the search may try (the ranges `TrainingConfiguration.problems()` accepts).
    public var range: ClosedRange<Int> {
        switch self {
        case .width: return 1...4096
        case .modules: return 1...256
        case .batchSize: return TrainingConfiguration.minimumBatchSize...TrainingConfiguration.maximumBatchSize
        }
    }

    public func value(in configuration: TrainingConfiguration) -> Int {
        switch self {
        case .width: return configuration.model.width
        case .modules: return configuration.model.modules
        case .batchSize: return configuration.batchSize
        }
    }

    public func setting(_ value: Int, in configuration: TrainingConfiguration) -> TrainingConfiguration {
        var changed = configuration
        switch self {
        case .width: changed.model.width = value
        case .modules: changed.model.modules = value
        case .batchSize: changed.batchSize = value
        }
        return changed
    }
}

/// "The largest model that fits": the largest value of one parameter whose plan fits.
public enum PlanSearch {
    /// The largest value of `parameter` in its range for which `fits` holds, everything else as in
    /// `configuration`; nil when even the smallest value does not fit. The peak grows with each
    /// parameter (more channels, more modules, more samples per batch never need less memory), so
    /// the search doubles from the smallest value, then bisects: O(log range) plans, no training.
    public static func largest(_ parameter: PlanParameter, configuration: TrainingConfiguration,
                               fits: (TrainingConfiguration) -> Bool) -> Int? {
        let range = parameter.range
        func ok(_ value: Int) -> Bool { fits(parameter.setting(value, in: configuration)) }
        guard ok(range.lowerBound) else { return nil }
        var good = range.lowerBound, bad: Int? = nil
        var probe = good
        while bad == nil {
            let next = min(probe * 2, range.upperBound)
            if next == probe { return probe }  // the whole range fits
            if ok(next) { good = next; probe = next } else { bad = next }
        }
        var high = bad!
        while high - good > 1 {
            let middle = good + (high - good) / 2
            if ok(middle) { good = middle } else { high = middle }
        }
        return good
    }
}
