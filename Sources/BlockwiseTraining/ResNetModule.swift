import BlockwiseKernels

/// What a module allocates besides its parameters.
public struct ModuleMemoryOptions: Equatable, Sendable, Codable {
    /// Samples per forward/backward call.
    public var batch: Int
    /// Training allocates gradients, momentum and gradient scratch; evaluation does not.
    public var training: Bool
    /// Bound on the im2col workspace in floats (nil: one whole image per chunk).
    public var workspaceBound: Int?
    /// Whether the module owns an input batch buffer (`input`, `labels`); false when its input
    /// is another resident module's output (parallel, e2e).
    public var ownsInputBuffer: Bool
    /// Whether backward must produce the gradient of the module's input (e2e only).
    public var needsInputGradient: Bool
    /// `--arena packed` (issue 19): the saved activations and workspace share one arena, each
    /// tensor at the offset a lifetime placement gave it (nil or false: a slot per tensor).
    public var packedArena: Bool?
    /// `--arena smallest` (a packed training arena only): each block's first convolution is not
    /// kept for the backward but computed again there from the block's input, so at most three
    /// block-sized tensors are live at once (one more convolution forward per block and step).
    public var recomputesConvolutions: Bool?
    /// `--placed-workspace` (a packed arena only): each convolution's workspace is the largest run
    /// of the arena that no tensor holds at any of the layer's operations
    /// (``ModulePhase/convolutionWorkspaces``), at least the shared `workspace.im2col` band.
    public var placedWorkspace: Bool?

    public init(batch: Int, training: Bool, workspaceBound: Int? = nil, ownsInputBuffer: Bool = true,
                needsInputGradient: Bool = false, packedArena: Bool? = nil, recomputesConvolutions: Bool? = nil,
                placedWorkspace: Bool? = nil) {
        self.batch = batch; self.training = training; self.workspaceBound = workspaceBound
        self.ownsInputBuffer = ownsInputBuffer; self.needsInputGradient = needsInputGradient
        self.packedArena = packedArena == true ? true : nil
        self.recomputesConvolutions = packedArena == true && recomputesConvolutions == true ? true : nil
        self.placedWorkspace = packedArena == true && placedWorkspace == true ? true : nil
    }
}

/// How one convolution runs: images per oneDNN call forward and backward (nil: the reference
/// im2col + sgemm path).
public struct ConvolutionChoice: Codable, Sendable, Equatable {
    public var layer: String
    public var shape: String
    public var forwardChunk: Int?
    public var backwardChunk: Int?
    public var engine: String
    /// Floats of the layer's own workspace (`--placed-workspace`: ``ModulePhase/convolutionWorkspaces``);
    /// nil: the phase's shared `workspace.im2col`.
    public var workspaceFloats: Int?

    public init(layer: String, shape: String, forwardChunk: Int?, backwardChunk: Int?, workspaceFloats: Int? = nil) {
        self.layer = layer; self.shape = shape; self.forwardChunk = forwardChunk; self.backwardChunk = backwardChunk
        self.workspaceFloats = workspaceFloats
        engine = forwardChunk == nil ? "reference" : "onednn"
    }
}

/// Metrics of one training step (or of a sum of steps).
public struct StepMetrics: Equatable, Sendable {
    /// Cross-entropy of the head, mean over the batch.
    public var taskLoss: Double = 0
    /// Sum over the module's blocks of mean(r^2): the module's kinetic energy.
    public var kineticEnergy: Double = 0
    /// The loss that was differentiated: task loss + transport weight x kinetic energy.
    public var totalLoss: Double = 0
    public var correct: Int = 0
    public var samples: Int = 0
}

