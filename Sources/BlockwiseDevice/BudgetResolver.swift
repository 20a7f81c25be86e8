import BlockwiseKernels
import BlockwiseTraining

/// What to do when a module does not fit the budget at the requested batch.
public enum FitPolicy: String, Codable, Sendable, CaseIterable {
    /// Stop before training with ``ModuleDoesNotFitError`` (names the module, the bytes by
    /// category, the budget and the largest batch that fits).
    case error
    /// Use the largest micro-batch that fits and accumulate gradients to keep the batch.
    case microbatch
}

/// Checks a run against a budget before anything is trained, module by module.
public enum BudgetResolver {
    /// Returns the configuration to run (with micro-batches where `fit` is .microbatch) and the
    /// per-module plans; throws for the first module that cannot fit.
    public static func resolve(_ configuration: TrainingConfiguration, budget: Int?, fit: FitPolicy,
                               residence: FeatureResidence, trainCount: Int, testCount: Int) throws
        -> (configuration: TrainingConfiguration, plans: [ModuleMemoryPlan]) {
        var resolved = configuration
        resolved.microBatches = [:]
        var plans: [ModuleMemoryPlan] = []
        for k in 0..<configuration.model.modules {
            var plan = RunPlanner.modulePlan(configuration, module: k, batch: configuration.batchSize, residence: residence,
                                             trainCount: trainCount, testCount: testCount)
            if let budget, plan.peakBytes > budget {
                let largest = RunPlanner.largestBatch(configuration, module: k, budget: budget, residence: residence,
                                                      trainCount: trainCount, testCount: testCount)
                guard fit == .microbatch, let largest else {
                    throw ModuleDoesNotFitError(module: k, batch: configuration.batchSize, needed: plan.breakdown,
                                                storeEngineBound: plan.storeEngineBound, budget: budget, largestBatch: largest)
                }
                resolved.microBatches[k] = largest
                plan = RunPlanner.modulePlan(configuration, module: k, batch: largest, residence: residence,
                                             trainCount: trainCount, testCount: testCount)
            }
            plans.append(plan)
        }
        return (resolved, plans)
    }

    /// Bytes held by the resident procedures (parallel, e2e): every module at once.
    public static func residentPlan(_ configuration: TrainingConfiguration) -> MemoryBreakdown {
        var total = MemoryBreakdown()
        let endToEnd = configuration.procedure == .e2e
        let modules = configuration.model.modules
        for k in 0..<modules {
            let options = ModuleMemoryOptions(batch: configuration.batchSize, training: true, workspaceBound: configuration.workspaceBound,
                                              ownsInputBuffer: k == 0, needsInputGradient: endToEnd && k > 0)
            let plan = ResNetModule.memoryPlan(configuration: configuration.model, index: k, hasHead: !endToEnd || k == modules - 1, options)
            for (category, bytes) in plan.breakdown.bytes { total[category] += bytes }
        }
        return total
    }
}
