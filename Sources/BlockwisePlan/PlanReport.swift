import BlockwiseDevice
import BlockwiseKernels
import BlockwiseTraining

/// Everything `blockwise plan` shows, computed without allocating or training.
public struct PlanReport: Codable, Sendable {
    public struct Module: Codable, Sendable {
        /// The module's number as printed (1 = the first module; `plan.module` counts from 0).
        public var number: Int
        /// The plan the run would use: at `--batch-size`, or at `microBatch` when `--fit microbatch`
        /// had to shrink it (the same choice ``BudgetResolver/resolve`` makes for the runtime).
        public var plan: ModuleMemoryPlan
        public var fits: Bool
        public var largestBatch: Int?
        /// The micro-batch the module trains in when the batch does not fit and the policy is
        /// `.microbatch` (gradients accumulated over micro-batches); nil at the full batch.
        public var microBatch: Int?
        public var cost: DeviceCost?
        /// One sample's forward pass through the trained module in eval mode, on the device: the
        /// module's inference latency (what published device benchmarks measure; docs/DEVICE-MODEL.md).
        public var inference: DeviceCost?
        /// The training and streaming phases' arenas as lifetimes and a best-fit placement would
        /// pack them (issue 19), beside today's slots.
        public var arenas: [ArenaSummary] = []
    }
    public struct Level: Codable, Sendable {
        public var level: Int
        public var shape: [Int]
        /// Bytes of both splits per encoding (fp32, fp16, bf16).
        public var bytes: [String: Int]
    }
    public var budget: Int?
    /// The emulated device's profile name (nil: no device).
    public var profile: String?
    /// Bytes the store will hold: every level, both splits, in the run's feature encoding.
    public var storeBytes: Int
    public var modules: [Module]
    public var levels: [Level]
    public var peakBytes: Int
    public var fits: Bool
    public var cost: DeviceCost?
    /// The store's share of the device's storage capacity and the run's of its write endurance.
    public var wear: StorageWear?
    /// The phases `train` executes for this plan (``RunPlan/execution``): each module's training
    /// and streaming phase with every slot and every convolution's engine and chunk.
    public var execution: ExecutionPlan
    /// The store's encoded row buffer in floats (nil with the features in memory).
    public var rowBufferFloats: Int?
    /// The resolved configuration the plan is of (model, procedure, schedule, augmentation,
    /// arena, ...), as `train` would run it (nil in a report written before it was recorded).
    public var configuration: TrainingConfiguration?

    /// `fit` decides what a module that does not fit at the batch size gets: `.error` reports it as
    /// not fitting, `.microbatch` plans it at the largest batch that fits, as the runtime will run it.
    public init(configuration: TrainingConfiguration, trainCount: Int, testCount: Int, residence: FeatureResidence,
                budget: Int?, profile: DeviceProfile?, encoding: FeatureEncoding, fit: FitPolicy = .error) {
        self.budget = budget
        self.configuration = configuration
        let model = configuration.model
        var modules: [Module] = []
        var totalWritten = 0
        for k in 0..<model.modules {
            let (plan, largest, microBatch) = BudgetResolver.modulePlan(configuration, module: k, budget: budget, fit: fit,
                                                                        residence: residence, trainCount: trainCount,
                                                                        testCount: testCount)
            // Every lap does the same work (multilap trains each module `laps` times); the counts
            // are those the run will report (RunPlanner.moduleWork).
            // What the storage time and the wear count is what SQLite writes to the file system
            // (``ModuleWork/storeFileBytesWritten``), not the feature bytes alone.
            let laps = configuration.lapCount, work = plan.work
            let read = laps * work.storeBytesRead, operations = laps * work.storeOperations
            let written = work.storeFileBytesWritten + (laps - 1) * work.storeFileBytesRewritten
            totalWritten += written
            let cost = profile.map { DeviceCost(profile: $0, work: laps * work.operations, bytesRead: read, bytesWritten: written, operations: operations) }
            let forward = ResNetModule.forwardWork(configuration: model, index: k, batch: 1, training: false)
            modules.append(Module(number: k + 1, plan: plan, fits: budget.map { plan.peakBytes <= $0 } ?? true, largestBatch: largest,
                                  microBatch: microBatch, cost: cost,
                                  inference: profile.map { DeviceCost(profile: $0, work: forward, bytesRead: 0, bytesWritten: 0, operations: 0) }))
        }
        self.modules = modules
        var resolved = configuration
        resolved.microBatches = [:]
        for module in modules { resolved.microBatches[module.number - 1] = module.microBatch }
        execution = ExecutionPlan(resolved)
        for (i, phases) in execution.modules.enumerated() where i < self.modules.count {
            self.modules[i].arenas = [phases.training, phases.streaming].compactMap { ArenaSummary($0, configuration: model) }
        }
        if case .store(let encoding, _) = residence { rowBufferFloats = RunPlanner.rowBufferFloats(resolved, encoding: encoding) }
        let shapes = [model.moduleInputShape(0)] + (0..<model.modules).map { model.moduleOutputShape($0) }
        levels = shapes.enumerated().map { level, shape in
            Level(level: level, shape: shape, bytes: Dictionary(uniqueKeysWithValues: FeatureEncoding.allCases.map {
                ($0.rawValue, RunPlanner.levelBytes(shape: shape, samples: RunPlanner.levelSamples(configuration, level: level, trainCount: trainCount,
                                                                                      testCount: testCount), encoding: $0))
            }))
        }
        self.profile = profile?.name
        storeBytes = levels.reduce(0) { $0 + ($1.bytes[encoding.rawValue] ?? 0) }
        peakBytes = modules.map(\.plan.peakBytes).max() ?? 0
        fits = modules.allSatisfy(\.fits)
        cost = profile.map { profile in DeviceCost.total(modules.compactMap(\.cost), profile: profile) }
        wear = profile.map { StorageWear(profile: $0, storeBytes: storeBytes, bytesWritten: totalWritten) }
    }
}

