import BlockwiseKernels

/// An offline placement of a phase's tensors in one arena (issue 19): every tensor gets a byte
/// offset such that two tensors whose lifetimes meet never overlap; the arena's size is the
/// phase's arena peak.
///
/// The placer is greedy best-fit, as TensorFlow Lite Micro's planner: tensors in decreasing size
/// (ties: earlier first use), each put in the smallest gap between the tensors already placed
/// whose lifetimes meet its own that holds it, else above them all. Offsets are multiples of
/// ``alignment`` (a cache line).
public struct ArenaPlacement: Codable, Sendable, Equatable {
    public struct Placed: Codable, Sendable, Equatable {
        public var tensor: TensorLifetime
        public var offset: Int
        public var end: Int { offset + tensor.bytes }
    }

    public static let alignment = 64

    public var placed: [Placed]
    /// Bytes of the arena: the highest end of a placed tensor, rounded up to ``alignment``.
    public var size: Int

    public init(_ lifetimes: PhaseLifetimes) {
        let order = lifetimes.tensors.sorted {
            $0.bytes != $1.bytes ? $0.bytes > $1.bytes : ($0.first != $1.first ? $0.first < $1.first : $0.tag < $1.tag)
        }
        var placed: [Placed] = []
        for tensor in order {
            let size = ArenaPlacement.aligned(tensor.bytes)
            // The byte ranges taken by tensors live at the same time, in offset order.
            let taken = placed.filter { $0.tensor.meets(tensor) }.map { ($0.offset, ArenaPlacement.aligned($0.end)) }.sorted { $0.0 < $1.0 }
            var best: (offset: Int, gap: Int)? = nil
            var cursor = 0
            for (start, end) in taken {
                if start - cursor >= size, best == nil || start - cursor < best!.gap { best = (cursor, start - cursor) }
                cursor = max(cursor, end)
            }
            placed.append(Placed(tensor: tensor, offset: best?.offset ?? cursor))
        }
        self.placed = placed
        size = ArenaPlacement.aligned(placed.map(\.end).max() ?? 0)
    }

    static func aligned(_ bytes: Int) -> Int { (bytes + alignment - 1) / alignment * alignment }

    /// Pairs of tensors that overlap in memory while both are live (empty for a valid placement).
    public var conflicts: [(String, String)] {
        var result: [(String, String)] = []
        for i in placed.indices {
            for j in placed.indices where j > i {
                let a = placed[i], b = placed[j]
                if a.tensor.meets(b.tensor) && a.offset < b.end && b.offset < a.end && a.tensor.bytes > 0 && b.tensor.bytes > 0 {
                    result.append((a.tensor.tag, b.tensor.tag))
                }
            }
        }
        return result
    }

    /// The offset of `tag` (nil if it is not placed).
    public func offset(of tag: String) -> Int? { placed.first { $0.tensor.tag == tag }?.offset }
}

/// What `plan` prints of a phase's arena (issue 19): today's slots beside the packed arena and the
/// liveness lower bound, and what is live at the peak.
public struct ArenaSummary: Codable, Sendable, Equatable {
    public struct Entry: Codable, Sendable, Equatable {
        public var tag: String
        public var bytes: Int
    }

    public var phase: ModulePhase.Kind
    /// The phase's bytes as the runtime allocates them today: every slot for the whole phase.
    public var slotBytes: Int
    /// Resident bytes (parameters, gradients, momentum, I/O) plus the placed arena.
    public var packedBytes: Int
    /// Resident bytes plus the most arena bytes live at one operation.
    public var lowerBound: Int
    /// packedBytes / lowerBound.
    public var ratio: Double
    public var arenaBytes: Int
    public var operations: Int
    public var tensors: Int
    /// The operation at which the most arena bytes are live, and the largest tensors live then.
    public var peakOperation: String
    public var largestAtPeak: [Entry]

    public init?(_ phase: ModulePhase, configuration: ModelConfiguration, largest: Int = 5) {
        // (What `--arena packed` does: in training, some outputs are computed again in the backward.)
        guard let lifetimes = phase.lifetimes(configuration: configuration, recomputingOutputs: phase.options.training) else { return nil }
        let placement = ArenaPlacement(lifetimes)
        self.phase = phase.kind
        slotBytes = phase.slotPerTensor(configuration: configuration).breakdown.total
        arenaBytes = placement.size
        packedBytes = lifetimes.resident + placement.size
        lowerBound = lifetimes.lowerBound
        ratio = Double(packedBytes) / Double(max(lowerBound, 1))
        operations = lifetimes.operations.count
        tensors = lifetimes.tensors.count
        let peak = lifetimes.peakOperation
        peakOperation = lifetimes.operations.isEmpty ? "" : lifetimes.operations[peak.index]
        largestAtPeak = lifetimes.live(at: peak.index).prefix(largest).map { Entry(tag: $0.tag, bytes: $0.bytes) }
    }
}
