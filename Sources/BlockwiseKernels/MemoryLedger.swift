import Foundation

/// What a counted buffer is for. The ledger keeps live bytes per category so that a
/// peak can be explained ("most of it was saved activations").
public enum MemoryCategory: String, CaseIterable, Codable, Sendable, Comparable {
    case parameters
    case gradients
    case optimizerState
    case savedActivations
    case workspace
    case ioBuffers
    case storeEngine

    public static func < (lhs: MemoryCategory, rhs: MemoryCategory) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }
}

/// Bytes per category; a value type used for live counts, peaks and plans.
public struct MemoryBreakdown: Equatable, Codable, Sendable, CustomStringConvertible {
    public var bytes: [MemoryCategory: Int] = [:]

    public init(_ bytes: [MemoryCategory: Int] = [:]) { self.bytes = bytes }

    /// Encoded as a JSON object {"parameters": 1234, ...}.
    public init(from decoder: Decoder) throws {
        let object = try decoder.singleValueContainer().decode([String: Int].self)
        for (key, value) in object { if let category = MemoryCategory(rawValue: key) { bytes[category] = value } }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(Dictionary(uniqueKeysWithValues: bytes.map { ($0.key.rawValue, $0.value) }))
    }

    public subscript(category: MemoryCategory) -> Int {
        get { bytes[category] ?? 0 }
        set { bytes[category] = newValue == 0 ? nil : newValue }
    }

    public var total: Int { bytes.values.reduce(0, +) }

    /// The two breakdowns' bytes added category by category.
    public func adding(_ other: MemoryBreakdown) -> MemoryBreakdown {
        var sum = self
        for (category, count) in other.bytes { sum[category] += count }
        return sum
    }

    /// The category holding the most bytes (ties broken by declaration order).
    public var largest: MemoryCategory? {
        MemoryCategory.allCases.filter { self[$0] > 0 }.max { self[$0] < self[$1] }
    }

    public var description: String {
        MemoryCategory.allCases.filter { self[$0] > 0 }
            .map { "\($0.rawValue) \(formatBytes(self[$0]))" }.joined(separator: ", ")
    }
}

/// A point of the ledger's timeline: after `event`, `total` bytes were live.
public struct LedgerEvent: Codable, Sendable, Equatable {
    public var sequence: Int
    public var event: String
    public var category: MemoryCategory
    public var delta: Int
    public var total: Int
    /// Live bytes per category after the event.
    public var live: MemoryBreakdown
    /// Host seconds since the ledger was made (nil in reports written before it was recorded).
    public var seconds: Double?
    /// A phase boundary (``MemoryLedger/mark(_:)``), not an allocation (nil: false).
    public var marker: Bool?
    public var isMarker: Bool { marker == true }
}

/// A buffer live at a moment of the ledger (its tag, as allocated, and its bytes; buffers that
/// share a tag are summed, with their count).
public struct LiveTensor: Codable, Sendable, Equatable {
    public var tag: String
    public var category: MemoryCategory
    public var bytes: Int
    public var count: Int
}

/// Thrown when an allocation would take the live bytes past the budget.
/// It is raised *before* anything is allocated.
public struct BudgetExceededError: Error, CustomStringConvertible, Sendable {
    public var category: MemoryCategory
    public var tag: String
    public var requested: Int
    public var available: Int
    public var budget: Int
    public var live: MemoryBreakdown

    public var description: String {
        "memory budget exceeded: \(category.rawValue) buffer '\(tag)' needs \(formatBytes(requested)) "
            + "but only \(formatBytes(max(available, 0))) of the \(formatBytes(budget)) budget are left "
            + "(live: \(live.total == 0 ? "nothing" : live.description)). "
            + "Raise --budget, lower --batch-size, or use --fit microbatch."
    }
}

/// Counts every byte the trainer holds, by category; keeps the peak (with its breakdown at
/// that moment) and a timeline; and enforces an optional budget.
///
/// Every ``Tensor`` is created through a ledger and returns its bytes when it is freed,
/// so `live` is exactly the sum of the buffers alive now. Not thread-safe: one ledger per
/// training run, used from the thread that allocates.
public final class MemoryLedger {
    /// The most bytes that may be live at once; `nil` means unlimited.
    public var budget: Int?
    public private(set) var live = MemoryBreakdown()
    public private(set) var peak: Int = 0
    /// Live bytes per category at the moment the peak was reached.
    public private(set) var peakBreakdown = MemoryBreakdown()
    /// The largest live total since the ledger was made (never reset) and its breakdown.
    public private(set) var highWater: Int = 0
    public private(set) var highWaterBreakdown = MemoryBreakdown()
    public private(set) var timeline: [LedgerEvent] = []
    /// The buffers live now, by category and tag (bytes, count).
    private var liveTags: [MemoryCategory: [String: (bytes: Int, count: Int)]] = [:]
    /// The buffers live at the current window's peak and at the high-water mark.
    public private(set) var peakTensors: [LiveTensor] = []
    public private(set) var highWaterTensors: [LiveTensor] = []
    private let start = DispatchTime.now().uptimeNanoseconds
    /// Whether allocations and frees are appended to `timeline`.
    public var recordsTimeline: Bool
    /// The largest number of timeline events kept; past it, every other event is dropped
    /// (the shape of the curve and the peak survive; see `compactTimeline`).
    public var timelineCapacity: Int = 20_000
    private var sequence = 0

    public init(budget: Int? = nil, recordsTimeline: Bool = true) {
        self.budget = budget
        self.recordsTimeline = recordsTimeline
    }

