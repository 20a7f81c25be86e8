import CKernels

/// Runs `body` over `count` items split into contiguous ranges, one per kernel thread, when the
/// work is large enough (`count * costPerItem >= 65536`); otherwise inline. The split depends
/// only on `count` and the thread count, so results are deterministic for a thread count.
@inline(__always)
public func parallelRanges(_ count: Int, costPerItem: Int = 1, _ body: (Range<Int>) -> Void) {
    let threads = KernelThreads.count
    guard threads > 1, count > 1, count * costPerItem >= 65_536 else { body(0..<count); return }
    let parts = min(threads, count)
    parallelParts(parts) { part in body((part * count / parts)..<((part + 1) * count / parts)) }
}

/// Runs `body(part)` for part in 0..<parts at once, on the OpenMP team that oneDNN's
/// convolutions also use (one pool of threads for every kernel; see parallel.h).
public func parallelParts(_ parts: Int, _ body: (Int) -> Void) {
    guard parts > 1 else { if parts == 1 { body(0) }; return }
    withoutActuallyEscaping(body) { body in
        var closure = body
        withUnsafeMutablePointer(to: &closure) { pointer in
            bw_parallel_ranges(Int32(parts), parts, pointer) { context, part, _, _ in
                context!.assumingMemoryBound(to: ((Int) -> Void).self).pointee(part)
            }
        }
    }
}
