import BlockwiseDevice
import BlockwiseKernels
import BlockwiseTraining

/// Where the features between modules live, as far as memory is concerned.
public enum FeatureResidence: Equatable, Sendable, Codable {
    /// In the SQLite store, in `encoding`: one encoded row buffer (``RunPlanner/rowBufferFloats(_:encoding:)``)
    /// and SQLite's own memory, bounded by its page cache (`cacheBytes`) plus a fixed overhead for
    /// schema and statements.
    case store(encoding: FeatureEncoding, cacheBytes: Int)
    /// In ledger-counted memory: the input and output levels of the module, both splits.
    case memory
    /// Not cached (parallel, e2e: all modules resident).
    case none
}

/// The predicted memory of one module (its training phase and its feature-streaming phase).
public struct ModuleMemoryPlan: Codable, Sendable {
    public var module: Int
    public var batch: Int
    /// What the trainer allocates (everything but the SQLite engine), at the moment of the peak.
    public var breakdown: MemoryBreakdown
    /// The two phases: training (module + optimizer + batch) and streaming the frozen module's
    /// outputs (module in eval mode); `breakdown` is the larger.
    public var trainingPhase: MemoryBreakdown
    public var streamingPhase: MemoryBreakdown
    /// Upper bound of SQLite's own memory (store-engine category).
    public var storeEngineBound: Int
    public var peakBytes: Int { breakdown.total + storeEngineBound }
    /// What the module performs in one lap (FLOPs exactly as the kernels count them; storage
    /// traffic through the store), at `batch`.
    public var work: ModuleWork
    /// How each convolution runs in training at `batch` (engine and chunk; the selected engine).
    public var convolutions: [ConvolutionChoice]
}

/// What a module's lap performs, counted as the runtime counts it (see ``RunPlanner/moduleWork``).
public struct ModuleWork: Codable, Sendable, Equatable {
    /// Training epochs (forward, loss, backward, optimizer steps), the batch-norm recalibration
    /// pass, and streaming both splits through the frozen module.
    public var trainingFlops: Int
    public var recalibrationFlops: Int
    public var streamingFlops: Int
    public var flops: Int { trainingFlops + recalibrationFlops + streamingFlops }
    /// The same work by operation class, with the bytes each class moves (what the device model times).
    public var operations: OperationWork
    /// Feature bytes read from and written to the store, and storage operations (zero in memory).
    public var storeBytesRead = 0
    public var storeBytesWritten = 0
    public var storeOperations = 0
    /// What SQLite is planned to write to the file system for those features
    /// (``RunPlanner/storeFileBytes(rows:rowBytes:transactions:)``): what the device's storage
    /// time and wear count. In a lap that replaces the level (multilap's later laps), SQLite
    /// first overwrites the freed pages with zeros (Debian builds it with SQLITE_SECURE_DELETE)
    /// and then writes them again: ``storeFileBytesRewritten``, twice as much.
    public var storeFileBytesWritten = 0
    public var storeFileBytesRewritten: Int { 2 * storeFileBytesWritten }
    /// `--page`: the pages the store holds at once (every paged tensor once).
    public var storeBytesHeld = 0
}

/// Plans a run without allocating: per-module peaks by category, the largest batch that fits a
/// budget, the store's size per level and encoding, and the emulated device's time and energy.
public enum RunPlanner {
    /// Fixed SQLite overhead beyond the page cache (schema, prepared statements, connection),
    /// measured with `sqlite3_status64` on this schema at 24-30 KiB with 16-64 KiB caches
    /// (lookaside and the initial bulk page allocation are turned off); bounded at 40 KiB.
    public static let storeEngineOverhead = 40 * 1024

    /// SQLite's page cache when none is chosen (`--store-cache`): 1 MiB. Module inputs and
    /// outputs are read and written in row order, so a larger cache saves almost no I/O: at the
    /// default run, 512 KiB against 2 MiB read 1.4% more (pread64 1,051,655 against 1,037,172,
    /// `strace -c`) and wrote 0.6% more, with the same accuracies and emulated time.
    public static let defaultStoreCacheBytes = 1_048_576