/// Module k of a K-M ResNet: (the encoder, for k = 0) + M BasicBlocks + an auxiliary head.
///
/// Its memory is computed before it is allocated: ``memoryPlan(_:)`` lists every buffer
/// (parameters, gradients, momentum, saved activations, workspace, I/O) with its bytes, and
/// ``prepare(_:)`` allocates exactly that list from the ledger. Only one module needs to be
/// in memory for sequential training.
public final class ResNetModule {
    public let index: Int
    public let configuration: ModelConfiguration
    let encoder: [ConvBNUnit]
    let blocks: [BasicBlock]
    let head: Head?
    public let inputShape: [Int]
    public let outputShape: [Int]
    public let ledger: MemoryLedger
    public let parameters: ParameterStore
    public private(set) var options: ModuleMemoryOptions?
    var arena: Arena?
    /// The module's own buffers in the prepared phase, resolved once by ``prepare(_:)``.
    private struct Bound {
        let input, labels, outputGradient: UnsafeMutablePointer<Float>?
        let output: UnsafeMutablePointer<Float>
        /// Each layer's input gradient (`grad.in.<layer>`; layers counted encoder first, nil for the
        /// first layer, whose is the caller's dInput), and each block's residual gradient (empty
        /// when the phase does not train).
        let inputGradients: [UnsafeMutablePointer<Float>?]
        let residualGradients: [UnsafeMutablePointer<Float>]
    }
    private var bound: Bound?
    /// Whether the prepared phase is a packed training arena whose lifetimes split the `1cnn`
    /// head's backward (its input gradient an operation of its own; ``PhaseLifetimes``).
    private var splitsHeadBackward = false
    /// Momentum of the batch-norm running statistics in training-mode forward passes.
    public var batchNormMomentum: Float = 0.1

    /// Builds module `index` and allocates its parameters (values and running statistics only).
    /// - Throws: ``BudgetExceededError`` if the parameters alone do not fit.
    public init(configuration: ModelConfiguration, index: Int, hasHead: Bool = true, ledger: MemoryLedger) throws {
        let (encoder, blocks, head) = ResNetModule.layers(configuration, index: index, hasHead: hasHead)
        self.index = index
        self.configuration = configuration
        self.encoder = encoder
        self.blocks = blocks
        self.head = head
        self.inputShape = configuration.moduleInputShape(index)
        self.outputShape = configuration.moduleOutputShape(index)
        self.ledger = ledger
        self.parameters = try ParameterStore(specs: ResNetModule.parameterSpecs(encoder, blocks, head), ledger: ledger)
    }

    static func layers(_ c: ModelConfiguration, index: Int, hasHead: Bool) -> ([ConvBNUnit], [BasicBlock], Head?) {
        let p = "m\(index)"
        var encoder: [ConvBNUnit] = []
        var shape = c.moduleInputShape(index)
        if index == 0 {
            let first = Conv2dGeometry(inputChannels: c.inputChannels, outputChannels: c.width, kernelSize: 3,
                                       inputHeight: c.inputHeight, inputWidth: c.inputWidth)
            encoder.append(ConvBNUnit(prefix: "\(p).encoder0", geometry: first, relu: true))
            shape = encoder[0].outputShape
            for stage in 0..<c.encoderDownsamplings {
                let g = Conv2dGeometry(inputChannels: c.width, outputChannels: c.width, kernelSize: 3, stride: 2,
                                       inputHeight: shape[1], inputWidth: shape[2])
                let unit = ConvBNUnit(prefix: "\(p).encoder\(stage + 1)", geometry: g, relu: true)
                encoder.append(unit)
                shape = unit.outputShape
            }
        }
        var blocks: [BasicBlock] = []
        for b in 0..<c.blocksPerModule {
            let downsample = b == 0 && c.downsampleAt.contains(index)
            let block = BasicBlock(prefix: "\(p).block\(b)", inputShape: shape,
                                   outputChannels: downsample ? shape[0] * 2 : shape[0], stride: downsample ? 2 : 1)
            blocks.append(block)
            shape = block.outputShape
        }
        let head = hasHead ? Head(prefix: "\(p).head", kind: c.head, inputShape: shape, classes: c.classes) : nil
        return (encoder, blocks, head)
    }

    static func parameterSpecs(_ encoder: [ConvBNUnit], _ blocks: [BasicBlock], _ head: Head?) -> [ParameterSpec] {
        encoder.flatMap(\.parameterSpecs) + blocks.flatMap(\.parameterSpecs) + (head?.parameterSpecs ?? [])
    }

    /// The parameter list of module `index` without building it.
    public static func parameterSpecs(configuration: ModelConfiguration, index: Int, hasHead: Bool = true) -> [ParameterSpec] {
        let (e, b, h) = layers(configuration, index: index, hasHead: hasHead)
        return parameterSpecs(e, b, h)
    }

