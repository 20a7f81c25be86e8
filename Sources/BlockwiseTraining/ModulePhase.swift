import BlockwiseKernels

/// One phase of one module, decided before anything is allocated: its options (batch, training,
/// whether it owns its input buffer, whether it produces its input's gradient), every buffer
/// with its bytes, and how each convolution runs. ``ResNetModule/prepare(_:)`` allocates exactly
/// `slots` and runs the convolutions as `convolutions` says (it stops if its kernels would choose
/// another chunk), so `blockwise plan` and the ledger agree by construction.
public struct ModulePhase: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable {
        /// Epochs of a module's training: forward, loss, backward and optimizer steps (and the
        /// batch-norm recalibration pass, which runs in the same buffers).
        case training
        /// The frozen module streaming both splits into the next level (eval mode, no gradients).
        case streaming
        /// One of the modules that are all resident at once (parallel, e2e).
        case resident
    }

    public var kind: Kind
    public var module: Int
    public var hasHead: Bool
    /// The module's input per sample [C, H, W].
    public var inputShape: [Int]
    public var options: ModuleMemoryOptions
    /// Every buffer in allocation order: parameters, then (training) gradients and momentum, then
    /// the arena's slots (I/O, saved activations, workspace).
    public var slots: [SlotSpec]
    /// How many of `slots` the parameter store holds (parameters, gradients, momentum).
    public var parameterSlotCount: Int
    /// Engine and images per oneDNN call of every convolution at `options.batch`.
    public var convolutions: [ConvolutionChoice]
    /// What the layers' per-use tensors are in a slot-per-tensor arena: `grad.in.<layer>` in
    /// `grad.a`/`grad.b` (alternating from the last layer), `<block>.dResidual` and, in training,
    /// the head's conv output in `grad.scratch0` (``PhaseLifetimes``). Empty for a packed arena.
    public var aliases: [String: String] = [:]
    /// `--arena packed`: every tensor's byte offset and float count in the one arena (its two slots
    /// ``packedArenaTags(module:)``); nil for a slot per tensor.
    public var placement: [String: PlacedSlot]?
    /// `--placed-workspace`: the convolutions whose own workspace (the view `<layer>.im2col`) is
    /// larger than the shared `workspace.im2col`, by layer: the largest run of the arena no tensor
    /// holds at any of the layer's operations (the shared band included, which only convolutions
    /// use, one at a time). Inside the arena: the peak does not change. nil without the option.
    public var convolutionWorkspaces: [String: PlacedSlot]?

    public struct PlacedSlot: Codable, Sendable, Equatable {
        /// Bytes from the arena's start, and floats.
        public var offset: Int
        public var count: Int

        public init(offset: Int, count: Int) { self.offset = offset; self.count = count }
    }

    public init(_ kind: Kind = .training, configuration: ModelConfiguration, module k: Int, hasHead: Bool = true,
                _ options: ModuleMemoryOptions) {
        self.kind = kind
        module = k
        self.hasHead = hasHead
        inputShape = configuration.moduleInputShape(k)
        self.options = options
        slots = ResNetModule.memoryPlan(configuration: configuration, index: k, hasHead: hasHead, options)
        parameterSlotCount = slots.count - ResNetModule.arenaSlotCount(configuration: configuration, index: k, hasHead: hasHead, options)
        convolutions = ResNetModule.convolutionPlan(configuration: configuration, index: k, hasHead: hasHead, options)
        guard options.packedArena == true, kind != .resident,
              let lifetimes = lifetimes(configuration: configuration, recomputingOutputs: options.training,
                                        recomputingConvolutions: options.recomputesConvolutions == true) else {
            aliases = ModulePhase.sharedSlotAliases(configuration: configuration, module: k, hasHead: hasHead, options)
            return
        }
        // One arena: its bytes counted as what it holds at its peak operation (the saved
        // activations live then) and the rest (workspace, gradients, any gap the placement left).
        let placed = ArenaPlacement(lifetimes)
        let saved = lifetimes.live(at: lifetimes.peakOperation.index).filter { $0.category == .savedActivations }.reduce(0) { $0 + $1.bytes }
        let io = arenaSlots.filter { $0.category == .ioBuffers }
        let parts = ModulePhase.packedArenaTags(module: k)
        slots = parameterSlots + io + [SlotSpec(parts.saved, .savedActivations, [saved / 4]),
                                       SlotSpec(parts.workspace, .workspace, [(placed.size - saved) / 4])]
        placement = Dictionary(uniqueKeysWithValues: placed.placed.map { ($0.tensor.tag, PlacedSlot(offset: $0.offset, count: $0.tensor.bytes / 4)) })
        if options.placedWorkspace == true {
            let own = ModulePhase.placedWorkspaces(lifetimes, placed, layers: convolutions.map(\.layer))
            convolutionWorkspaces = own
            convolutions = ResNetModule.convolutionPlan(configuration: configuration, index: k, hasHead: hasHead, options,
                                                        workspaces: own.mapValues(\.count))
        }
    }

    /// See ``convolutionWorkspaces``: for each layer, the byte ranges of the tensors live at any
    /// operation of the layer (`<layer>.…`; the shared workspace excepted), and the largest gap
    /// between them below the arena's size, when it is larger than the shared band.
    static func placedWorkspaces(_ lifetimes: PhaseLifetimes, _ placement: ArenaPlacement, layers: [String]) -> [String: PlacedSlot] {
        let shared = placement.placed.first { $0.tensor.tag == ResNetModule.sharedWorkspaceTag }?.tensor.bytes ?? 0
        var result: [String: PlacedSlot] = [:]
        for layer in layers {
            let operations = lifetimes.operations.indices.filter { lifetimes.operations[$0].hasPrefix(layer + ".") }
            guard !operations.isEmpty else { continue }
            let taken = placement.placed.filter { placed in
                placed.tensor.tag != ResNetModule.sharedWorkspaceTag && placed.tensor.bytes > 0 && operations.contains { placed.tensor.isLive(at: $0) }
            }.map { ($0.offset, ArenaPlacement.aligned($0.end)) }.sorted { $0.0 < $1.0 }
            var best = (offset: 0, bytes: 0), cursor = 0
            for (start, end) in taken + [(placement.size, placement.size)] {
                if start - cursor > best.bytes { best = (cursor, start - cursor) }
                cursor = max(cursor, end)
            }
            if best.bytes > shared { result[layer] = PlacedSlot(offset: best.offset, count: best.bytes / 4) }
        }
        return result
    }

    /// The two slots of module k's packed arena (named per module: a frozen module's arena can be
    /// live beside the trained one's).
    public static func packedArenaTags(module k: Int) -> (saved: String, workspace: String) {
        ("m\(k).arena.savedActivations", "m\(k).arena.workspace")
    }

    /// See ``aliases``: the backward's layer order is the runtime's (blocks last to first, then
    /// the encoder), and the first layer's input gradient is the caller's.
    static func sharedSlotAliases(configuration: ModelConfiguration, module k: Int, hasHead: Bool, _ options: ModuleMemoryOptions) -> [String: String] {
        guard options.training else { return [:] }
        let (encoder, blocks, head) = ResNetModule.layers(configuration, index: k, hasHead: hasHead)
        var aliases: [String: String] = [:]
        let names = encoder.map(\.prefix) + blocks.map(\.prefix)
        var turn = 0
        for l in stride(from: names.count - 1, through: 1, by: -1) {
            aliases["grad.in." + names[l]] = turn == 0 ? "grad.a" : "grad.b"
            turn ^= 1
        }
        for block in blocks { aliases[block.prefix + ".dResidual"] = "grad.scratch0" }
        if let head, head.kind == .oneCNN { aliases[head.prefix + ".conv"] = "grad.scratch0" }
        return aliases
    }

    /// The slots the module's arena allocates (after the parameter store's).
    public var arenaSlots: [SlotSpec] { Array(slots[parameterSlotCount...]) }
    /// The parameter store's slots: parameters and, in training, gradients and momentum.
    public var parameterSlots: [SlotSpec] { Array(slots[..<parameterSlotCount]) }
    /// Values of one sample's input, and of the input at the phase's batch (N x C x H x W).
    public var inputShapeValues: Int { inputShape.reduce(1, *) }
    public var inputValues: Int { options.batch * inputShapeValues }
    /// Bytes per category of the whole phase.
    public var breakdown: MemoryBreakdown { slots.breakdown }
}