    /// Upper bound of SQLite's memory for a page cache of `cacheBytes`: pages carry ~5% of
    /// headers (bounded at 8%) plus the fixed overhead.
    public static func storeEngineBound(cacheBytes: Int) -> Int {
        cacheBytes + (cacheBytes * 8 + 99) / 100 + storeEngineOverhead
    }

    /// The store's row buffer for a run: the largest encoded row of any level.
    public static func rowBufferFloats(_ configuration: TrainingConfiguration, encoding: FeatureEncoding) -> Int {
        let model = configuration.model
        let shapes = [model.moduleInputShape(0)] + (0..<model.modules).map { model.moduleOutputShape($0) }
        return shapes.map { encoding.rowBufferFloats(shape: $0) }.max() ?? 0
    }

    /// Rows of level `level`, both splits (N per training sample in levels 1...K with `pool=N`).
    public static func levelSamples(_ configuration: TrainingConfiguration, level: Int, trainCount: Int, testCount: Int) -> Int {
        configuration.levelRows(level, split: .train, samples: trainCount) + testCount
    }

    /// The memory plan of module k at `batch` (sequential / multilap).
    public static func modulePlan(_ configuration: TrainingConfiguration, module k: Int, batch: Int,
                                  residence: FeatureResidence, trainCount: Int, testCount: Int) -> ModuleMemoryPlan {
        let model = configuration.model
        let training = ExecutionPlan.trainingPhase(configuration, module: k, batch: batch)
        var trainingPhase = training.breakdown
        if ExecutionPlan.recomputesInputs(configuration, module: k) {
            // The chain's two buffers and one frozen module at a time beside the trained one.
            trainingPhase = trainingPhase.adding(ExecutionPlan.recomputeSlots(configuration, module: k, batch: batch).breakdown)
            trainingPhase = trainingPhase.adding((0..<k).map { ExecutionPlan.frozenPhase(configuration, module: $0, batch: batch).breakdown }
                .max { $0.total < $1.total } ?? MemoryBreakdown())
        }
        var streamingPhase = ExecutionPlan.streamingPhase(configuration, module: k, batch: batch).breakdown
        var engine = 0
        switch residence {
        case .store(let encoding, let cacheBytes):
            let rowBufferBytes = rowBufferFloats(configuration, encoding: encoding) * 4
            trainingPhase[.ioBuffers] += rowBufferBytes
            streamingPhase[.ioBuffers] += rowBufferBytes
            engine = storeEngineBound(cacheBytes: cacheBytes)
        case .memory:
            // (With `pool=N` the training split of levels 1...K holds N rows per sample.)
            let input = k == 0 ? 0 : levelSamples(configuration, level: k, trainCount: trainCount, testCount: testCount)
                * model.moduleInputShape(k).reduce(1, *) * 4
            let output = levelSamples(configuration, level: k + 1, trainCount: trainCount, testCount: testCount)
                * model.moduleOutputShape(k).reduce(1, *) * 4
            trainingPhase[.ioBuffers] += input
            streamingPhase[.ioBuffers] += input + output
        case .none:
            break
        }
        let breakdown = trainingPhase.total >= streamingPhase.total ? trainingPhase : streamingPhase
        let work = moduleWork(configuration, module: k, capacity: batch, residence: residence, trainCount: trainCount, testCount: testCount)
        return ModuleMemoryPlan(module: k, batch: batch, breakdown: breakdown, trainingPhase: trainingPhase,
                                streamingPhase: streamingPhase, storeEngineBound: engine, work: work,
                                convolutions: training.convolutions)
    }

    /// The smallest (micro-)batch we train with: batch norm needs at least two samples to have
    /// a variance (at one, the 1cnn head's BatchNorm1d outputs a constant and passes no gradient).
    public static let minimumBatch = TrainingConfiguration.minimumBatchSize

