import Dispatch

/// Runs `body` over `count` items split into contiguous ranges, one per kernel thread, when the
/// work is large enough (`count * costPerItem >= 65536`); otherwise inline. The split depends
/// only on `count` and the thread count, so results are deterministic for a thread count.
@inline(__always)
public func parallelRanges(_ count: Int, costPerItem: Int = 1, _ body: (Range<Int>) -> Void) {
    let threads = KernelThreads.count
    guard threads > 1, count > 1, count * costPerItem >= 65_536 else { body(0..<count); return }
    let parts = min(threads, count)
    DispatchQueue.concurrentPerform(iterations: parts) { part in
        body((part * count / parts)..<((part + 1) * count / parts))
    }
}
