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

/// The tensors of a plan, allocated from a ledger and looked up by tag: a slot per tensor, or
/// (``ModulePhase/placement``) one packed block whose tensors are views at their placed offsets.
public final class Arena {
    public private(set) var tensors: [String: Tensor] = [:]
    public let specs: [SlotSpec]
    /// Per-use tags resolved to the shared slot that holds them (``ModulePhase/aliases``).
    let aliases: [String: String]

    /// Allocates every slot in order; throws (having released what it took) if the budget is exceeded.
    public init(_ specs: [SlotSpec], ledger: MemoryLedger, aliases: [String: String] = [:]) throws {
        self.specs = specs
        self.aliases = aliases
        for spec in specs {
            precondition(tensors[spec.tag] == nil, "duplicate slot \(spec.tag)")
            tensors[spec.tag] = try Tensor(spec.shape, category: spec.category, tag: spec.tag, ledger: ledger)
        }
    }

    /// A phase's arena: its slots, or its I/O slots and one packed block of the two arena slots'
    /// bytes (``ModulePhase/packedArenaTags(module:)``), with a view per placed tensor.
    public convenience init(phase: ModulePhase, ledger: MemoryLedger) throws {
        guard let placement = phase.placement else {
            try self.init(phase.arenaSlots, ledger: ledger, aliases: phase.aliases)
            return
        }
        let tags = ModulePhase.packedArenaTags(module: phase.module)
        let isPart = { (slot: SlotSpec) in slot.tag == tags.saved || slot.tag == tags.workspace }
        let parts = phase.arenaSlots.filter(isPart)
        try self.init(phase.arenaSlots.filter { !isPart($0) }, ledger: ledger)
        let block = try PackedBlock(parts, ledger: ledger)
        for (tag, slot) in placement {
            precondition(slot.offset % 4 == 0 && slot.offset / 4 + slot.count <= block.count, "\(tag) lies outside the arena")
            tensors[tag] = Tensor(viewOf: block.data + slot.offset / 4, shape: [slot.count], category: .workspace, tag: tag,
                                  ledger: ledger, owner: block)
        }
        for (layer, slot) in phase.convolutionWorkspaces ?? [:] {
            precondition(slot.offset % 4 == 0 && slot.offset / 4 + slot.count <= block.count, "\(layer)'s workspace lies outside the arena")
            let tag = layer + ".im2col"
            tensors[tag] = Tensor(viewOf: block.data + slot.offset / 4, shape: [slot.count], category: .workspace, tag: tag,
                                  ledger: ledger, owner: block)
        }
    }

    public subscript(tag: String) -> Tensor {
        guard let tensor = tensors[tag] ?? aliases[tag].flatMap({ tensors[$0] }) else { preconditionFailure("no slot named \(tag)") }
        return tensor
    }

    public func contains(_ tag: String) -> Bool { tensors[tag] != nil || aliases[tag].map { tensors[$0] != nil } == true }
}

/// The memory of a packed arena: one zero-filled block, counted in the ledger as its parts
/// (`m<k>.arena.savedActivations`, `m<k>.arena.workspace`: what it holds at its peak), freed with the last
/// view of it.
final class PackedBlock {
    let data: UnsafeMutablePointer<Float>
    let count: Int
    let parts: [SlotSpec]
    let ledger: MemoryLedger

    init(_ parts: [SlotSpec], ledger: MemoryLedger) throws {
        var reserved: [SlotSpec] = []
        do {
            for part in parts {
                try ledger.reserve(part.bytes, category: part.category, tag: part.tag)
                reserved.append(part)
            }
        } catch {
            for part in reserved { ledger.release(part.bytes, category: part.category, tag: part.tag) }
            throw error
        }
        self.parts = parts
        self.ledger = ledger
        count = parts.reduce(0) { $0 + $1.shape.reduce(1, *) }
        data = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
        data.initialize(repeating: 0, count: max(count, 1))
    }

    deinit {
        data.deallocate()
        for part in parts { ledger.release(part.bytes, category: part.category, tag: part.tag) }
    }
}