/// The plan of a resident procedure (parallel, e2e): every module in memory at once, nothing cached.
public struct ResidentPlan: Codable, Sendable {
    public var procedure: String
    public var breakdown: MemoryBreakdown
    /// The breakdown's total (kept in the JSON for scripts).
    public var peakBytes: Int
    public var budget: Int?
    public var fits: Bool
    /// The whole run's FLOPs, as the kernels will count them (``RunPlanner/residentWork``).
    public var flops: Int
    /// The same work by operation class.
    public var work: OperationWork
    public var profile: String?
    public var cost: DeviceCost?
    /// Every module's phase, all allocated at once (``ExecutionPlan/resident``); under an
    /// end-to-end technique, one module's arena at a time.
    public var phases: [ModulePhase]
    /// The end-to-end technique (nil: plain), what it keeps for the whole run, and its paging.
    public var technique: EndToEndMemory?
    public var residentSlots: [SlotSpec]
    public var paging: ModuleWork
    /// SQLite's memory bound when paging (in `peakBytes`, not in `breakdown`).
    public var storeEngineBound: Int
    /// The peak by category, SQLite's bound included (`peakBytes` is its total).
    public var peak: MemoryBreakdown {
        var peak = breakdown
        peak[.storeEngine] = storeEngineBound
        return peak
    }
    /// Paging: the pages' share of the device's storage capacity and the writes' of its endurance.
    public var wear: StorageWear?

    /// - cacheBytes: the store's page cache, for `--page` (SQLite's memory is part of the peak).
    public init(configuration: TrainingConfiguration, trainCount: Int, testCount: Int, budget: Int?, profile: DeviceProfile?,
                cacheBytes: Int = RunPlanner.defaultStoreCacheBytes) {
        procedure = configuration.procedure.rawValue
        let execution = ExecutionPlan(configuration)
        phases = execution.resident
        technique = execution.technique
        residentSlots = execution.residentSlots
        paging = RunPlanner.pagingTraffic(configuration, trainCount: trainCount, testCount: testCount)
        storeEngineBound = technique?.pages == true ? RunPlanner.storeEngineBound(cacheBytes: cacheBytes) : 0
        let breakdown = BudgetResolver.residentPlan(configuration)
        self.breakdown = breakdown
        peakBytes = breakdown.total + storeEngineBound
        self.budget = budget
        fits = budget.map { [peakBytes] in peakBytes <= $0 } ?? true
        work = RunPlanner.residentWork(configuration, trainCount: trainCount, testCount: testCount)
        flops = work.flops
        self.profile = profile?.name
        cost = profile.map { [work, paging] in
            DeviceCost(profile: $0, work: work, bytesRead: paging.storeBytesRead, bytesWritten: paging.storeFileBytesWritten,
                       operations: paging.storeOperations)
        }
        wear = technique?.pages == true ? profile.map { [paging] in
            StorageWear(profile: $0, storeBytes: paging.storeBytesHeld, bytesWritten: paging.storeFileBytesWritten)
        } : nil
    }
}

