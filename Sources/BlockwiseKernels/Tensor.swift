/// A contiguous Float32 buffer with a shape (row-major; images are N C H W), whose bytes
/// are counted by a ``MemoryLedger`` for as long as the tensor lives.
///
/// A tensor is created zero-filled. Its memory is `count * 4` bytes, computed from the shape
/// before anything is allocated (``Tensor/byteCount(shape:)``), and reserved in the ledger
/// first, so a budget is checked before the allocation happens.
public final class Tensor {
    public let shape: [Int]
    public let count: Int
    public let data: UnsafeMutablePointer<Float>
    public let category: MemoryCategory
    public let tag: String
    public let ledger: MemoryLedger

    /// Bytes a tensor of `shape` needs.
    public static func byteCount(shape: [Int]) -> Int {
        shape.reduce(1, *) * MemoryLayout<Float>.stride
    }

    /// Allocates a zero-filled tensor, counting its bytes in `ledger` under `category`.
    /// - Throws: ``BudgetExceededError`` when the ledger's budget would be exceeded
    ///   (nothing is allocated then).
    public init(_ shape: [Int], category: MemoryCategory, tag: String, ledger: MemoryLedger) throws {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        let count = shape.reduce(1, *)
        try ledger.reserve(count * MemoryLayout<Float>.stride, category: category, tag: tag)
        self.shape = shape
        self.count = count
        self.category = category
        self.tag = tag
        self.ledger = ledger
        self.data = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
        self.data.initialize(repeating: 0, count: max(count, 1))
        owner = nil
    }

    /// A view's owner (the block holding its memory), nil for a tensor that owns its memory.
    private let owner: AnyObject?

    /// A view of `count` floats at `data` inside memory that `owner` holds and counts (a packed
    /// arena's tensor): it reserves nothing and frees nothing; it keeps `owner` alive.
    public init(viewOf data: UnsafeMutablePointer<Float>, shape: [Int], category: MemoryCategory, tag: String,
                ledger: MemoryLedger, owner: AnyObject) {
        self.shape = shape
        count = shape.reduce(1, *)
        self.category = category
        self.tag = tag
        self.ledger = ledger
        self.data = data
        self.owner = owner
    }

    deinit {
        guard owner == nil else { return }
        data.deallocate()
        ledger.release(count * MemoryLayout<Float>.stride, category: category, tag: tag)
    }

    public var byteCount: Int { count * MemoryLayout<Float>.stride }

    /// Dimension `axis` (N, C, H, W for images).
    public subscript(dimension axis: Int) -> Int { shape[axis] }

    public var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: data, count: count) }

    public subscript(index: Int) -> Float {
        get { data[index] }
        set { data[index] = newValue }
    }

    public func fill(_ value: Float) { data.update(repeating: value, count: count) }
    public func zero() { fill(0) }

    public func copy(from values: [Float]) {
        precondition(values.count == count, "copy of \(values.count) values into a tensor of \(count)")
        values.withUnsafeBufferPointer { data.update(from: $0.baseAddress!, count: count) }
    }

    public func copy(from other: Tensor) {
        precondition(other.count == count, "copy of \(other.count) values into a tensor of \(count)")
        data.update(from: other.data, count: count)
    }

    public func toArray() -> [Float] { Array(buffer) }
}

/// Process-wide operation counters (for the emulated device's compute time).
/// Kernels add their work (``KernelWork``) here; readers take differences.
public enum KernelCounters {
    nonisolated(unsafe) public static var work = OperationWork()
    /// All FLOPs counted so far.
    public static var flops: Int { work.flops }
}