    /// The largest batch (<= requested, >= ``minimumBatch`` unless the requested batch is smaller)
    /// whose module plan fits `budget`, or nil if none does.
    public static func largestBatch(_ configuration: TrainingConfiguration, module k: Int, budget: Int,
                                    residence: FeatureResidence, trainCount: Int, testCount: Int) -> Int? {
        func fits(_ batch: Int) -> Bool {
            modulePlan(configuration, module: k, batch: batch, residence: residence, trainCount: trainCount, testCount: testCount).peakBytes <= budget
        }
        let smallest = min(minimumBatch, configuration.batchSize)
        guard fits(smallest) else { return nil }
        var low = smallest, high = configuration.batchSize
        if fits(high) { return high }
        while high - low > 1 {
            let middle = (low + high) / 2
            if fits(middle) { low = middle } else { high = middle }
        }
        return low
    }

    /// What module k performs in one lap at a (micro-)batch of `capacity`, counted the way the
    /// runtime counts it: the kernels' FLOPs over the batches ``BatchSchedule`` gives the trainer
    /// (training epochs with their optimizer steps, the batch-norm recalibration pass, streaming
    /// both splits), and, through the store, the feature bytes read and written and the storage
    /// operations (one per row read, one per batch written).
    public static func moduleWork(_ configuration: TrainingConfiguration, module k: Int, capacity: Int, residence: FeatureResidence,
                                  trainCount: Int, testCount: Int) -> ModuleWork {
        let model = configuration.model
        let epochs = configuration.epochsPerLap(module: k)
        let batches = BatchSchedule.trainingBatches(count: trainCount, batchSize: configuration.batchSize)
        let optimizer = KernelWork.optimizerStep(parameters: ResNetModule.trainableCount(configuration: model, index: k))
        let images = model.moduleInputShape(0).reduce(1, *)
        // Augmented inputs: module 1 augments its images; with `recompute`, module k > 1 augments
        // images and runs them through the frozen modules 1..k-1 (weights read per micro-batch).
        let recomputes = ExecutionPlan.recomputesInputs(configuration, module: k)
        let augmentFlip = configuration.augment?.flip ?? false
        func inputWork(_ chunk: Int) -> OperationWork {
            guard configuration.augment != nil, k == 0 || recomputes else { return .zero }
            return KernelWork.augment(values: chunk * images, flip: augmentFlip)
                + (0..<k).map { ResNetModule.forwardWork(configuration: model, index: $0, batch: chunk, training: false) }.sum()
        }
        let epochWork = batches.map { batch in
            optimizer + BatchSchedule.microBatches(batch, capacity: capacity).map {
                ResNetModule.trainStepWork(configuration: model, index: k, batch: $0, recomputesOutputs: configuration.packedArena == true,
                                           recomputesConvolutions: configuration.recomputesConvolutions == true)
                    + inputWork($0)
            }.sum()
        }.sum()
        // `--eval-each-epoch`: the head on the test split after every epoch.
        let evaluations = configuration.evalEachEpoch == true ? BatchSchedule.sequentialBatches(count: testCount, size: capacity) : []
        let evaluationWork = evaluations.map { ResNetModule.forwardWork(configuration: model, index: k, batch: $0, training: false) }.sum()
        // With `pool=N`: module k >= 2 recalibrates on and streams every view of its input level,
        // and module 1 streams N augmented views of the images.
        let inputRows = configuration.levelRows(k, split: .train, samples: trainCount)
        let outputRows = configuration.levelRows(k + 1, split: .train, samples: trainCount)
        let recalibration = configuration.recalibrateBatchNorm
            ? BatchSchedule.recalibrationBatches(count: inputRows, size: min(configuration.batchSize, capacity)) : []
        let recalibrationWork = recalibration.map {
            // In the training phase's buffers: a packed arena packs the blocks' masks there too.
            ResNetModule.forwardWork(configuration: model, index: k, batch: $0, training: true, packed: configuration.packedArena == true)
        }.sum()
        let streamed = BatchSchedule.sequentialBatches(count: outputRows, size: capacity) + BatchSchedule.sequentialBatches(count: testCount, size: capacity)
        let poolAugmentation = k == 0 && configuration.poolsAugmentedViews ? outputRows * KernelWork.augment(values: images, flip: augmentFlip) : .zero
        let streamingWork = streamed.map { ResNetModule.forwardWork(configuration: model, index: k, batch: $0, training: false) }.sum() + poolAugmentation
        let training = epochs * (epochWork + evaluationWork)
        var work = ModuleWork(trainingFlops: training.flops, recalibrationFlops: recalibrationWork.flops, streamingFlops: streamingWork.flops,
                              operations: training + recalibrationWork + streamingWork)
        if case .store(let encoding, _) = residence {
            let levelRow = model.moduleInputShape(k).reduce(1, *) * encoding.bytesPerValue
            let trainingRows = epochs * batches.reduce(0, +)
            let otherRows = recalibration.reduce(0, +) + outputRows + testCount + epochs * evaluations.reduce(0, +)
            // With `recompute` the training batches read images (level 0) instead of level k, and
            // each micro-batch reads the frozen modules' values (one operation per tensor).
            let trainingRowBytes = recomputes ? images * encoding.bytesPerValue : levelRow
            let microBatches = epochs * batches.reduce(0) { $0 + BatchSchedule.microBatches($1, capacity: capacity).count }
            let frozen = recomputes ? (0..<k).map { ResNetModule.parameterSpecs(configuration: model, index: $0) } : []
            let frozenBytes = frozen.reduce(0) { $0 + $1.reduce(0) { $0 + 4 * $1.shape.reduce(1, *) } }
            let frozenTensors = frozen.reduce(0) { $0 + $1.count }
            work.storeBytesRead = trainingRows * trainingRowBytes + otherRows * levelRow + microBatches * frozenBytes
            work.storeBytesWritten = (outputRows + testCount) * model.moduleOutputShape(k).reduce(1, *) * encoding.bytesPerValue
            work.storeOperations = trainingRows + otherRows + streamed.count + microBatches * frozenTensors
            let outputRow = model.moduleOutputShape(k).reduce(1, *) * encoding.bytesPerValue
            work.storeFileBytesWritten = storeFileBytes(rows: outputRows + testCount, rowBytes: outputRow, transactions: streamed.count)
        }
        return work
    }