    /// Every buffer the module holds under `options`: parameters, then (training) gradients and
    /// momentum, then the arena's slots.
    /// Pure: allocates nothing. The ledger's peak while the module runs equals its total
    /// (``plannedBytes``) plus whatever else is live.
    public static func memoryPlan(configuration: ModelConfiguration, index: Int, hasHead: Bool = true,
                                  _ options: ModuleMemoryOptions) -> [SlotSpec] {
        let (e, b, h) = layers(configuration, index: index, hasHead: hasHead)
        let specs = parameterSpecs(e, b, h)
        var plan = specs.map { SlotSpec($0.name, .parameters, $0.shape) }
        if options.training {
            for spec in specs where spec.isTrainable { plan.append(SlotSpec(spec.name + ".grad", .gradients, spec.shape)) }
            for spec in specs where spec.isTrainable { plan.append(SlotSpec(spec.name + ".momentum", .optimizerState, spec.shape)) }
        }
        return plan + arenaPlan(configuration.moduleInputShape(index), e, b, h, options)
    }

    public func memoryPlan(_ options: ModuleMemoryOptions) -> [SlotSpec] {
        ResNetModule.memoryPlan(configuration: configuration, index: index, hasHead: head != nil, options)
    }

    static func arenaPlan(_ inputShape: [Int], _ encoder: [ConvBNUnit], _ blocks: [BasicBlock], _ head: Head?,
                          _ options: ModuleMemoryOptions) -> [SlotSpec] {
        let n = options.batch
        var plan: [SlotSpec] = []
        if options.ownsInputBuffer {
            plan.append(SlotSpec("input", .ioBuffers, [n] + inputShape))
            plan.append(SlotSpec("labels", .ioBuffers, [n]))  // Int32, same 4 bytes per entry
        }
        plan += encoder.flatMap { $0.activationSpecs(batch: n) }
        plan += blocks.flatMap { $0.activationSpecs(batch: n) }
        if let head { plan += head.activationSpecs(batch: n, training: options.training) }
        var geometries = encoder.map(\.geometry) + blocks.flatMap { [$0.unit1.geometry, $0.unit2.geometry] }
        if let head, head.kind == .oneCNN { geometries.append(head.conv) }
        let workspace = geometries.map { $0.workspaceFloats(bound: options.workspaceBound, batch: n) }.max() ?? 0
        plan.append(SlotSpec(ResNetModule.sharedWorkspaceTag, .workspace, [workspace]))
        if options.training {
            let outputs = encoder.map(\.outputCount) + blocks.map(\.outputCount)
            let units = encoder.map(\.outputCount) + blocks.flatMap { [$0.unit1.outputCount, $0.unit2.outputCount] }
                + (head?.kind == .oneCNN ? [head!.inputShape.reduce(1, *)] : [])
            let pingPong = (outputs + (options.needsInputGradient ? [inputShape.reduce(1, *)] : [])).max() ?? 0
            let scratch = units.max() ?? 0
            plan.append(SlotSpec("grad.output", .workspace, [n] + (blocks.last?.outputShape ?? inputShape)))
            if hasPingPong(encoder, blocks) {
                plan.append(SlotSpec("grad.a", .workspace, [n * pingPong]))
                plan.append(SlotSpec("grad.b", .workspace, [n * pingPong]))
            }
            plan.append(SlotSpec("grad.scratch0", .workspace, [n * scratch]))
            if let head { plan += head.gradientSpecs(batch: n) }
        }
        return plan
    }

    /// The im2col workspace slot every convolution of a phase shares (one runs at a time).
    public static let sharedWorkspaceTag = "workspace.im2col"

    /// How each convolution of module `index` runs under `options`: oneDNN in chunks of images
    /// (the most whose blocked buffers fit the module's workspace slot), or the reference path
    /// (engine `reference`, or not even one image fits). The same function the kernels call.
    /// `workspaces`: floats of a layer's own workspace (``ModulePhase/convolutionWorkspaces``) where
    /// it has one; the others use the shared slot.
    public static func convolutionPlan(configuration: ModelConfiguration, index: Int, hasHead: Bool = true,
                                       _ options: ModuleMemoryOptions, workspaces: [String: Int] = [:]) -> [ConvolutionChoice] {
        let (encoder, blocks, head) = layers(configuration, index: index, hasHead: hasHead)
        var convolutions = encoder.map { ($0.prefix, $0.geometry, false) }
            + blocks.flatMap { [($0.unit1.prefix, $0.unit1.geometry, false), ($0.unit2.prefix, $0.unit2.geometry, false)] }
        if let head, head.kind == .oneCNN { convolutions.append((head.prefix, head.conv, true)) }
        let workspace = convolutions.map { $0.1.workspaceFloats(bound: options.workspaceBound, batch: options.batch) }.max() ?? 0
        return convolutions.map { name, g, hasBias in
            let count = workspaces[name] ?? workspace
            return ConvolutionChoice(layer: name, shape: "\(g.inputChannels)x\(g.inputHeight)x\(g.inputWidth) -> \(g.outputChannels)x\(g.outputHeight)x\(g.outputWidth)",
                                     forwardChunk: g.oneDNNChunk(batch: options.batch, hasBias: hasBias, workspaceCount: count),
                                     backwardChunk: options.training ? g.oneDNNChunk(batch: options.batch, hasBias: false, workspaceCount: count) : nil,
                                     workspaceFloats: workspaces[name])
        }
    }

