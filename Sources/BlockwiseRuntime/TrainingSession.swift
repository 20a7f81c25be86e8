import BlockwiseData
import BlockwiseDevice
import BlockwisePlan
import BlockwiseKernels
import BlockwiseReports
import BlockwiseStore
import BlockwiseTraining
import Foundation

/// The budget cannot be met (the CLI exits with code 3).
public struct BudgetCannotBeMet: Error, CustomStringConvertible {
    public var message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}

/// One training run as a user asks for it: budget checks, the store (or memory), the trainer,
/// the report. The CLI's `train` and `compare` are thin wrappers around it.
public struct TrainingSession {
    public var configuration: TrainingConfiguration
    public var train: Dataset
    public var test: Dataset
    public var title = "blockwise run"
    /// The SQLite store (sequential, multilap); nil keeps features in memory.
    public var storePath: String? = "blockwise.sqlite"
    public var encoding: FeatureEncoding = .fp32
    public var storeCacheBytes = RunPlanner.defaultStoreCacheBytes
    /// What `test` is: "test", or "validation" (a split held out of the training data).
    public var evaluationSplit = "test"
    public var fresh = false
    public var profile: DeviceProfile?
    public var budget: Int?
    public var fit: FitPolicy = .error
    /// Progress events from the trainer.
    public var observer: ((TrainingEvent) throws -> Void)?
    /// How far the run is (remaining host time, emulated device time so far), for progress lines.
    public let progress = RunProgress()
    /// Messages for the user (store resumed, micro-batches chosen...).
    public var say: (String) -> Void = { _ in }

    public init(configuration: TrainingConfiguration, train: Dataset, test: Dataset) {
        self.configuration = configuration; self.train = train; self.test = test
    }

    var usesStore: Bool {
        storePath != nil && (!configuration.procedure.keepsAllModulesResident || pages)
    }

    /// Whether an end-to-end technique pages to the store (`--page`).
    var pages: Bool {
        configuration.procedure == .e2e && configuration.endToEndMemory?.pages == true
    }

    /// Where features live, for the planner.
    public var residence: FeatureResidence {
        if usesStore {
            return .store(encoding: encoding, cacheBytes: storeCacheBytes)
        }
        return configuration.procedure.keepsAllModulesResident ? .none : .memory
    }

    /// Each module's planned peak with its parts, the store engine's bound included: the same
    /// figures `blockwise plan` prints for this configuration (nil for the resident procedures,
    /// whose one figure is ``BudgetResolver/residentPlan(_:)``).
    public func modulePlans() -> [ModuleMemoryPlan]? {
        guard !configuration.procedure.keepsAllModulesResident else { return nil }
        return (0..<configuration.model.modules).map {
            BudgetResolver.modulePlan(configuration, module: $0, budget: budget, fit: fit, residence: residence,
                                      trainCount: train.count, testCount: test.count).plan
        }
    }

    /// Checks the budget, trains, and returns the report (also saved in the store).
    public func run() throws -> (report: RunReport, store: FeatureStore?) {
        var configuration = self.configuration
        let ledger = MemoryLedger(budget: budget)
        let residence = self.residence
        // The one plan of the run: budget resolved, phases decided; the trainer executes it.
        let plan: RunPlan
        do {
            plan = try RunPlan.make(configuration, budget: budget, fit: fit, residence: residence,
                                    trainCount: train.count, testCount: test.count)
        } catch let error as ResidentDoesNotFitError {
            throw BudgetCannotBeMet(message: error.description)
        } catch let error as ModuleDoesNotFitError {
            guard error.largestBatch == nil, let budget else { throw BudgetCannotBeMet(message: error.description) }
            // Not even the smallest batch fits: every option that would change that, by how much.
            let advice = FitAdvice(configuration: configuration, residence: residence,
                                   budget: budget, trainCount: train.count, testCount: test.count, fit: fit)
            throw BudgetCannotBeMet(message: error.description + "\n" + advice.text)
        }
        configuration = plan.configuration
        for (k, micro) in configuration.microBatches.sorted(by: { $0.key < $1.key }) {
            say("budget: module \(k + 1) trains in micro-batches of \(micro) (gradients accumulated to batch \(configuration.batchSize))")
        }
        var store: FeatureStore?
        if usesStore, let storePath, case .store(_, let cacheBytes) = residence {
            let opened = try FeatureStore(path: storePath, encoding: encoding, ledger: ledger, cacheKiB: max(1, cacheBytes / 1024),
                                          replace: fresh)
            // The arena is how memory is laid out, not what is computed (packed and smallest train bit
            // for bit as slots): a store resumes under either, like under other --threads. Not with
            // --placed-workspace: there the layout decides each convolution's chunks, so the floats.
            var identified = configuration
            if configuration.placedWorkspace != true {
                identified.packedArena = nil
                identified.recomputesConvolutions = nil
            }
            let identity = FeatureStore.RunIdentity(configuration: identified, data: .init(train: train, test: test), encoding: encoding)
            switch try opened.begin(identity, fresh: fresh) {
            case .created: say("store: \(storePath) (new)")
            case .restarted:
                switch opened.replacedFile {
                case .damagedBlockwise(let what)?: say("store: \(storePath) was damaged (\(what)); --fresh replaced it with a new store")
                case .notADatabase(let reason)?: say("store: \(storePath) was not a database (\(reason)); --fresh replaced it with a new store")
                default: say("store: \(storePath) emptied (--fresh)")
                }
            case .resumed where configuration.procedure.keepsAllModulesResident:
                say("store: \(storePath) holds this run's pages: training starts over (e2e does not resume; the pages are rewritten)")
            case .resumed: say("store: \(storePath) holds this run: resuming (completed modules are reused; --fresh starts over)")
            }
            if let rows = plan.rowBufferFloats { try opened.reserveRowBuffer(floats: rows) }
            store = opened
        }
        let trainer = try Trainer(configuration: configuration, ledger: ledger, cache: store, plan: plan.execution)
        trainer.journal = configuration.procedure.keepsAllModulesResident ? nil : store
        if pages { trainer.pager = store }
        let laps = configuration.lapCount
        var moduleFlops: [Int: Int] = [:]
        if configuration.procedure.keepsAllModulesResident {
            moduleFlops[0] = RunPlanner.residentWork(configuration, trainCount: train.count, testCount: test.count).flops
        } else {
            for module in plan.modules { moduleFlops[module.module] = laps * module.work.flops }
        }
        progress.begin(moduleFlops: moduleFlops, profile: profile, cache: trainer.cache)
        let observer = self.observer, progress = self.progress
        trainer.observer = { event in
            progress.observe(event, laps: laps)
            try observer?(event)
        }
        let result: TrainingResult
        do { result = try trainer.run(train: train, test: test) } catch let error as TrainingError {
            if let damage = error.damage, let store { throw StoreError.damaged(path: store.path, what: damage) }
            throw error
        }
        let report = RunReport(title: title, result: result, dataset: train.name + " / " + test.name, trainSamples: train.count,
                               testSamples: test.count, profile: profile, budget: budget, timeline: ledger.timeline, peakTensors: ledger.highWaterTensors,
                               hostPeakResidentBytes: HostMemory.peakResidentBytes(),
                               storeBytes: store.flatMap { try? FileManager.default.attributesOfItem(atPath: $0.path)[.size] as? Int },
                               evaluationSplit: evaluationSplit)
        if let store { try store.saveReport(String(decoding: try report.json(), as: UTF8.self)) }
        return (report, store)
    }
}
