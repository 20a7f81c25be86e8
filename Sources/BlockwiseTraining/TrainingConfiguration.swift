import BlockwiseKernels

/// How a block-wise module phase holds its saved activations and workspace (issue 19).
public enum ArenaLayout: String, Codable, Sendable, CaseIterable {
    /// A buffer per tensor for the whole phase.
    case slots
    /// One arena, each tensor placed at an offset by its lifetime (``ArenaPlacement``); the
    /// batch-norm outputs computed again where the backward reads them.
    case packed
    /// Packed, and each block's first convolution computed again in the backward instead of kept
    /// (one more convolution forward per block and step): the smallest peak.
    case smallest

    /// The layout a run uses when none is chosen: `smallest` where modules train one at a time
    /// (sequential, multilap); `slots` where every module stays resident (parallel, e2e), to which
    /// a packed arena does not apply.
    public static func `default`(for procedure: Procedure) -> ArenaLayout {
        procedure.keepsAllModulesResident ? .slots : .smallest
    }
}

/// The four training procedures (DESIGN.md).
public enum Procedure: String, Codable, Sendable, CaseIterable {
    /// Module k trains to completion on the frozen outputs of modules < k, then is frozen.
    case sequential
    /// The sequential pass repeated `laps` times with the epochs divided by `laps`.
    case multilap
    /// Each batch goes through every module in order, inputs detached, one step per module.
    case parallel
    /// End-to-end back-propagation with the last head only (the baseline).
    case e2e

    /// Whether every module is in memory at once (parallel, e2e: nothing is cached between
    /// modules) rather than one at a time with its features cached. The one place this is decided;
    /// ``ExecutionPlan``, the planner, the runtime and the report read it.
    public var keepsAllModulesResident: Bool { self == .parallel || self == .e2e }
}

/// How end-to-end training (`e2e`) saves memory: the techniques people use to train a whole
/// network under a budget, planned and counted like everything else.
public enum EndToEndMemory: String, Codable, Sendable, CaseIterable {
    /// `--recompute modules` (gradient checkpointing, Chen et al. 2016): the forward keeps only each
    /// module's input; the backward recomputes module k's forward from it, then back-propagates.
    case recompute
    /// `--page activations` (POET, Patil et al. 2022): the forward writes each module's saved
    /// activations (and its input) to the store, the backward reads them back.
    case pageActivations = "page-activations"
    /// `--page activations,weights`: also only the module being computed has its weights, gradients
    /// and momentum in RAM; the others are written to and read from the store.
    case pageActivationsAndWeights = "page-activations-weights"

    public var pagesWeights: Bool { self == .pageActivationsAndWeights }
    public var pages: Bool { self != .recompute }
}

/// Where module k > 1 of a block-wise run gets augmented inputs from (`--augmented-inputs`).
public enum AugmentedInputs: Codable, Equatable, Sendable, CustomStringConvertible {
    /// Only module 1 sees augmented images; later modules train on the cached outputs of the
    /// un-augmented images (today's design, the cheapest).
    case first
    /// Each batch of images is augmented and passed through the frozen modules 1..k-1, loaded from
    /// the store one at a time (weights only), as the authors' code does.
    case recompute
    /// When level k is written, N augmented views of every training sample are stored (view v of
    /// level k is module k applied to view v of level k-1; level 1's views are the images, each
    /// augmented with its own seeded draw); each epoch draws one view per sample. N times the
    /// training split's storage, no recomputation.
    case pool(views: Int)

    /// The largest pool: 64 views of every sample.
    public static let poolViewRange = 1...64

    public var description: String {
        switch self {
        case .first: return "first"
        case .recompute: return "recompute"
        case .pool(let views): return "pool=\(views)"
        }
    }

    /// N for `pool=N`, else nil.
    public var poolViews: Int? { if case .pool(let views) = self { return views } else { return nil } }

    public static func parse(_ text: String) throws -> AugmentedInputs {
        switch text {
        case "first": return .first
        case "recompute": return .recompute
        default:
            if text.hasPrefix("pool=") {
                let digits = text.dropFirst(5)
                guard digits.allSatisfy({ ("0"..."9").contains($0) }), digits.first != "0", let views = Int(digits), poolViewRange.contains(views) else {
                    throw AugmentationError(message: "--augmented-inputs pool=N takes a whole number of views \(poolViewRange.lowerBound)...\(poolViewRange.upperBound) (got '\(text)')")
                }
                return .pool(views: views)
            }
            throw AugmentationError(message: "--augmented-inputs takes first, recompute or pool=N (got '\(text)')")
        }
    }
}