    /// How many of ``memoryPlan(configuration:index:hasHead:_:)``'s slots are the arena's.
    static func arenaSlotCount(configuration: ModelConfiguration, index: Int, hasHead: Bool, _ options: ModuleMemoryOptions) -> Int {
        let (e, b, h) = layers(configuration, index: index, hasHead: hasHead)
        return arenaPlan(configuration.moduleInputShape(index), e, b, h, options).count
    }

    /// Whether backward passes gradients between layers through the `grad.a`/`grad.b` pair.
    static func hasPingPong(_ encoder: [ConvBNUnit], _ blocks: [BasicBlock]) -> Bool { blocks.count + encoder.count > 1 }

    /// Total bytes of ``memoryPlan(_:)``.
    public static func plannedBytes(configuration: ModelConfiguration, index: Int, hasHead: Bool = true,
                                    _ options: ModuleMemoryOptions) -> Int {
        memoryPlan(configuration: configuration, index: index, hasHead: hasHead, options).totalBytes
    }

    /// Allocates what `options` needs beyond the parameters: the phase
    /// ``ModulePhase/init(configuration:module:hasHead:_:)`` plans for it.
    public func prepare(_ options: ModuleMemoryOptions) throws {
        try prepare(ModulePhase(configuration: configuration, module: index, hasHead: head != nil, options))
    }

    /// Allocates the phase's training state (gradients, momentum) and exactly its arena slots,
    /// releasing a previous preparation first, then resolves every layer's slots, parameters and
    /// convolution (engine and chunk, checked against the phase's plan) once, so that no forward
    /// or backward call looks a buffer up by name.
    public func prepare(_ phase: ModulePhase) throws {
        precondition(phase.module == index && phase.hasHead == (head != nil), "phase of module \(phase.module + 1) given to module \(index + 1)")
        releaseArena()
        let options = phase.options
        // Training state already allocated (an end-to-end technique that re-prepares a module
        // every step) is kept, with its momentum; an evaluation phase frees it.
        let hadTrainingState = parameters.trainable.first?.gradient != nil
        if options.training { try parameters.allocateTrainingState() } else { parameters.releaseTrainingState() }
        do {
            arena = try Arena(phase: phase, ledger: ledger)
        } catch {
            if !hadTrainingState { parameters.releaseTrainingState() }
            throw error
        }
        self.options = options
        let arena = self.arena!
        let workspace = arena[ResNetModule.sharedWorkspaceTag]
        let context = LayerContext(parameters: parameters, arena: arena, workspace: workspace.data, workspaceCount: workspace.count,
                                   preparedForTraining: options.training, batch: options.batch,
                                   convolutions: Dictionary(uniqueKeysWithValues: phase.convolutions.map { ($0.layer, $0) }))
        for unit in encoder { unit.bind(context) }
        for block in blocks { block.bind(context) }
        head?.bind(context)
        let owns = options.ownsInputBuffer, training = options.training
        splitsHeadBackward = phase.placement != nil && training && head?.splitsBackward == true
        let layerNames = encoder.map(\.prefix) + blocks.map(\.prefix)
        bound = Bound(input: owns ? context.slot("input") : nil, labels: owns ? context.slot("labels") : nil,
                      outputGradient: training ? context.slot("grad.output") : nil,
                      output: blocks.last!.output,
                      inputGradients: training ? layerNames.indices.map { $0 == 0 ? nil : context.slot("grad.in." + layerNames[$0]) } : [],
                      residualGradients: training ? blocks.map { context.slot($0.prefix + ".dResidual") } : [])
    }