    public var liveBytes: Int { live.total }

    /// Bytes still available under the budget (Int.max when unlimited).
    public var available: Int { budget.map { $0 - live.total } ?? Int.max }

    /// Counts `bytes` as live in `category`, or throws if that would exceed the budget.
    public func reserve(_ bytes: Int, category: MemoryCategory, tag: String) throws {
        try reserve(bytes, category: category, tag: tag, external: false)
    }

    /// `external`: the category is one figure under `tag` (``setExternal``), not a buffer more.
    private func reserve(_ bytes: Int, category: MemoryCategory, tag: String, external: Bool) throws {
        precondition(bytes >= 0, "negative allocation")
        if let budget, live.total + bytes > budget {
            throw BudgetExceededError(category: category, tag: tag, requested: bytes,
                                      available: budget - live.total, budget: budget, live: live)
        }
        live[category] += bytes
        if external {
            liveTags[category, default: [:]][tag] = (live[category], 1)
        } else {
            liveTags[category, default: [:]][tag, default: (0, 0)].bytes += bytes
            liveTags[category]![tag]!.count += 1
        }
        if live.total > peak {
            peak = live.total
            peakBreakdown = live
            peakTensors = liveTensors()
        }
        if live.total > highWater {
            highWater = live.total
            highWaterBreakdown = live
            highWaterTensors = peakTensors
        }
        record(tag, category, bytes)
    }

    /// Returns `bytes` of `category` (a freed buffer).
    public func release(_ bytes: Int, category: MemoryCategory, tag: String) {
        precondition(live[category] >= bytes, "ledger underflow in \(category.rawValue) for \(tag)")
        live[category] -= bytes
        if let held = liveTags[category]?[tag] {
            liveTags[category]![tag] = held.bytes <= bytes ? nil : (held.bytes - bytes, max(held.count - 1, 1))
        }
        record("free " + tag, category, -bytes)
    }

    /// Sets the live bytes of a category that the ledger does not allocate itself (the
    /// SQLite engine's own memory), checking the budget like an allocation.
    public func setExternal(_ bytes: Int, category: MemoryCategory, tag: String) throws {
        let delta = bytes - live[category]
        if delta > 0 { try reserve(delta, category: category, tag: tag, external: true) }
        else if delta < 0 {
            release(-delta, category: category, tag: tag)
            liveTags[category, default: [:]][tag] = bytes > 0 ? (bytes, 1) : nil
        }
    }

    /// Starts a new peak measurement window (the timeline is kept).
    public func resetPeak() {
        peak = live.total
        peakBreakdown = live
        peakTensors = liveTensors()
    }

    /// The buffers live now, the largest first. An external category (``setExternal``) is one
    /// entry under its tag.
    public func liveTensors() -> [LiveTensor] {
        liveTags.flatMap { category, tags in
            tags.map { LiveTensor(tag: $0.key, category: category, bytes: $0.value.bytes, count: $0.value.count) }
        }.sorted { ($0.bytes, $1.tag) > ($1.bytes, $0.tag) }
    }

    /// The number of events recorded so far (a timeline position that compaction does not move).
    public var eventCount: Int { sequence }
    /// Host seconds since the ledger was made (the clock of the timeline's `seconds`).
    public var elapsedSeconds: Double { Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }

    /// Keeps at most `limit` allocation events (each stretch is represented by its highest point)
    /// and every phase marker, in order.
    public static func downsample(_ events: [LedgerEvent], to limit: Int) -> [LedgerEvent] {
        guard events.count > limit else { return events }
        let stretch = (events.count + limit - 1) / limit
        return stride(from: 0, to: events.count, by: stretch).flatMap { start -> [LedgerEvent] in
            let slice = events[start..<min(start + stretch, events.count)]
            let highest = slice.filter { !$0.isMarker }.max { $0.total < $1.total }
            return slice.filter { $0.isMarker || $0.sequence == highest?.sequence }
        }
    }

    /// Adds a marker to the timeline (e.g. "module 3 start").
    public func mark(_ event: String) {
        record(event, .workspace, 0, marker: true)
    }

    private func record(_ event: String, _ category: MemoryCategory, _ delta: Int, marker: Bool = false) {
        sequence += 1
        guard recordsTimeline else { return }
        timeline.append(LedgerEvent(sequence: sequence, event: event, category: category, delta: delta, total: live.total, live: live,
                                    seconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9, marker: marker ? true : nil))
        if timeline.count > timelineCapacity { compactTimeline() }
    }

    /// Halves the timeline: each pair of allocation events is represented by its higher one
    /// (so the peak and the curve's envelope survive), and every marker and the last event are kept.
    /// It always halves, so recording stays O(1) per event however the allocations alternate (an
    /// earlier version kept every local maximum too, which a saw-tooth of per-batch allocations
    /// made nearly all events, so it compacted on almost every event: 60% of a recompute run).
    private func compactTimeline() {
        let last = timeline.last
        timeline = MemoryLedger.downsample(timeline, to: (timeline.count + 1) / 2)
        if let last, timeline.last?.sequence != last.sequence { timeline.append(last) }
    }
}

/// "1.5 MiB"-style rendering of a byte count (binary units).
public func formatBytes(_ bytes: Int) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(bytes)
    var unit = 0
    while abs(value) >= 1024, unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    if unit == 0 { return "\(bytes) B" }
    return String(format: value >= 100 ? "%.0f" : (value >= 10 ? "%.1f" : "%.2f"), value) + " " + units[unit]
}
