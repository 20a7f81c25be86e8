import BlockwiseDevice
import BlockwiseKernels
import BlockwiseTraining

/// The plan a training run executes, made once before anything is allocated: the configuration
/// with its micro-batches resolved against the budget, the phases the trainer runs
/// (``ExecutionPlan``: residency, (micro-)batch, every slot, every convolution's engine and chunk),
/// each module's planned peak and work (sequential, multilap) or the resident total (parallel,
/// e2e), and the store's row buffer. `blockwise train` builds it with ``make(_:budget:fit:residence:trainCount:testCount:)``
/// and executes it; `blockwise plan` prints the same values (``PlanReport``, ``ResidentPlan``).
public struct RunPlan: Codable, Sendable {
    /// The configuration to run: micro-batches set where `--fit microbatch` needed them.
    public var configuration: TrainingConfiguration
    public var residence: FeatureResidence
    public var execution: ExecutionPlan
    /// Sequential and multilap: each module's plan (its peak includes the store engine's bound).
    public var modules: [ModuleMemoryPlan]
    /// Parallel and e2e: every module at once (zero otherwise).
    public var resident: MemoryBreakdown
    /// The store's encoded row buffer, in floats (nil when features do not go through the store).
    public var rowBufferFloats: Int?

    /// Resolves `configuration` against `budget` and plans every phase.
    /// - Throws: ``ModuleDoesNotFitError`` for the first module that cannot fit;
    ///   ``ResidentDoesNotFitError`` when a resident procedure exceeds the budget.
    public static func make(_ configuration: TrainingConfiguration, budget: Int?, fit: FitPolicy, residence: FeatureResidence,
                            trainCount: Int, testCount: Int) throws -> RunPlan {
        if configuration.procedure.keepsAllModulesResident {
            var resident = BudgetResolver.residentPlan(configuration)
            // Paging: SQLite's memory is part of the peak, up to its bound.
            if case .store(_, let cacheBytes) = residence { resident[.storeEngine] = RunPlanner.storeEngineBound(cacheBytes: cacheBytes) }
            if let budget, resident.total > budget {
                throw ResidentDoesNotFitError(configuration: configuration, needed: resident, budget: budget)
            }
            return RunPlan(configuration: configuration, residence: residence, execution: ExecutionPlan(configuration),
                           modules: [], resident: resident, rowBufferFloats: nil)
        }
        let (resolved, plans) = try BudgetResolver.resolve(configuration, budget: budget, fit: fit, residence: residence,
                                                          trainCount: trainCount, testCount: testCount)
        var rowBuffer: Int?
        if case .store(let encoding, _) = residence { rowBuffer = RunPlanner.rowBufferFloats(resolved, encoding: encoding) }
        let plan = RunPlan(configuration: resolved, residence: residence, execution: ExecutionPlan(resolved),
                           modules: plans, resident: MemoryBreakdown(), rowBufferFloats: rowBuffer)
        // The phases the trainer runs are those the module plans were computed from.
        for (k, phases) in plan.execution.modules.enumerated() {
            precondition(phases.training.options.batch == plans[k].batch, "module \(k + 1): the execution plan's batch differs from the budget's")
        }
        return plan
    }
}

/// Thrown when a resident procedure (parallel, e2e) does not fit the budget.
public struct ResidentDoesNotFitError: Error, CustomStringConvertible {
    public var configuration: TrainingConfiguration
    public var needed: MemoryBreakdown
    public var budget: Int

    public var description: String {
        switch configuration.endToEndMemory {
        case nil:
            return "\(configuration.procedure.rawValue) keeps all \(configuration.model.modules) modules resident: "
                + "\(formatBytes(needed.total)) (\(needed)) exceed the budget \(formatBytes(budget)). Use --procedure sequential, "
                + "--recompute modules or --page activations,weights (e2e), or lower --batch-size / --width."
        case let technique?:
            return "e2e with \(technique == .recompute ? "--recompute modules" : "--page \(technique == .pageActivations ? "activations" : "activations,weights")") "
                + "needs \(formatBytes(needed.total)) (\(needed)), over the budget \(formatBytes(budget)). "
                + (technique == .pageActivationsAndWeights ? "" : "Try --page activations,weights, ")
                + (technique.pages ? "a smaller --store-cache, " : "") + "--procedure sequential, or a lower --batch-size / --width "
                + "(blockwise plan --techniques ... compares them)."
        }
    }
}