    /// Frees the arena and the training state (the parameters stay).
    public func release() {
        releaseArena()
        parameters.releaseTrainingState()
    }

    /// Frees the arena only: the parameters, gradients and momentum stay (end-to-end techniques
    /// that hold one module's activations at a time).
    public func releaseArena() {
        for unit in encoder { unit.unbind() }
        for block in blocks { block.unbind() }
        head?.unbind()
        bound = nil
        arena = nil
        options = nil
    }

    /// Points every layer at the input it read in the forward, as ``forward(_:batch:training:)``
    /// would, without computing: for a backward whose saved activations were read back from the
    /// store into a new arena (`--page activations`). `input` is the module's input [N, C, H, W].
    public func attachInputs(_ input: UnsafePointer<Float>) {
        var current = input
        for unit in encoder { unit.attach(input: current); current = UnsafePointer(unit.output) }
        for block in blocks { block.attach(input: current); current = UnsafePointer(block.output) }
        head?.attach(input: current)
    }

    /// Values of one sample's input.
    public var inputCount: Int { inputShape.reduce(1, *) }

    public var batchCapacity: Int { options?.batch ?? 0 }

    /// The module's input batch buffer [batch, C, H, W] (when it owns one).
    public var inputBuffer: UnsafeMutablePointer<Float> { bound!.input! }
    /// The labels buffer (Int32, the same 4 bytes per entry) of the input batch.
    public var labelsBuffer: UnsafeMutablePointer<Int32> {
        UnsafeMutableRawPointer(bound!.labels!).assumingMemoryBound(to: Int32.self)
    }
    /// The module's output [batch, C, H, W] after ``forward(_:batch:training:)``.
    public var output: UnsafeMutablePointer<Float> { bound!.output }
    /// Gradient w.r.t. the output [batch, C, H, W]; filled by the head or, in e2e, by the next module.
    public var outputGradient: UnsafeMutablePointer<Float> { bound!.outputGradient! }
    /// The head's logits [batch, classes] after a forward (nil without a head).
    public var logits: UnsafeMutablePointer<Float>? { head?.logits }
    public var hasHead: Bool { head != nil }
    public var blockCount: Int { blocks.count }
    public var outputCount: Int { outputShape.reduce(1, *) }

    /// Forward through the encoder (module 0), the blocks and the head.
    public func forward(_ input: UnsafePointer<Float>, batch: Int, training: Bool) {
        precondition(batch <= batchCapacity, "batch \(batch) exceeds the prepared batch \(batchCapacity)")
        let momentum = batchNormMomentum
        operationIndex = 0
        var current = input
        for unit in encoder {
            beginOperation()
            unit.forward(current, batch: batch, training: training, momentum: momentum)
            current = UnsafePointer(unit.output)
        }
        for block in blocks {
            block.forward(current, batch: batch, training: training, momentum: momentum, operation: beginOperation)
            current = UnsafePointer(block.output)
        }
        if let head {
            beginOperation()
            head.forward(current, batch: batch, training: training, momentum: momentum)
        }
    }

    /// The prepared phase's slot `tag` (nil if the phase has none), for checks of what it holds.
    public func arenaSlot(_ tag: String) -> Tensor? { arena?.contains(tag) == true ? arena![tag] : nil }

    /// Called with each operation's index in ``PhaseLifetimes/operations`` as it starts, for
    /// checking the lifetimes against what the layers do (nil: not called).
    public var operationObserver: ((Int) -> Void)?
    private var operationIndex = 0
    private func beginOperation() {
        operationObserver?(operationIndex)
        operationIndex += 1
    }

    /// The work (FLOPs and bytes by operation class) one ``forward(_:batch:training:)`` of module `index` counts
    /// (`packed`: prepared with a packed training arena, whose training forward packs each block's mask).
    public static func forwardWork(configuration: ModelConfiguration, index: Int, hasHead: Bool = true, batch: Int, training: Bool,
                                   packed: Bool = false) -> OperationWork {
        let (encoder, blocks, head) = layers(configuration, index: index, hasHead: hasHead)
        return encoder.map { $0.forwardWork(batch: batch, training: training) }.sum()
            + blocks.map { $0.forwardWork(batch: batch, training: training, packed: packed) }.sum()
            + (head?.forwardWork(batch: batch, training: training) ?? .zero)
    }