extension ResidentPlan {
    /// One row: what `plan` prints for a resident procedure (and `--csv` writes).
    public func table() -> Table {
        var table = Table([.init("procedure", width: 11, csv: "procedure"), .init("peak", width: 11, csv: "peak_bytes"),
                           .init("fits", width: 6, csv: "fits"), .init("FLOPs", width: 16, csv: "flops"),
                           .init("device time", width: 16, csv: "device_seconds"), .init("energy", width: 0, csv: "device_joules")])
        table.append([.init(procedure), .bytes(peakBytes), .init(fits ? "yes" : "NO", value: fits ? "true" : "false"), .int(flops),
                      .init(cost.map { formatDuration($0.seconds) } ?? "-", value: cost.map { String($0.seconds) } ?? ""),
                      .init(cost.map { formatEnergy($0.energyJoules) } ?? "-", value: cost.map { String($0.energyJoules) } ?? "")])
        return table
    }
}

extension PlanReport {
    /// The per-module table `blockwise plan` prints (and `--csv` writes).
    public func table() -> Table {
        let device = profile != nil
        var table = Table([
            .init("module", width: 8, csv: "module"), .init("peak", width: 11, csv: "peak_bytes"), .init("fits", width: 6, csv: "fits"),
            .init("largest batch", width: 15, csv: "largest_batch"), .init("micro-batch", width: 13, csv: "micro_batch"),
            .init("params", width: 10, csv: "parameters_bytes"), .init("grads+mom", width: 11, csv: "gradients_and_momentum_bytes"),
            .init("saved act.", width: 12, csv: "saved_activations_bytes"), .init("workspace", width: 11, csv: "workspace_bytes"),
            .init("I/O", width: 10, csv: "io_buffers_bytes"), .init("store eng.", width: 12, csv: "store_engine_bound_bytes"),
            .init("device time", width: 16, csv: "device_seconds", inText: device), .init("energy", width: 0, csv: "device_joules", inText: device),
            .init("GFLOP", width: 0, csv: "flops", inText: false), .init("store read", width: 0, csv: "store_bytes_read", inText: false),
            .init("store written", width: 0, csv: "store_bytes_written", inText: false),
            .init("store ops", width: 0, csv: "store_operations", inText: false),
        ])
        let costs = modules.compactMap(\.cost)
        let times = DurationColumn(costs.map(\.seconds)), energies = EnergyColumn(costs.map(\.energyJoules))
        for module in modules {
            let b = module.plan.breakdown
            var row: [Table.Cell] = [
                .int(module.number), .bytes(module.plan.peakBytes), .init(module.fits ? "yes" : "NO", value: module.fits ? "true" : "false"),
                budget == nil ? .init("-", value: "") : .init(module.largestBatch.map(String.init) ?? "none", value: module.largestBatch.map(String.init) ?? ""),
                .init(module.microBatch.map(String.init) ?? "-", value: module.microBatch.map(String.init) ?? ""),
                .bytes(b[.parameters]), .bytes(b[.gradients] + b[.optimizerState]), .bytes(b[.savedActivations]), .bytes(b[.workspace]),
                .bytes(b[.ioBuffers]), .bytes(module.plan.storeEngineBound),
            ]
            let cost = module.cost, work = module.plan.work
            row += [.init(cost.map { times.format($0.seconds) } ?? "-", value: cost.map { String($0.seconds) } ?? ""),
                    .init(cost.map { energies.format($0.energyJoules) } ?? "-", value: cost.map { String($0.energyJoules) } ?? ""),
                    .int(work.flops), .int(work.storeBytesRead), .int(work.storeBytesWritten), .int(work.storeOperations)]
            table.append(row)
        }
        return table
    }
}