/// The phases a run executes, made once from a resolved configuration (its micro-batches set):
/// which modules are resident, at what (micro-)batch each phase runs, what it allocates and how its
/// convolutions run. The trainer executes these phases and derives none of it; the planner
/// (`blockwise plan`) prints them with the store's buffers and the work each phase performs.
public struct ExecutionPlan: Codable, Sendable, Equatable {
    /// The two phases of a module trained on its own (sequential, multilap).
    public struct ModulePhases: Codable, Sendable, Equatable {
        public var training: ModulePhase
        public var streaming: ModulePhase
    }

    public var procedure: Procedure
    /// See ``Procedure/keepsAllModulesResident``.
    public var keepsAllModulesResident: Bool
    /// Sequential and multilap: each module's phases (empty for the resident procedures).
    public var modules: [ModulePhases]
    /// Parallel and e2e: every module's one phase, all allocated at once (empty otherwise); under
    /// an end-to-end technique, one module's arena at a time.
    public var resident: [ModulePhase]
    /// The end-to-end technique, and the buffers it keeps for the whole run (the input batch, the
    /// checkpoints or the input carried forward, the gradient carried backward).
    public var technique: EndToEndMemory?
    public var residentSlots: [SlotSpec] = []

    public init(_ configuration: TrainingConfiguration) {
        procedure = configuration.procedure
        keepsAllModulesResident = configuration.procedure.keepsAllModulesResident
        technique = configuration.procedure == .e2e ? configuration.endToEndMemory : nil
        if keepsAllModulesResident {
            modules = []
            resident = ExecutionPlan.residentPhases(configuration)
            residentSlots = ExecutionPlan.residentSlots(configuration)
        } else {
            modules = (0..<configuration.model.modules).map { k in
                let batch = configuration.microBatch(module: k)
                return ModulePhases(training: ExecutionPlan.trainingPhase(configuration, module: k, batch: batch),
                                    streaming: ExecutionPlan.streamingPhase(configuration, module: k, batch: batch))
            }
            resident = []
        }
    }

