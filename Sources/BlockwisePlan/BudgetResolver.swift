import BlockwiseDevice
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
            let choice = modulePlan(configuration, module: k, budget: budget, fit: fit, residence: residence,
                                    trainCount: trainCount, testCount: testCount)
            if let budget, choice.plan.peakBytes > budget {
                throw ModuleDoesNotFitError(module: k, batch: configuration.batchSize, needed: choice.plan.breakdown,
                                            storeEngineBound: choice.plan.storeEngineBound, budget: budget,
                                            largestBatch: choice.largestBatch)
            }
            resolved.microBatches[k] = choice.microBatch
            plans.append(choice.plan)
        }
        return (resolved, plans)
    }

    /// Module k's plan as the run will use it: at the configured batch, or, when that exceeds the
    /// budget and `fit` is `.microbatch`, at the largest batch that fits (`microBatch`). The plan
    /// still exceeds the budget when it cannot be made to fit. `largestBatch` is nil without a
    /// budget or when not even the smallest batch fits. Shared by the runtime's ``resolve`` and
    /// `blockwise plan`, so the two agree by construction.
    public static func modulePlan(_ configuration: TrainingConfiguration, module k: Int, budget: Int?, fit: FitPolicy,
                                  residence: FeatureResidence, trainCount: Int, testCount: Int)
        -> (plan: ModuleMemoryPlan, largestBatch: Int?, microBatch: Int?) {
        let plan = RunPlanner.modulePlan(configuration, module: k, batch: configuration.batchSize, residence: residence,
                                         trainCount: trainCount, testCount: testCount)
        let largest = budget.flatMap { RunPlanner.largestBatch(configuration, module: k, budget: $0, residence: residence,
                                                                 trainCount: trainCount, testCount: testCount) }
        guard fit == .microbatch, let budget, plan.peakBytes > budget, let largest else { return (plan, largest, nil) }
        return (RunPlanner.modulePlan(configuration, module: k, batch: largest, residence: residence,
                                      trainCount: trainCount, testCount: testCount), largest, largest)
    }

    /// Bytes held by the resident procedures (parallel, e2e) at their peak: every module at once;
    /// under an end-to-end technique, what it keeps for the whole run (``ExecutionPlan/residentSlots(_:)``,
    /// every module's parameters, gradients and momentum unless the weights are paged) plus the
    /// largest module's arena (and, weights paged, that module's parameters, gradients and momentum).
    /// SQLite's memory (paging) is not in it: ``RunPlanner/storeEngineBound(cacheBytes:)``.
    public static func residentPlan(_ configuration: TrainingConfiguration) -> MemoryBreakdown {
        let phases = ExecutionPlan.residentPhases(configuration)
        guard configuration.procedure == .e2e, let technique = configuration.endToEndMemory else {
            return phases.reduce(MemoryBreakdown()) { $0.adding($1.breakdown) }
        }
        var resident = ExecutionPlan.residentSlots(configuration).breakdown
        if !technique.pagesWeights { resident = phases.reduce(resident) { $0.adding($1.parameterSlots.breakdown) } }
        let transient = phases.map { technique.pagesWeights ? $0.breakdown : $0.arenaSlots.breakdown }.max { $0.total < $1.total } ?? MemoryBreakdown()
        return resident.adding(transient)
    }
}
