/// The batch sizes a run feeds a module, as pure functions of counts: the trainer loops over
/// them and the run plan sums its FLOPs and storage traffic over the same lists, so the two
/// agree by construction.
public enum BatchSchedule {
    /// Mini-batch sizes of one training epoch over `count` samples: `batchSize` each, the last
    /// one shorter; a last batch of one sample is dropped (batch norm needs two), unless the
    /// whole split is one sample.
    public static func trainingBatches(count: Int, batchSize: Int) -> [Int] {
        stride(from: 0, to: count, by: batchSize).compactMap { start in
            let size = min(batchSize, count - start)
            return size >= 2 || count == 1 ? size : nil
        }
    }

    /// Near-equal micro-batches of at most `capacity` samples for a mini-batch of `batch`
    /// (one when it fits): never a lone sample while a split into chunks of two or more exists.
    public static func microBatches(_ batch: Int, capacity: Int) -> [Int] {
        let chunks = (batch + capacity - 1) / capacity
        return (0..<chunks).map { batch / chunks + ($0 < batch % chunks ? 1 : 0) }
    }

    /// Batch sizes of a batch-norm recalibration pass over `count` samples in batches of `size`:
    /// a last batch of one sample is left out (it has no variance).
    public static func recalibrationBatches(count: Int, size: Int) -> [Int] {
        var sizes: [Int] = [], offset = 0
        while offset + 2 <= count {
            let rows = min(size, count - offset)
            sizes.append(rows)
            offset += rows
        }
        return sizes
    }

    /// Batch sizes of an in-order pass (evaluation, streaming a level) over `count` samples.
    public static func sequentialBatches(count: Int, size: Int) -> [Int] {
        stride(from: 0, to: count, by: size).map { min(size, count - $0) }
    }
}