    /// What the resident procedures (parallel, e2e) perform in the whole run, counted as the
    /// runtime counts it: every module's steps each epoch, the recalibration pass and the test
    /// evaluation through the chained modules.
    public static func residentWork(_ configuration: TrainingConfiguration, trainCount: Int, testCount: Int) -> OperationWork {
        let model = configuration.model, count = model.modules
        let endToEnd = configuration.procedure == .e2e
        let phases = ExecutionPlan.residentPhases(configuration)
        let hasHead = { (k: Int) in phases[k].hasHead }
        let optimizer = (0..<count).map { KernelWork.optimizerStep(parameters: ResNetModule.trainableCount(configuration: model, index: $0, hasHead: hasHead($0))) }.sum()
        func chain(batch: Int, training: Bool) -> OperationWork {
            (0..<count).map { ResNetModule.forwardWork(configuration: model, index: $0, hasHead: hasHead($0), batch: batch, training: training) }.sum()
        }
        // `--recompute modules` runs modules 0..K-2's forward a second time in each step's backward.
        let recompute = endToEnd && configuration.endToEndMemory == .recompute
        func step(batch n: Int) -> OperationWork {
            if endToEnd {
                let recomputed = recompute
                    ? (0..<(count - 1)).map { ResNetModule.forwardWork(configuration: model, index: $0, hasHead: hasHead($0), batch: n, training: true) }.sum()
                    : .zero
                return chain(batch: n, training: true) + recomputed + ResNetModule.headLossWork(configuration: model, index: count - 1, batch: n)
                    + (0..<count).map { ResNetModule.backwardWork(configuration: model, index: $0, batch: n, inputGradient: $0 > 0) }.sum()
            }
            return (0..<count).map { ResNetModule.trainStepWork(configuration: model, index: $0, batch: n) }.sum()
        }
        let epoch = BatchSchedule.trainingBatches(count: trainCount, batchSize: configuration.batchSize).map { step(batch: $0) + optimizer }.sum()
        let recalibration = configuration.recalibrateBatchNorm
            ? BatchSchedule.recalibrationBatches(count: trainCount, size: configuration.batchSize).map { chain(batch: $0, training: true) }.sum() : .zero
        let evaluation = BatchSchedule.sequentialBatches(count: testCount, size: configuration.batchSize).map { chain(batch: $0, training: false) }.sum()
        return configuration.residentEpochs * epoch + recalibration + evaluation
    }

