import BlockwiseKernels
import BlockwiseTraining

/// Everything `blockwise plan` shows, computed without allocating or training.
public struct PlanReport: Codable, Sendable {
    public struct Module: Codable, Sendable {
        public var plan: ModuleMemoryPlan
        public var fits: Bool
        public var largestBatch: Int?
        public var cost: DeviceCost?
    }
    public struct Level: Codable, Sendable {
        public var level: Int
        public var shape: [Int]
        /// Bytes of both splits per encoding (fp32, fp16, bf16).
        public var bytes: [String: Int]
    }
    public var budget: Int?
    public var modules: [Module]
    public var levels: [Level]
    public var peakBytes: Int
    public var fits: Bool
    public var cost: DeviceCost?

    public init(configuration: TrainingConfiguration, trainCount: Int, testCount: Int, residence: FeatureResidence,
                budget: Int?, profile: DeviceProfile?, encoding bytesPerValue: Int) {
        self.budget = budget
        let model = configuration.model
        var modules: [Module] = []
        var totalFlops = 0, totalRead = 0, totalWritten = 0, totalOperations = 0
        for k in 0..<model.modules {
            let plan = RunPlanner.modulePlan(configuration, module: k, batch: configuration.batchSize, residence: residence,
                                             trainCount: trainCount, testCount: testCount)
            let largest = budget.flatMap { RunPlanner.largestBatch(configuration, module: k, budget: $0, residence: residence,
                                                                     trainCount: trainCount, testCount: testCount) }
            // Storage traffic of a sequential module: every epoch reads the training split of its
            // input level (plus one pass for batch-norm recalibration), streaming reads both splits
            // and writes both splits of its output level.
            let inputBytes = model.moduleInputShape(k).reduce(1, *) * bytesPerValue
            let outputBytes = model.moduleOutputShape(k).reduce(1, *) * bytesPerValue
            let epochs = configuration.epochs(module: k)
            let passes = epochs + (configuration.recalibrateBatchNorm ? 1 : 0)
            let read = passes * trainCount * inputBytes + (trainCount + testCount) * inputBytes
            let written = (trainCount + testCount) * outputBytes
            let steps = (trainCount + configuration.batchSize - 1) / configuration.batchSize
            let operations = (passes * trainCount + trainCount + testCount) + 2 * steps
            let flops = epochs * plan.trainingFlopsPerEpoch + plan.streamingFlops
            totalFlops += flops; totalRead += read; totalWritten += written; totalOperations += operations
            let cost = profile.map { DeviceCost(profile: $0, flops: flops, bytesRead: read, bytesWritten: written, operations: operations) }
            modules.append(Module(plan: plan, fits: budget.map { plan.peakBytes <= $0 } ?? true, largestBatch: largest, cost: cost))
        }
        self.modules = modules
        let shapes = [model.moduleInputShape(0)] + (0..<model.modules).map { model.moduleOutputShape($0) }
        levels = shapes.enumerated().map { level, shape in
            Level(level: level, shape: shape, bytes: ["fp32": 4, "fp16": 2, "bf16": 2].mapValues {
                RunPlanner.levelBytes(shape: shape, samples: trainCount + testCount, bytesPerValue: $0)
            })
        }
        peakBytes = modules.map(\.plan.peakBytes).max() ?? 0
        fits = modules.allSatisfy(\.fits)
        cost = profile.map { DeviceCost(profile: $0, flops: totalFlops, bytesRead: totalRead, bytesWritten: totalWritten, operations: totalOperations) }
    }
}