    /// The work of ``headLossAndBackward(labels:batch:labelSmoothing:scale:)`` (`packed`: with a
    /// packed training arena, the head's conv gradients in two calls).
    public static func headLossWork(configuration: ModelConfiguration, index: Int, batch: Int, packed: Bool = false) -> OperationWork {
        let (_, _, head) = layers(configuration, index: index, hasHead: true)
        return KernelWork.crossEntropy(batch: batch, classes: configuration.classes)
            + head!.backwardWork(batch: batch, split: packed && head!.splitsBackward)
    }

    /// The work of ``backward(batch:transportWeight:dInput:)`` (`inputGradient`: dInput is given).
    /// `recomputesOutputs`: a packed training arena computes the encoder units' and the blocks'
    /// unit1 outputs again in the backward (``ConvBNUnit/recomputeOutput(batch:)``).
    /// `recomputesConvolutions` (`--arena smallest`): the blocks that ``reconvolves(block:encoderUnits:)``
    /// compute their unit1 conv again too.
    public static func backwardWork(configuration: ModelConfiguration, index: Int, batch: Int, inputGradient: Bool,
                                    recomputesOutputs: Bool = false, recomputesConvolutions: Bool = false) -> OperationWork {
        let (encoder, blocks, _) = layers(configuration, index: index, hasHead: false)
        var work = OperationWork.zero
        for (j, block) in blocks.enumerated() {
            // The first block's input gradient is the module's (dInput) unless an encoder precedes it.
            work += block.backwardWork(batch: batch, inputGradient: j == 0 && encoder.isEmpty ? inputGradient : true,
                                       packed: recomputesOutputs,
                                       reconvolves: recomputesOutputs && recomputesConvolutions && reconvolves(block: j, encoderUnits: encoder.count))
        }
        for (i, unit) in encoder.enumerated() {
            work += unit.backwardWork(batch: batch, inputGradient: i != 0, recomputes: recomputesOutputs, split: recomputesOutputs && i > 0)
                + (recomputesOutputs ? KernelWork.batchNormRecompute(count: batch * unit.outputCount) : .zero)
        }
        return work
    }

    /// The work of one ``trainStep(input:labels:batch:transportWeight:labelSmoothing:scale:)``.
    public static func trainStepWork(configuration: ModelConfiguration, index: Int, batch: Int, recomputesOutputs: Bool = false,
                                     recomputesConvolutions: Bool = false) -> OperationWork {
        forwardWork(configuration: configuration, index: index, batch: batch, training: true, packed: recomputesOutputs)
            + headLossWork(configuration: configuration, index: index, batch: batch, packed: recomputesOutputs)
            + backwardWork(configuration: configuration, index: index, batch: batch, inputGradient: false, recomputesOutputs: recomputesOutputs,
                           recomputesConvolutions: recomputesConvolutions)
    }

    /// Whether `--arena smallest` computes block j's unit1 conv again in the backward: every block
    /// but one that follows the encoder, whose input (the encoder's output) is itself computed
    /// again only as that block's unit1 backward starts.
    public static func reconvolves(block j: Int, encoderUnits: Int) -> Bool { j > 0 || encoderUnits == 0 }

    /// Trainable values of module `index`: what one optimizer step updates.
    public static func trainableCount(configuration: ModelConfiguration, index: Int, hasHead: Bool = true) -> Int {
        parameterSpecs(configuration: configuration, index: index, hasHead: hasHead).filter(\.isTrainable).reduce(0) { $0 + $1.shape.reduce(1, *) }
    }

    /// Sets every running mean to 0 and running variance to 1 (before a recalibration pass).
    public func resetRunningStatistics() {
        for parameter in parameters.all where !parameter.isTrainable {
            parameter.value.fill(parameter.role == .runningVariance ? 1 : 0)
        }
    }

    /// Sum over blocks of mean(r^2) for the last forward.
    public func kineticEnergy(batch: Int) -> Double {
        blocks.reduce(0) { $0 + $1.kineticEnergy }
    }