    /// The store's page size (SQLite's default; the schema does not change it).
    public static let storePageBytes = 4096

    /// The bytes SQLite is planned to write to the file system for `rows` feature rows of
    /// `rowBytes` encoded bytes each, written in `transactions` transactions: the pages the rows
    /// take by SQLite's cell and overflow rules (a row over 4061 bytes keeps 489 bytes or its
    /// remainder modulo 4092 in the leaf and the rest in overflow pages), each written to the WAL
    /// (with its 24-byte frame header) together with two pages per transaction (the partly filled
    /// leaf and its parent, rewritten by every commit), and once more when the WAL is checkpointed
    /// into the database file. Measured against the counting VFS in `RunPlanTests` (within 15%).
    public static func storeFileBytes(rows: Int, rowBytes: Int, transactions: Int) -> Int {
        guard rows > 0 else { return 0 }
        let usable = storePageBytes, maxLocal = usable - 35, minLocal = (usable - 12) * 32 / 255 - 23
        let payload = rowBytes + 20  // the record's header and the level, split, row, label and checksum columns
        var local = payload, overflowPages = 0
        if payload > maxLocal {
            let k = minLocal + (payload - minLocal) % (usable - 4)
            local = k <= maxLocal ? k : minLocal
            overflowPages = (payload - local + usable - 5) / (usable - 4)
        }
        let cell = local + (overflowPages > 0 ? 4 : 0) + 12  // + the rowid and size varints and the cell pointer
        let cellsPerLeaf = max(1, (usable - 8) / cell)
        let dataPages = rows * overflowPages + (rows + cellsPerLeaf - 1) / cellsPerLeaf
        // The WAL gets every page a transaction changes (the data, and again the partly filled
        // leaf and its parent in each transaction); the checkpoint writes each distinct page once.
        let walFrames = dataPages + 2 * transactions
        return walFrames * (usable + 24) + dataPages * usable
    }