    /// Module k's training phase at a (micro-)batch of `batch` (sequential, multilap).
    public static func trainingPhase(_ configuration: TrainingConfiguration, module k: Int, batch: Int) -> ModulePhase {
        ModulePhase(.training, configuration: configuration.model, module: k,
                    ModuleMemoryOptions(batch: batch, training: true, workspaceBound: configuration.workspaceBound,
                                        packedArena: configuration.packedArena,
                                        recomputesConvolutions: configuration.recomputesConvolutions,
                                        placedWorkspace: configuration.placedWorkspace))
    }

    /// Module k streaming its outputs, at the batch it trained with, so it fits wherever training did.
    public static func streamingPhase(_ configuration: TrainingConfiguration, module k: Int, batch: Int) -> ModulePhase {
        ModulePhase(.streaming, configuration: configuration.model, module: k,
                    ModuleMemoryOptions(batch: batch, training: false, workspaceBound: configuration.workspaceBound,
                                        packedArena: configuration.packedArena,
                                        recomputesConvolutions: configuration.recomputesConvolutions,
                                        placedWorkspace: configuration.placedWorkspace))
    }

    /// A frozen module computing a later module's augmented inputs (`--augmented-inputs
    /// recompute`): evaluation mode, its input in the chain's buffers.
    public static func frozenPhase(_ configuration: TrainingConfiguration, module k: Int, batch: Int) -> ModulePhase {
        ModulePhase(.streaming, configuration: configuration.model, module: k,
                    ModuleMemoryOptions(batch: batch, training: false, workspaceBound: configuration.workspaceBound, ownsInputBuffer: false,
                                        packedArena: configuration.packedArena,
                                        recomputesConvolutions: configuration.recomputesConvolutions,
                                        placedWorkspace: configuration.placedWorkspace))
    }

    /// The two activation buffers of `--augmented-inputs recompute` for module k (k >= 1): the
    /// augmented images and the frozen modules' outputs, each [batch x the largest of levels 0..k-1].
    public static func recomputeSlots(_ configuration: TrainingConfiguration, module k: Int, batch: Int) -> [SlotSpec] {
        let model = configuration.model
        let largest = (0..<k).map { model.moduleInputShape($0).reduce(1, *) }.max() ?? 0
        return [SlotSpec("recompute.a", .ioBuffers, [batch * largest])] + (k > 1 ? [SlotSpec("recompute.b", .ioBuffers, [batch * largest])] : [])
    }

    /// Whether module k's training reads augmented inputs recomputed through the frozen modules.
    public static func recomputesInputs(_ configuration: TrainingConfiguration, module k: Int) -> Bool {
        k > 0 && configuration.augment != nil && configuration.augmentedInputsChoice == .recompute
    }

    /// The resident procedures' phases: every module at the full batch; the first owns the input
    /// buffer, the others read their predecessor's output; in e2e only the last has a head and
    /// every module but the first produces its input's gradient.
    public static func residentPhases(_ configuration: TrainingConfiguration) -> [ModulePhase] {
        let count = configuration.model.modules, endToEnd = configuration.procedure == .e2e
        // Under a technique the input batch is the chain's own (``residentSlots(_:)``): no module owns it.
        let technique = endToEnd && configuration.endToEndMemory != nil
        return (0..<count).map { k in
            ModulePhase(.resident, configuration: configuration.model, module: k, hasHead: !endToEnd || k == count - 1,
                        ModuleMemoryOptions(batch: configuration.batchSize, training: true, workspaceBound: configuration.workspaceBound,
                                            ownsInputBuffer: k == 0 && !technique, needsInputGradient: endToEnd && k > 0))
        }
    }

    /// What an end-to-end technique keeps for the whole run besides the modules (empty without
    /// one): the input batch and labels; the checkpoints, each module's input (recompute) or the
    /// input carried forward (paging); the gradient carried backward between modules.
    public static func residentSlots(_ configuration: TrainingConfiguration) -> [SlotSpec] {
        guard configuration.procedure == .e2e, let technique = configuration.endToEndMemory else { return [] }
        let model = configuration.model, n = configuration.batchSize, count = model.modules
        var slots = [SlotSpec("batch.input", .ioBuffers, [n] + model.moduleInputShape(0)), SlotSpec("batch.labels", .ioBuffers, [n])]
        let inputs = (1..<count).map { model.moduleInputShape($0).reduce(1, *) }
        if technique == .recompute {
            slots += (1..<count).map { SlotSpec("checkpoint.\($0)", .savedActivations, [n] + model.moduleInputShape($0)) }
        } else {
            slots.append(SlotSpec("carry.forward", .savedActivations, [n * (inputs.max() ?? 0)]))
        }
        slots.append(SlotSpec("grad.carry", .workspace, [n * (inputs.max() ?? 0)]))
        return slots
    }
}