    /// Cross-entropy of the head's logits; writes `scale * dLoss/dLogits` into the head's gradient
    /// and back-propagates it through the head into ``outputGradient`` (which it zeroes first).
    public func headLossAndBackward(labels: UnsafePointer<Int32>, batch: Int, labelSmoothing: Float,
                                    scale: Float = 1) -> CrossEntropyResult {
        let head = self.head!
        beginOperation()
        let dLogits = head.logitsGradient
        dLogits.update(repeating: 0, count: batch * configuration.classes)
        let result = softmaxCrossEntropy(logits: head.logits, labels: labels, batch: batch,
                                         classes: configuration.classes, labelSmoothing: labelSmoothing,
                                         dLogits: dLogits, scale: scale)
        let dOutput = outputGradient, count = batch * outputCount
        if splitsHeadBackward {
            // A packed arena: the output gradient is written (its own operation) once the head's
            // weight gradient has read the module's output, where that output may have lain.
            head.backward(dInput: dOutput, batch: batch) {
                self.beginOperation()
                dOutput.update(repeating: 0, count: count)
            }
        } else {
            dOutput.update(repeating: 0, count: count)
            head.backward(dInput: dOutput, batch: batch)
        }
        return result
    }

    /// Backward from ``outputGradient`` through the blocks (adding the transport term's gradient
    /// `transportWeight * d mean(r^2) / dr` in each residual branch) and the encoder.
    /// Accumulates parameter gradients; adds the input's gradient into `dInput` when given.
    public func backward(batch: Int, transportWeight: Float, dInput: UnsafeMutablePointer<Float>?) {
        let bound = self.bound!
        var current = bound.outputGradient!
        /// Layer l's input gradient, zeroed (the first layer's is the caller's dInput).
        func inputGradient(layer l: Int, count: Int) -> UnsafeMutablePointer<Float>? {
            guard l > 0, let buffer = bound.inputGradients[l] else { return l == 0 ? dInput : nil }
            buffer.update(repeating: 0, count: count)
            return buffer
        }
        for (j, block) in blocks.enumerated().reversed() {
            beginOperation()  // the block's `residual` (its input gradient is zeroed in it)
            let target = inputGradient(layer: encoder.count + j, count: batch * block.inputShape.reduce(1, *))
            // (With a packed arena the encoder's last output is computed again for block 0's unit1.)
            let previous = j == 0 ? encoder.last : nil
            block.backward(dOutput: current, dInput: target, transportWeight: transportWeight,
                           scratch: bound.residualGradients[j], batch: batch, operation: beginOperation) {
                if let previous, previous.recomputesOutput {
                    previous.recomputeOutput(batch: batch)
                    block.unit1.attach(input: UnsafePointer(previous.outputForBackward))
                }
            }
            if let target { current = target }
        }
        for (i, unit) in encoder.enumerated().reversed() {
            beginOperation()
            let count = batch * unit.geometry.inputChannels * unit.geometry.inputPixels
            if i > 0, encoder[i - 1].recomputesOutput {
                // A packed arena: the input computed again, its weight gradient, then (a new
                // operation, the input dead) the input gradient into its zeroed buffer.
                encoder[i - 1].recomputeOutput(batch: batch)
                unit.attach(input: UnsafePointer(encoder[i - 1].outputForBackward))
                let target = bound.inputGradients[i]!
                unit.backward(dOutput: current, dInput: target, batch: batch) {
                    self.beginOperation()
                    target.update(repeating: 0, count: count)
                }
                current = target
                continue
            }
            // (The first encoder unit's input is the data: no gradient.)
            let target = i == 0 ? nil : inputGradient(layer: i, count: count)
            unit.backward(dOutput: current, dInput: target, batch: batch)
            if let target { current = target }
        }
    }

    /// One local training step's forward and backward (no optimizer step): the loss
    /// `CE(head(T(x)), y) + transportWeight * sum_blocks mean(r^2)`, its gradients added into
    /// the parameters' gradient buffers (scaled by `scale`, for micro-batch accumulation).
    /// With `transportWeight == 0` the transport term is not part of the loss (VanGL); the
    /// kinetic energy is still measured for the logs.
    public func trainStep(input: UnsafePointer<Float>, labels: UnsafePointer<Int32>, batch: Int,
                          transportWeight: Float, labelSmoothing: Float, scale: Float = 1) -> StepMetrics {
        forward(input, batch: batch, training: true)
        let kinetic = kineticEnergy(batch: batch)
        let result = headLossAndBackward(labels: labels, batch: batch, labelSmoothing: labelSmoothing, scale: scale)
        backward(batch: batch, transportWeight: transportWeight * scale, dInput: nil)
        return StepMetrics(taskLoss: result.loss, kineticEnergy: kinetic,
                           totalLoss: result.loss + (transportWeight == 0 ? 0 : Double(transportWeight) * kinetic),
                           correct: result.correct, samples: batch)
    }
}