/// Everything that determines a training run.
public struct TrainingConfiguration: Equatable, Codable, Sendable {
    public var model = ModelConfiguration()
    public var procedure: Procedure = .sequential
    public var tau: TauSchedule = .doubled(tau: 1)
    public var optimizer = SGD()
    public var schedule: LearningRateSchedule = .cosine
    public var labelSmoothing: Float = 0
    public var batchSize: Int = 128
    /// Epochs of module k (sequential, multilap) = epochsBase + k * epochsPerModule (the paper's
    /// E0 + k E1); parallel and e2e train every module for E0 + (K-1) E1 epochs, the budget of
    /// the last module in sequential training.
    public var epochsBase: Int = 2
    public var epochsPerModule: Int = 0
    public var laps: Int = 5
    public var seed: UInt64 = 0
    /// Bound on each module's im2col workspace, floats (nil: one image per chunk).
    public var workspaceBound: Int?
    /// After training, recompute every batch-norm running statistic as the exact average of the
    /// batch statistics over one pass of the training data ("precise BN", Wu & Johnson 2021).
    /// With PyTorch's exponential average (momentum 0.1) the running variance keeps a trace of
    /// its initial value 1 for ~40 steps and lags features that move: on short runs the heads'
    /// eval accuracy then collapses far below their train accuracy (measured: 13.8% vs 35.6%).
    public var recalibrateBatchNorm: Bool = true
    /// Micro-batch per module index (`--fit microbatch`): the module is allocated for this many
    /// samples and each mini-batch of `batchSize` is processed in micro-batches whose gradients
    /// are accumulated before one optimizer step. Batch norm then normalises with the statistics
    /// of each micro-batch, not of the whole mini-batch.
    public var microBatches: [Int: Int] = [:]
    /// End-to-end only: the memory-saving technique (nil: every module's activations stay
    /// resident, plain e2e). Optional so that the JSON of runs without it, and their stores'
    /// fingerprints, do not change.
    public var endToEndMemory: EndToEndMemory?
    /// Augmentation of the training split's input images (nil: none), drawn anew every epoch.
    public var augment: Augmentation?
    /// Where a later module's augmented inputs come from (block-wise procedures; nil: `.first`).
    public var augmentedInputs: AugmentedInputs?
    /// Evaluate each module's head on the test split after every epoch (the authors' protocol
    /// reports the best epoch's); nil: no.
    public var evalEachEpoch: Bool?

    /// Sets ``packedArena`` and ``recomputesConvolutions`` for `layout` (nil where it does not use them).
    public mutating func setArenaLayout(_ layout: ArenaLayout) {
        packedArena = layout == .slots ? nil : true
        recomputesConvolutions = layout == .smallest ? true : nil
    }

    /// `--arena packed` (issue 19): each block-wise module phase allocates one arena, its tensors
    /// placed by lifetime (nil: a slot per tensor, as before).
    public var packedArena: Bool?
    /// `--arena smallest` (with ``packedArena``): the blocks' unit1 convolutions are computed again
    /// in the backward instead of kept (nil: kept).
    public var recomputesConvolutions: Bool?
    /// `--placed-workspace` (with ``packedArena``): each convolution's workspace is the largest part
    /// of the arena free at all of its operations (nil: the one shared `--workspace` band).
    public var placedWorkspace: Bool?

    /// The augmented-inputs choice in force (``AugmentedInputs/first`` unless set).
    public var augmentedInputsChoice: AugmentedInputs { augmentedInputs ?? .first }

    /// Rows per training sample in the cached levels 1...K of the training split: N with
    /// `--augmented-inputs pool=N` (view-major: row v * samples + i is view v of sample i), else 1.
    /// Level 0 (the images) and the test split hold one row per sample.
    public var poolViews: Int { augment == nil ? 1 : augmentedInputsChoice.poolViews ?? 1 }
    /// Whether level 1 holds augmented views of the images (`pool=N`, N >= 1) rather than the images' outputs.
    public var poolsAugmentedViews: Bool { augment != nil && augmentedInputsChoice.poolViews != nil }

    /// Rows of level `level` of `split` for a data set of `samples` samples.
    public func levelRows(_ level: Int, split: Split, samples: Int) -> Int {
        level > 0 && split == .train ? poolViews * samples : samples
    }

    /// Samples per forward/backward of module k.
    public func microBatch(module k: Int) -> Int { min(batchSize, microBatches[k] ?? batchSize) }

    public init() {}

    /// Epochs of module k in one pass (sequential) or in all laps together (multilap).
    public func epochs(module k: Int) -> Int { epochsBase + k * epochsPerModule }

    /// Epochs of the resident procedures (parallel, e2e).
    public var residentEpochs: Int { epochs(module: model.modules - 1) }

    /// Epochs of module k in one lap.
    public func epochsPerLap(module k: Int) -> Int {
        procedure == .multilap ? max(1, (epochs(module: k) + laps - 1) / laps) : epochs(module: k)
    }