    /// The store traffic of `--page` in a whole run, counted as the runtime counts it (one
    /// storage operation per tensor read or written; zero without paging).
    /// - Activations, each training step: modules 0..K-2 write their saved activations and (but
    ///   module 1) their input in the forward and read them back in the backward.
    /// - Weights too: every module's values and momentum written once at the start; each step,
    ///   modules 0..K-2 read and write their values around the forward (its running statistics
    ///   move) and read and write values and momentum around the backward and its optimizer step,
    ///   the last module once around both; the batch-norm recalibration reads and writes every
    ///   module's values once to reset them and once per batch; the test evaluation reads them per batch.
    public static func pagingTraffic(_ configuration: TrainingConfiguration, trainCount: Int, testCount: Int) -> ModuleWork {
        var traffic = ModuleWork(trainingFlops: 0, recalibrationFlops: 0, streamingFlops: 0, operations: .zero)
        guard configuration.procedure == .e2e, let technique = configuration.endToEndMemory, technique.pages else { return traffic }
        let phases = ExecutionPlan.residentPhases(configuration), last = phases.count - 1
        let steps = configuration.residentEpochs * BatchSchedule.trainingBatches(count: trainCount, batchSize: configuration.batchSize).count
        var bytes = 0, operations = 0  // one direction, per step
        for phase in phases.prefix(last) {
            let saved = phase.arenaSlots.filter { $0.category == .savedActivations }
            bytes += saved.totalBytes + (phase.module > 0 ? phase.inputValues * 4 : 0)
            operations += saved.count + (phase.module > 0 ? 1 : 0)
        }
        var read = steps * bytes, written = steps * bytes, ops = 2 * steps * operations, writes = steps * operations
        traffic.storeBytesHeld = bytes
        if technique.pagesWeights {
            let values = phases.map { $0.parameterSlots.filter { $0.category == .parameters } }
            let momenta = phases.map { $0.parameterSlots.filter { $0.category == .optimizerState } }
            let v = values.map(\.totalBytes), m = momenta.map(\.totalBytes), vn = values.map(\.count), mn = momenta.map(\.count)
            let all = 0..<phases.count
            written += all.reduce(0) { $0 + v[$1] + m[$1] }
            traffic.storeBytesHeld += all.reduce(0) { $0 + v[$1] + m[$1] }
            ops += all.reduce(0) { $0 + vn[$1] + mn[$1] }
            writes += all.reduce(0) { $0 + vn[$1] + mn[$1] }
            // Per step: read and write, 0..K-2 values twice and momentum once, the last values and momentum once.
            let perStep = all.reduce(0) { $0 + ($1 < last ? 2 * v[$1] : v[$1]) + m[$1] }
            let perStepOps = all.reduce(0) { $0 + ($1 < last ? 2 * vn[$1] : vn[$1]) + mn[$1] }
            read += steps * perStep; written += steps * perStep; ops += 2 * steps * perStepOps; writes += steps * perStepOps
            if configuration.recalibrateBatchNorm {
                let passes = 1 + BatchSchedule.recalibrationBatches(count: trainCount, size: configuration.batchSize).count
                read += passes * v.reduce(0, +); written += passes * v.reduce(0, +); ops += 2 * passes * vn.reduce(0, +)
                writes += passes * vn.reduce(0, +)
            }
            let evaluations = BatchSchedule.sequentialBatches(count: testCount, size: configuration.batchSize).count
            read += evaluations * v.reduce(0, +); ops += evaluations * vn.reduce(0, +)
        }
        traffic.storeBytesRead = read
        traffic.storeBytesWritten = written
        traffic.storeOperations = ops
        // Each write replaces a page row in its own transaction (the freed pages, zeroed by
        // SECURE_DELETE, are the ones the new blob reuses: each page reaches the WAL once per
        // transaction): the page model's figure for rows of the mean size.
        traffic.storeFileBytesWritten = storeFileBytes(rows: writes, rowBytes: written / max(writes, 1), transactions: writes)
        return traffic
    }

    /// Store bytes of one level (both splits) for an encoding.
    public static func levelBytes(shape: [Int], samples: Int, encoding: FeatureEncoding) -> Int {
        samples * shape.reduce(1, *) * encoding.bytesPerValue
    }
}

/// Thrown before training a module that cannot fit its budget (`--fit error`).
public struct ModuleDoesNotFitError: Error, CustomStringConvertible {
    public var module: Int
    public var batch: Int
    public var needed: MemoryBreakdown
    public var storeEngineBound: Int
    public var budget: Int
    public var largestBatch: Int?

    public var description: String {
        var text = "module \(module + 1) does not fit: at batch \(batch) it needs \(formatBytes(needed.total + storeEngineBound)) "
            + "(\(needed.description)\(storeEngineBound > 0 ? ", storeEngine up to \(formatBytes(storeEngineBound))" : "")) "
            + "but the budget is \(formatBytes(budget)). "
        if let largestBatch {
            text += "The largest batch that fits is \(largestBatch): pass --batch-size \(largestBatch), or --fit microbatch to keep batch \(batch) by accumulating micro-batches of \(largestBatch)."
        } else {
            text += "Not even a batch of \(min(RunPlanner.minimumBatch, batch)) fits (what would change that follows)."
        }
        return text
    }
}
