import BlockwiseKernels

/// One buffer a module will allocate: its tag, category and shape. Memory plans are lists of
/// these, computed from a configuration and a batch size before anything is allocated; the
/// runtime allocates exactly these (``Arena``), so `plan` and the ledger agree by construction.
public struct SlotSpec: Equatable, Sendable, Codable {
    public var tag: String
    public var category: MemoryCategory
    public var shape: [Int]

    public init(_ tag: String, _ category: MemoryCategory, _ shape: [Int]) {
        self.tag = tag; self.category = category; self.shape = shape
    }

    public var bytes: Int { Tensor.byteCount(shape: shape) }
}

extension Array where Element == SlotSpec {
    /// Bytes per category of a plan.
    public var breakdown: MemoryBreakdown {
        var result = MemoryBreakdown()
        for slot in self { result[slot.category] += slot.bytes }
        return result
    }
    public var totalBytes: Int { reduce(0) { $0 + $1.bytes } }
}

/// The tensors of a plan, allocated from a ledger and looked up by tag.
public final class Arena {
    public private(set) var tensors: [String: Tensor] = [:]
    public let specs: [SlotSpec]

    /// Allocates every slot in order; throws (having released what it took) if the budget is exceeded.
    public init(_ specs: [SlotSpec], ledger: MemoryLedger) throws {
        self.specs = specs
        for spec in specs {
            precondition(tensors[spec.tag] == nil, "duplicate slot \(spec.tag)")
            tensors[spec.tag] = try Tensor(spec.shape, category: spec.category, tag: spec.tag, ledger: ledger)
        }
    }

    public subscript(tag: String) -> Tensor {
        guard let tensor = tensors[tag] else { preconditionFailure("no slot named \(tag)") }
        return tensor
    }

    public func contains(_ tag: String) -> Bool { tensors[tag] != nil }
}