    public var lapCount: Int { procedure == .multilap ? laps : 1 }

    /// Limits checked by ``problems()`` (large enough for any real run, small enough that sizes
    /// computed from them cannot overflow).
    public static let maximumBatchSize = 1 << 16
    /// Batch norm needs two samples to have a variance: the smallest batch and micro-batch.
    public static let minimumBatchSize = 2
    public static let maximumEpochs = 100_000
    public static let tauRange: ClosedRange<Double> = 1e-6...1e12

    /// Problems with the configuration, as messages naming the option.
    public func problems() -> [String] {
        var result = model.problems()
        func whole(_ option: String, _ value: Int, _ range: ClosedRange<Int>) {
            if !range.contains(value) { result.append("\(option) must be in \(range.lowerBound)...\(range.upperBound) (got \(value))") }
        }
        /// NaN and the infinities fail every range (a comparison with NaN is false).
        func real(_ option: String, _ value: Double, _ range: ClosedRange<Double>, open upper: Bool = false, _ hint: String = "") {
            let inside = value >= range.lowerBound && (upper ? value < range.upperBound : value <= range.upperBound)
            if !inside {
                result.append("\(option) must be a finite number in [\(range.lowerBound), \(range.upperBound)\(upper ? ")" : "]") (got \(value))\(hint)")
            }
        }
        whole("--batch-size", batchSize, Self.minimumBatchSize...Self.maximumBatchSize)
        if batchSize < Self.minimumBatchSize {
            result[result.count - 1] += ": batch norm needs at least \(Self.minimumBatchSize) samples per batch (at 1 it has no variance and the run trains nothing)"
        }
        whole("--epochs", epochsBase, 1...Self.maximumEpochs)
        whole("--epochs-per-module", epochsPerModule, 0...Self.maximumEpochs)
        whole("--laps", laps, 1...1000)
        if let workspaceBound { whole("--workspace", workspaceBound, 1...(1 << 40)) }
        real("--lr", optimizer.learningRate, 1e-12...100)
        real("--momentum", optimizer.momentum, 0...1, open: true)
        real("--weight-decay", optimizer.weightDecay, 0...1, open: true)
        real("--label-smoothing", Double(labelSmoothing), 0...1, open: true)
        switch tau {
        case .fixed(let t), .doubled(let t):
            // 1 / (2 tau) must be a finite float weight: tau below 1e-6 makes the transport term
            // overflow once it multiplies a mean of squares; 'off' is the way to say infinity.
            real("--tau", t, Self.tauRange, "; use --tau off for no transport term")
        case .multipliers(let l, let h, let s):
            real("--lambda0", l, 1e-6...1e12)
            real("--multiplier-step", h, 0...1e12)
            whole("--multiplier-interval", s, 1...1_000_000_000)
        case .off: break
        }
        if let endToEndMemory, procedure != .e2e {
            result.append((endToEndMemory == .recompute ? "--recompute" : "--page") + " applies to --procedure e2e only (got \(procedure.rawValue)): "
                          + "block-wise procedures keep one module resident already")
        }
        if let augment { result += augment.problems(height: model.inputHeight, width: model.inputWidth) }
        if augmentedInputs != nil && augment == nil {
            result.append("--augmented-inputs needs --augment (crop=N, flip)")
        }
        if let augmentedInputs, augmentedInputs != .first, procedure.keepsAllModulesResident {
            result.append("--augmented-inputs \(augmentedInputs) applies to sequential and multilap (\(procedure.rawValue) augments the input batch directly)")
        }
        if packedArena == true && procedure.keepsAllModulesResident {
            result.append("--arena \(recomputesConvolutions == true ? "smallest" : "packed") applies to sequential and multilap (\(procedure.rawValue) keeps every module resident: its outputs and gradients cross modules)")
        }
        if recomputesConvolutions == true && packedArena != true {
            result.append("recomputed convolutions (--arena smallest) need the packed arena")
        }
        // (With a packed arena and a resident procedure the --arena problem above says it.)
        if placedWorkspace == true && packedArena != true {
            result.append("--placed-workspace places each convolution's workspace in the packed arena: it needs --arena packed or smallest (got --arena slots"
                          + (procedure.keepsAllModulesResident ? ", which \(procedure.rawValue) uses)" : ")"))
        }
        if evalEachEpoch == true && procedure.keepsAllModulesResident {
            result.append("--eval-each-epoch applies to sequential and multilap (got \(procedure.rawValue))")
        }
        if endToEndMemory != nil && model.modules < 2 {
            result.append("--recompute and --page need at least 2 modules (--modules \(model.modules)): with one module there is nothing to recompute or page")
        }
        return result
    }
}
