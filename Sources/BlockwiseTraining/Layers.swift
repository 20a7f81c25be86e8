import BlockwiseKernels

/// What a layer reads once, when its module is prepared for a phase (``ResNetModule/prepare(_:)``):
/// the module's parameters, the phase's allocated slots, the shared im2col workspace and how each
/// convolution runs. Layers resolve their tags here into pointers (``ConvBNUnit/bind(_:)``), so
/// no forward or backward call looks anything up by name.
struct LayerContext {
    let parameters: ParameterStore
    let arena: Arena
    let workspace: UnsafeMutablePointer<Float>
    let workspaceCount: Int
    /// Whether the module was prepared for training (``ModuleMemoryOptions/training``): its
    /// arena then has the gradient slots, and the head's conv output lives in `grad.scratch0`.
    let preparedForTraining: Bool
    /// The phase's prepared (micro-)batch and its convolution plan (engine and chunk per layer).
    let batch: Int
    let convolutions: [String: ConvolutionChoice]

    func value(_ name: String) -> UnsafeMutablePointer<Float> { parameters[name].value.data }
    /// The gradient buffer of a trainable parameter; nil when the module is not prepared for training.
    func gradient(_ name: String) -> UnsafeMutablePointer<Float>? { parameters[name].gradient?.data }
    func slot(_ tag: String) -> UnsafeMutablePointer<Float> { arena[tag].data }
    func hasSlot(_ tag: String) -> Bool { arena.contains(tag) }

    /// The convolution of layer `name` as the phase's plan chose it; the kernel it makes must pick
    /// the same chunk at the prepared batch (plan and runtime agree by construction).
    /// A layer with its own workspace (`--placed-workspace`: the view `<layer>.im2col`) uses it.
    func convolution(_ name: String, _ geometry: Conv2dGeometry, hasBias: Bool) -> ConvolutionKernel {
        let own = arena.contains(name + ".im2col") ? arena[name + ".im2col"] : nil
        let kernel = ConvolutionKernel(geometry: geometry, hasBias: hasBias, workspace: own?.data ?? workspace,
                                       workspaceCount: own?.count ?? workspaceCount)
        if let planned = convolutions[name] {
            precondition(kernel.chunk(batch: batch, backward: false) == planned.forwardChunk
                         && (!preparedForTraining || kernel.chunk(batch: batch, backward: true) == planned.backwardChunk),
                         "\(name): the runtime's convolution chunk differs from the plan's \(planned)")
        }
        return kernel
    }
}

/// conv3x3 (no bias) -> BatchNorm2d -> optional ReLU. The building unit of the encoder and of
/// BasicBlocks.
///
/// Slots (batch N, output [C_out, H_out, W_out]): `<prefix>.conv` (conv output, kept for BN
/// backward), `<prefix>.out` (BN output, ReLU applied in place; kept for the ReLU mask and as
/// the next layer's input), `<prefix>.bn.mean`, `<prefix>.bn.inverseStd` [C_out].
final class ConvBNUnit {
    let prefix: String
    let geometry: Conv2dGeometry
    let relu: Bool
    /// The input of the last forward call (a slot of the caller's), read by backward.
    private var input: UnsafePointer<Float>?

    /// The slot the unit writes its output into; another layer's slot when `ownsOutput` is false.
    let outputTag: String
    let ownsOutput: Bool

    /// The unit's buffers in the prepared phase, resolved once by ``bind(_:)``.
    private struct Bound {
        let conv, out, mean, inverseStd: UnsafeMutablePointer<Float>
        let weight, gamma, beta, runningMean, runningVariance: UnsafeMutablePointer<Float>
        /// Gradients of the trainable parameters (nil when the phase does not train).
        let dWeight, dGamma, dBeta: UnsafeMutablePointer<Float>?
        let convolution: ConvolutionKernel
        /// `<prefix>.out.recomputed` (a packed training arena): the output is not kept for the
        /// backward but computed again there from the saved conv output and batch statistics.
        let again: UnsafeMutablePointer<Float>?
        /// `<prefix>.conv.recomputed` (`--arena smallest`): the conv output is not kept for the
        /// backward either but computed again there from the unit's input
        /// (``recomputeConvolution(batch:)``); the backward and the output's recomputation read it.
        let convAgain: UnsafeMutablePointer<Float>?
    }
    private var bound: Bound!

    init(prefix: String, geometry: Conv2dGeometry, relu: Bool, outputTag: String? = nil) {
        self.prefix = prefix; self.geometry = geometry; self.relu = relu
        self.outputTag = outputTag ?? prefix + ".out"
        self.ownsOutput = outputTag == nil
    }

    var outputShape: [Int] { [geometry.outputChannels, geometry.outputHeight, geometry.outputWidth] }
    var outputCount: Int { outputShape.reduce(1, *) }
    /// The output buffer [N, C_out, H_out, W_out] of the prepared phase.
    var output: UnsafeMutablePointer<Float> { bound.out }

    var parameterSpecs: [ParameterSpec] {
        let c = geometry.outputChannels
        return [ParameterSpec(name: prefix + ".conv.weight", shape: geometry.weightShape, role: .weight),
                ParameterSpec(name: prefix + ".bn.weight", shape: [c], role: .scale),
                ParameterSpec(name: prefix + ".bn.bias", shape: [c], role: .shift),
                ParameterSpec(name: prefix + ".bn.runningMean", shape: [c], role: .runningMean),
                ParameterSpec(name: prefix + ".bn.runningVariance", shape: [c], role: .runningVariance)]
    }

    func activationSpecs(batch: Int) -> [SlotSpec] {
        [SlotSpec(prefix + ".conv", .savedActivations, [batch] + outputShape)]
            + (ownsOutput ? [SlotSpec(outputTag, .savedActivations, [batch] + outputShape)] : [])
            + [SlotSpec(prefix + ".bn.mean", .savedActivations, [geometry.outputChannels]),
               SlotSpec(prefix + ".bn.inverseStd", .savedActivations, [geometry.outputChannels])]
    }

    /// Resolves the unit's slots, parameters and convolution in a prepared phase.
    func bind(_ context: LayerContext) {
        bound = Bound(conv: context.slot(prefix + ".conv"), out: context.slot(outputTag),
                      mean: context.slot(prefix + ".bn.mean"), inverseStd: context.slot(prefix + ".bn.inverseStd"),
                      weight: context.value(prefix + ".conv.weight"), gamma: context.value(prefix + ".bn.weight"),
                      beta: context.value(prefix + ".bn.bias"), runningMean: context.value(prefix + ".bn.runningMean"),
                      runningVariance: context.value(prefix + ".bn.runningVariance"),
                      dWeight: context.gradient(prefix + ".conv.weight"), dGamma: context.gradient(prefix + ".bn.weight"),
                      dBeta: context.gradient(prefix + ".bn.bias"),
                      convolution: context.convolution(prefix, geometry, hasBias: false),
                      again: context.hasSlot(prefix + ".out.recomputed") ? context.slot(prefix + ".out.recomputed") : nil,
                      convAgain: context.hasSlot(prefix + ".conv.recomputed") ? context.slot(prefix + ".conv.recomputed") : nil)
        input = nil
    }

    /// Whether the backward reads the output computed again (``recomputeOutput(batch:)``).
    var recomputesOutput: Bool { bound.again != nil }
    /// The output as the backward reads it (the mask, the next layer's input): recomputed or kept.
    var outputForBackward: UnsafeMutablePointer<Float> { bound.again ?? bound.out }

    /// Whether the backward reads the conv output computed again (``recomputeConvolution(batch:)``).
    var recomputesConvolution: Bool { bound.convAgain != nil }
    /// The conv output as the backward reads it: computed again or kept.
    private var convForBackward: UnsafeMutablePointer<Float> { bound.convAgain ?? bound.conv }

    /// Writes the last training forward's conv output again into `<prefix>.conv.recomputed`, bit
    /// for bit (the same kernel, input and weights; the optimizer steps after the backward).
    /// - Memory: none beyond the slot; the im2col workspace as in the forward.
    func recomputeConvolution(batch: Int) {
        let b = bound!
        b.convolution.forward(output: b.convAgain!, input: input!, weight: b.weight, bias: nil, batch: batch)
    }

    /// Writes the last training forward's output again into `<prefix>.out.recomputed`, bit for bit.
    func recomputeOutput(batch: Int) {
        let b = bound!
        batchNormRecomputeOutput(output: b.again!, input: convForBackward, weight: b.gamma, bias: b.beta, mean: b.mean, inverseStd: b.inverseStd,
                                 batch: batch, channels: geometry.outputChannels, spatial: geometry.outputPixels, relu: relu)
    }

    func unbind() { bound = nil; input = nil }
    /// Sets the input backward reads, as the last forward would have.
    func attach(input x: UnsafePointer<Float>) { input = x }

    /// The gradients at a residual block's output ReLU, in one pass: `dOutput = dOutput * (y > 0)`
    /// (dS, in place) and `dResidual = dS + weight * 2 r / count`, recomputing `r = BN(conv)` from
    /// the saved convolution output and batch statistics (so r itself is not kept).
    /// - Shapes: dOutput, reluOutput (y), dResidual [N, C_out, H_out, W_out]; `reluMask`, when
    ///   given instead of y, the mask of `y > 0` as bits (``packReLUMask(_:count:into:)``).
    func residualGradients(dOutput: UnsafeMutablePointer<Float>, reluOutput: UnsafePointer<Float>, reluMask: UnsafePointer<UInt32>? = nil,
                           dResidual: UnsafeMutablePointer<Float>, transportWeight: Float, batch: Int) {
        let c = geometry.outputChannels, spatial = geometry.outputPixels
        let b = bound!
        let conv = b.conv, mean = b.mean, rstd = b.inverseStd, gamma = b.gamma, beta = b.beta
        let scale = 2 * transportWeight / Float(batch * c * spatial)
        parallelRanges(c, costPerItem: batch * spatial) { channels in
            for channel in channels {
                let a = gamma[channel] * rstd[channel], b = beta[channel] - mean[channel] * a
                for n in 0..<batch {
                    let offset = (n * c + channel) * spatial
                    let x = conv + offset, g = dOutput + offset, r = dResidual + offset
                    if let reluMask {
                        maskedResidualGradient(g, r, mask: reluMask, maskStart: offset, x: x, spatial, transportScale: scale, a: a, b: b)
                    } else {
                        maskedResidualGradient(g, r, y: reluOutput + offset, x: x, spatial, transportScale: scale, a: a, b: b)
                    }
                }
            }
        }
        KernelCounters.work += reluMask == nil ? KernelWork.residualGradient(count: batch * c * spatial)
                                               : KernelWork.residualGradientFromMask(count: batch * c * spatial)
    }

    /// Forward; returns `mean(BN output^2)` (before the ReLU) when `measureSquares` is set, else 0.
    /// In training the ReLU and the squares are fused into batch norm's output pass; `momentum`
    /// is that of the running statistics.
    @discardableResult
    func forward(_ x: UnsafePointer<Float>, batch: Int, training: Bool, momentum: Float, measureSquares: Bool = false) -> Double {
        input = x
        let b = bound!
        b.convolution.forward(output: b.conv, input: x, weight: b.weight, bias: nil, batch: batch)
        let c = geometry.outputChannels, spatial = geometry.outputPixels
        if training {
            return withUnsafeTemporaryAllocation(of: Double.self, capacity: c) { squares in
                batchNormForwardTraining(output: b.out, input: b.conv, weight: b.gamma, bias: b.beta,
                                         mean: b.mean, inverseStd: b.inverseStd,
                                         runningMean: b.runningMean, runningVariance: b.runningVariance,
                                         batch: batch, channels: c, spatial: spatial, momentum: momentum,
                                         relu: relu, outputSquares: measureSquares ? squares.baseAddress : nil)
                return measureSquares ? squares.reduce(0, +) / Double(batch * c * spatial) : 0
            }
        } else {
            batchNormForwardInference(output: b.out, input: b.conv, weight: b.gamma, bias: b.beta,
                                      runningMean: b.runningMean, runningVariance: b.runningVariance,
                                      batch: batch, channels: c, spatial: spatial)
            let squares = measureSquares ? meanSquare(b.out, count: batch * outputCount) : 0
            if relu {
                reluForward(output: b.out, input: b.out, count: batch * outputCount)
                KernelCounters.work += KernelWork.relu(count: batch * outputCount)
            }
            return squares
        }
    }

    /// The work ``forward(_:batch:training:momentum:measureSquares:)`` counts.
    func forwardWork(batch: Int, training: Bool, measureSquares: Bool = false) -> OperationWork {
        let c = geometry.outputChannels, spatial = geometry.outputPixels
        return KernelWork.convolutionForward(geometry, batch: batch)
            + (training ? KernelWork.batchNormTraining(batch: batch, channels: c, spatial: spatial)
                        : KernelWork.batchNormInference(batch: batch, channels: c, spatial: spatial)
                          + (measureSquares ? KernelWork.meanSquare(count: batch * outputCount) : .zero)
                          + (relu ? KernelWork.relu(count: batch * outputCount) : .zero))
    }

    /// The work ``backward(dOutput:dInput:batch:)`` counts (`inputGradient`: dInput is given).
    func backwardWork(batch: Int, inputGradient: Bool) -> OperationWork {
        KernelWork.batchNormBackward(batch: batch, channels: geometry.outputChannels, spatial: geometry.outputPixels)
            + KernelWork.convolutionBackward(geometry, batch: batch, inputGradient: inputGradient, weightGradient: true)
    }

    /// - dOutput: gradient w.r.t. this unit's output [N, C_out, H_out, W_out]; overwritten in
    ///   place by the ReLU mask and then by the batch-norm gradient (no scratch buffer).
    /// - dInput: accumulated into (nil: the input is detached or is the data).
    /// - beforeInputGradient: when given, the weight gradient is computed first and the input's
    ///   after calling it (a packed arena: the input, computed again, is dead by then, and the
    ///   caller zeroes dInput in it).
    /// - beforeWeightGradient: when given, called between batch norm's backward (the last reader
    ///   of the saved conv output) and the weight gradient (`--arena smallest`: the caller computes
    ///   the input again there).
    /// With an output computed again (``recomputesOutput``), the ReLU mask is taken from the saved
    /// conv output and statistics, so the recomputed output is not needed here.
    func backward(dOutput: UnsafeMutablePointer<Float>, dInput: UnsafeMutablePointer<Float>?, batch: Int,
                  beforeWeightGradient: (() -> Void)? = nil, beforeInputGradient: (() -> Void)? = nil) {
        let b = bound!
        let maskFromConv = relu && recomputesOutput
        batchNormBackward(dInput: dOutput, dWeight: b.dGamma!, dBias: b.dBeta!, dOutput: dOutput,
                          input: convForBackward, weight: b.gamma, mean: b.mean, inverseStd: b.inverseStd,
                          batch: batch, channels: geometry.outputChannels, spatial: geometry.outputPixels, accumulate: false,
                          reluOutput: relu && !maskFromConv ? b.out : nil, reluOfInputWithBias: maskFromConv ? b.beta : nil)
        beforeWeightGradient?()
        if let beforeInputGradient {
            b.convolution.backward(dInput: nil, dWeight: b.dWeight!, dBias: nil, dOutput: dOutput, input: input!, weight: b.weight,
                                   batch: batch, splitsAsBoth: true)
            beforeInputGradient()
            b.convolution.backward(dInput: dInput, dWeight: nil, dBias: nil, dOutput: dOutput, input: input!, weight: b.weight,
                                   batch: batch, splitsAsBoth: true)
        } else {
            b.convolution.backward(dInput: dInput, dWeight: b.dWeight!, dBias: nil, dOutput: dOutput, input: input!,
                                   weight: b.weight, batch: batch)
        }
    }

    /// The work of ``backward(dOutput:dInput:batch:beforeInputGradient:)`` in a packed arena: the
    /// mask computed twice from the conv output, the convolution's gradients in two calls when
    /// `split` (the input computed again by its producer).
    func backwardWork(batch: Int, inputGradient: Bool, recomputes: Bool, split: Bool) -> OperationWork {
        guard recomputes || split else { return backwardWork(batch: batch, inputGradient: inputGradient) }
        let c = geometry.outputChannels, spatial = geometry.outputPixels
        let mask = relu && recomputes ? 2 * KernelWork.batchNormRecompute(count: batch * c * spatial) : .zero
        let convolution = split
            ? KernelWork.convolutionBackward(geometry, batch: batch, inputGradient: false, weightGradient: true)
                + (inputGradient ? KernelWork.convolutionBackward(geometry, batch: batch, inputGradient: true, weightGradient: false) : .zero)
            : KernelWork.convolutionBackward(geometry, batch: batch, inputGradient: inputGradient, weightGradient: true)
        return KernelWork.batchNormBackward(batch: batch, channels: c, spatial: spatial) + mask + convolution
    }
}

/// A BasicBlock (He et al. 2016): `y = ReLU(r + shortcut(x))`, `r = BN(conv(ReLU(BN(conv(x)))))`.
/// `r` is the residual branch whose mean square is the block's kinetic energy (Karkar et al.).
/// A downsampling block (stride 2, width doubled) uses the option-A shortcut.
///
/// Slots: those of its two units (`<prefix>.unit1.*`, `<prefix>.unit2.*`; `<prefix>.unit2.out`
/// is r) and `<prefix>.out` (y).
final class BasicBlock {
    let prefix: String
    let unit1: ConvBNUnit
    let unit2: ConvBNUnit
    let shortcut: ShortcutGeometry?
    let inputShape: [Int]

    init(prefix: String, inputShape: [Int], outputChannels: Int, stride: Int) {
        self.prefix = prefix
        self.inputShape = inputShape
        let g1 = Conv2dGeometry(inputChannels: inputShape[0], outputChannels: outputChannels, kernelSize: 3, stride: stride,
                                inputHeight: inputShape[1], inputWidth: inputShape[2])
        unit1 = ConvBNUnit(prefix: prefix + ".unit1", geometry: g1, relu: true)
        let g2 = Conv2dGeometry(inputChannels: outputChannels, outputChannels: outputChannels, kernelSize: 3, stride: 1,
                                inputHeight: g1.outputHeight, inputWidth: g1.outputWidth)
        // unit2's output r is written straight into the block's output slot (y = r, then y +=
        // shortcut, then ReLU): r is not kept; backward recomputes it from unit2's saved conv.
        unit2 = ConvBNUnit(prefix: prefix + ".unit2", geometry: g2, relu: false, outputTag: prefix + ".out")
        if stride != 1 || outputChannels != inputShape[0] {
            precondition(stride == 2, "option-A shortcut halves the resolution")
            shortcut = ShortcutGeometry(inputChannels: inputShape[0], outputChannels: outputChannels,
                                        inputHeight: inputShape[1], inputWidth: inputShape[2])
        } else {
            shortcut = nil
        }
    }

    var outputShape: [Int] { unit2.outputShape }
    var outputCount: Int { unit2.outputCount }
    var outputTag: String { prefix + ".out" }
    /// y [N, C_out, H_out, W_out] of the prepared phase (unit2 writes r into it).
    var output: UnsafeMutablePointer<Float> { unit2.output }
    /// Mean of r^2 of the last forward.
    private(set) var lastKineticEnergy: Double = 0
    /// A packed training arena (issue 19): `<prefix>.out.mask`, the output ReLU's mask as bits,
    /// which the residual gradient reads instead of y (so y lives only until its last reader as an
    /// input), and `<prefix>.dHidden`, unit1's output gradient in a tensor of its own (so dOutput
    /// dies once the skip path has read it). Both nil otherwise.
    private var mask: UnsafeMutablePointer<UInt32>?
    private var dHidden: UnsafeMutablePointer<Float>?

    var parameterSpecs: [ParameterSpec] { unit1.parameterSpecs + unit2.parameterSpecs }

    func activationSpecs(batch: Int) -> [SlotSpec] {
        unit1.activationSpecs(batch: batch) + unit2.activationSpecs(batch: batch)
            + [SlotSpec(outputTag, .savedActivations, [batch] + outputShape)]
    }

    func bind(_ context: LayerContext) {
        unit1.bind(context); unit2.bind(context); lastKineticEnergy = 0
        mask = context.hasSlot(prefix + ".out.mask")
            ? UnsafeMutableRawPointer(context.slot(prefix + ".out.mask")).assumingMemoryBound(to: UInt32.self) : nil
        dHidden = context.hasSlot(prefix + ".dHidden") ? context.slot(prefix + ".dHidden") : nil
    }
    func unbind() { unit1.unbind(); unit2.unbind(); mask = nil; dHidden = nil }
    func attach(input x: UnsafePointer<Float>) { unit1.attach(input: x); unit2.attach(input: UnsafePointer(unit1.output)) }

    /// - operation: called as each of its operations starts (unit1, unit2, add; ``PhaseLifetimes``).
    func forward(_ x: UnsafePointer<Float>, batch: Int, training: Bool, momentum: Float, operation: () -> Void = {}) {
        operation()
        unit1.forward(x, batch: batch, training: training, momentum: momentum)
        operation()
        lastKineticEnergy = unit2.forward(unit1.output, batch: batch, training: training, momentum: momentum, measureSquares: true)
        operation()
        let y = output  // holds r now
        let count = batch * outputCount
        if let shortcut {
            // y = r + shortcut(x): the shortcut adds into y channel by channel.
            shortcutForwardAdd(output: y, input: x, batch: batch, geometry: shortcut)
            reluForward(output: y, input: y, count: count)
        } else {
            addReLU(y, x, count: count)
        }
        KernelCounters.work += skipWork(batch: batch, forward: true)
        if training, let mask {
            packReLUMask(y, count: count, into: mask)
            KernelCounters.work += KernelWork.reluMaskPack(count: count)
        }
    }

    /// Mean of r^2 over the batch tensor (of the last forward).
    var kineticEnergy: Double { lastKineticEnergy }

    /// The skip path's memory passes: forward, the shortcut's add and the ReLU (or the fused
    /// add and ReLU); backward (with an input gradient), the shortcut's backward or the add.
    func skipWork(batch: Int, forward: Bool) -> OperationWork {
        let count = batch * outputCount
        guard let shortcut else { return KernelWork.add(count: count) }
        let inputs = batch * shortcut.inputChannels * shortcut.inputHeight * shortcut.inputWidth
        let outputs = batch * shortcut.inputChannels * shortcut.outputHeight * shortcut.outputWidth
        return forward ? KernelWork.shortcutForward(inputs: inputs, outputs: outputs) + KernelWork.relu(count: count)
                       : KernelWork.shortcutBackward(inputs: inputs, outputs: outputs)
    }

    /// The work ``forward(_:batch:training:momentum:)`` counts (`packed`: a packed training
    /// arena's, which also packs the output ReLU's mask).
    func forwardWork(batch: Int, training: Bool, packed: Bool = false) -> OperationWork {
        unit1.forwardWork(batch: batch, training: training) + unit2.forwardWork(batch: batch, training: training, measureSquares: true)
            + skipWork(batch: batch, forward: true) + (training && packed ? KernelWork.reluMaskPack(count: batch * outputCount) : .zero)
    }

    /// The work ``backward(dOutput:dInput:transportWeight:scratch:batch:)`` counts. `packed`: a
    /// packed training arena's (unit1's output computed again, the residual gradient from the
    /// mask's bits, unit2's gradients in two calls).
    /// `reconvolves` (`--arena smallest`, this block's unit1): its conv forward once more.
    func backwardWork(batch: Int, inputGradient: Bool, packed: Bool = false, reconvolves: Bool = false) -> OperationWork {
        let count = batch * outputCount
        return (reconvolves ? KernelWork.convolutionForward(unit1.geometry, batch: batch) : .zero) + (packed ? KernelWork.residualGradientFromMask(count: count) : KernelWork.residualGradient(count: count))
            + (inputGradient ? skipWork(batch: batch, forward: false) : .zero)
            + unit2.backwardWork(batch: batch, inputGradient: true, recomputes: false, split: packed)
            + unit1.backwardWork(batch: batch, inputGradient: inputGradient, recomputes: packed, split: false)
            + (packed ? KernelWork.batchNormRecompute(count: batch * unit1.outputCount) : .zero)
    }

    /// - dOutput: gradient w.r.t. y; overwritten.
    /// - dInput: accumulated into, or nil (detached input).
    /// - transportWeight: w in `w * mean(r^2)`; its gradient enters the residual branch only.
    /// - scratch: one buffer of at least N x (block output) floats.
    /// The dOutput buffer is reused for the hidden gradient once the skip path has consumed it
    /// (a packed arena: `<prefix>.dHidden`, written after unit2's weight gradient).
    /// - operation: called as each of its operations after the first starts (skip, unit2, in a
    ///   packed arena unit2's input gradient, unit1; the caller starts `residual`, before it
    ///   zeroes dInput).
    /// - recomputeInput: called as unit1's backward starts, to compute the block's input again
    ///   (the previous layer's recomputed output) and attach it (a packed arena).
    func backward(dOutput: UnsafeMutablePointer<Float>, dInput: UnsafeMutablePointer<Float>?, transportWeight: Float,
                  scratch: UnsafeMutablePointer<Float>, batch: Int, operation: () -> Void = {}, recomputeInput: () -> Void = {}) {
        let count = batch * outputCount
        let dResidual = scratch
        unit2.residualGradients(dOutput: dOutput, reluOutput: output, reluMask: mask.map { UnsafePointer($0) }, dResidual: dResidual,
                                transportWeight: transportWeight, batch: batch)
        operation()
        if let dInput {
            if let shortcut {
                shortcutBackward(dInput: dInput, dOutput: dOutput, batch: batch, geometry: shortcut)
            } else {
                accumulate(dInput, dOutput, count: count)
            }
            KernelCounters.work += skipWork(batch: batch, forward: false)
        }
        operation()
        func recomputeHidden() {
            unit1.recomputeOutput(batch: batch)
            unit2.attach(input: UnsafePointer(unit1.outputForBackward))
        }
        if unit1.recomputesOutput && !unit1.recomputesConvolution { recomputeHidden() }
        let hidden: UnsafeMutablePointer<Float>
        if let dHidden {
            hidden = dHidden
            withoutActuallyEscaping(operation) { operation in
                // `--arena smallest`: once unit2's batch norm has read its conv output (its last
                // reader), unit1's conv and output are computed again (an operation of their own)
                // for unit2's weight gradient.
                let again: (() -> Void)? = unit1.recomputesConvolution ? {
                    operation()
                    self.unit1.recomputeConvolution(batch: batch)
                    recomputeHidden()
                } : nil
                unit2.backward(dOutput: dResidual, dInput: dHidden, batch: batch, beforeWeightGradient: again) {
                    operation()
                    dHidden.update(repeating: 0, count: count)
                }
            }
        } else {
            hidden = dOutput
            hidden.update(repeating: 0, count: count)
            unit2.backward(dOutput: dResidual, dInput: hidden, batch: batch)
        }
        operation()
        recomputeInput()
        unit1.backward(dOutput: hidden, dInput: dInput, batch: batch)
    }
}

/// The auxiliary classifier of a module (see ``HeadKind``).
///
/// Slots for `1cnn` (input [N, C, H, W]): `head.conv` [N, C, H, W] (ReLU in place), `head.pool`
/// [N, C], `head.bn` [N, C] + mean/inverseStd [C], `head.logits` [N, classes]; `linear` keeps
/// only `head.pool` and `head.logits`. Gradient scratch: `head.grad.*` of the same shapes.
final class Head {
    let prefix: String
    let kind: HeadKind
    let inputShape: [Int]
    let classes: Int
    let conv: Conv2dGeometry

    /// The head's buffers in the prepared phase, resolved once by ``bind(_:)``; the `1cnn`
    /// members are nil for a linear head, the gradients nil when the phase does not train.
    private struct Bound {
        let pool, logits: UnsafeMutablePointer<Float>
        let linearWeight, linearBias: UnsafeMutablePointer<Float>
        let dLinearWeight, dLinearBias, dLogits, dPool: UnsafeMutablePointer<Float>?
        // 1cnn only: the conv output (grad.scratch0 in training), batch norm of the pooled features.
        let conv, bn, bnMean, bnInverseStd: UnsafeMutablePointer<Float>?
        let convWeight, convBias, gamma, beta, runningMean, runningVariance: UnsafeMutablePointer<Float>?
        let dConvWeight, dConvBias, dGamma, dBeta, dBN: UnsafeMutablePointer<Float>?
        let convolution: ConvolutionKernel?
    }
    private var bound: Bound!

    init(prefix: String, kind: HeadKind, inputShape: [Int], classes: Int) {
        self.prefix = prefix; self.kind = kind; self.inputShape = inputShape; self.classes = classes
        conv = Conv2dGeometry(inputChannels: inputShape[0], outputChannels: inputShape[0], kernelSize: 3,
                              inputHeight: inputShape[1], inputWidth: inputShape[2])
    }

    var channels: Int { inputShape[0] }
    var spatial: Int { inputShape[1] * inputShape[2] }
    var logitsTag: String { prefix + ".logits" }
    /// The logits [N, classes] of the last forward; their gradient [N, classes] (training phases).
    var logits: UnsafeMutablePointer<Float> { bound.logits }
    var logitsGradient: UnsafeMutablePointer<Float> { bound.dLogits! }

    var parameterSpecs: [ParameterSpec] {
        let c = channels
        var specs: [ParameterSpec] = []
        if kind == .oneCNN {
            specs += [ParameterSpec(name: prefix + ".conv.weight", shape: conv.weightShape, role: .weight),
                      ParameterSpec(name: prefix + ".conv.bias", shape: [c], role: .bias),
                      ParameterSpec(name: prefix + ".bn.weight", shape: [c], role: .scale),
                      ParameterSpec(name: prefix + ".bn.bias", shape: [c], role: .shift),
                      ParameterSpec(name: prefix + ".bn.runningMean", shape: [c], role: .runningMean),
                      ParameterSpec(name: prefix + ".bn.runningVariance", shape: [c], role: .runningVariance)]
        }
        specs += [ParameterSpec(name: prefix + ".linear.weight", shape: [classes, c], role: .weight),
                  ParameterSpec(name: prefix + ".linear.bias", shape: [classes], role: .bias)]
        return specs
    }

    /// In training, the conv output lives in the module's `grad.scratch0` (free from the head's
    /// forward until its backward, which follows at once), so it costs no slot of its own.
    func activationSpecs(batch: Int, training: Bool) -> [SlotSpec] {
        let c = channels
        var specs: [SlotSpec] = []
        if kind == .oneCNN {
            if !training { specs.append(SlotSpec(prefix + ".conv", .savedActivations, [batch] + inputShape)) }
            specs += [SlotSpec(prefix + ".bn", .savedActivations, [batch, c]),
                      SlotSpec(prefix + ".bn.mean", .savedActivations, [c]),
                      SlotSpec(prefix + ".bn.inverseStd", .savedActivations, [c])]
        }
        specs += [SlotSpec(prefix + ".pool", .savedActivations, [batch, c]),
                  SlotSpec(logitsTag, .savedActivations, [batch, classes])]
        return specs
    }

    func gradientSpecs(batch: Int) -> [SlotSpec] {
        let c = channels
        var specs = [SlotSpec(prefix + ".grad.logits", .workspace, [batch, classes]),
                     SlotSpec(prefix + ".grad.pool", .workspace, [batch, c])]
        if kind == .oneCNN {
            // The conv gradient [N, C, H, W] overwrites the conv output (grad.scratch0 in training).
            specs += [SlotSpec(prefix + ".grad.bn", .workspace, [batch, c])]
        }
        return specs
    }

    /// Resolves the head's slots, parameters and convolution in a prepared phase.
    func bind(_ context: LayerContext) {
        let training = context.preparedForTraining, cnn = kind == .oneCNN
        func cnnValue(_ name: String) -> UnsafeMutablePointer<Float>? { cnn ? context.value(prefix + name) : nil }
        func cnnGradient(_ name: String) -> UnsafeMutablePointer<Float>? { cnn ? context.gradient(prefix + name) : nil }
        func cnnSlot(_ tag: String) -> UnsafeMutablePointer<Float>? { cnn ? context.slot(tag) : nil }
        bound = Bound(pool: context.slot(prefix + ".pool"), logits: context.slot(logitsTag),
                      linearWeight: context.value(prefix + ".linear.weight"), linearBias: context.value(prefix + ".linear.bias"),
                      dLinearWeight: context.gradient(prefix + ".linear.weight"), dLinearBias: context.gradient(prefix + ".linear.bias"),
                      dLogits: training ? context.slot(prefix + ".grad.logits") : nil,
                      dPool: training ? context.slot(prefix + ".grad.pool") : nil,
                      conv: cnnSlot(prefix + ".conv"), bn: cnnSlot(prefix + ".bn"),
                      bnMean: cnnSlot(prefix + ".bn.mean"), bnInverseStd: cnnSlot(prefix + ".bn.inverseStd"),
                      convWeight: cnnValue(".conv.weight"), convBias: cnnValue(".conv.bias"), gamma: cnnValue(".bn.weight"),
                      beta: cnnValue(".bn.bias"), runningMean: cnnValue(".bn.runningMean"), runningVariance: cnnValue(".bn.runningVariance"),
                      dConvWeight: cnnGradient(".conv.weight"), dConvBias: cnnGradient(".conv.bias"),
                      dGamma: cnnGradient(".bn.weight"), dBeta: cnnGradient(".bn.bias"),
                      dBN: cnn && training ? context.slot(prefix + ".grad.bn") : nil,
                      convolution: cnn ? context.convolution(prefix, conv, hasBias: true) : nil)
        x = nil
    }

    func unbind() { bound = nil; x = nil }
    func attach(input: UnsafePointer<Float>) { x = input }

    /// Computes the logits into `head.logits`.
    func forward(_ x: UnsafePointer<Float>, batch: Int, training: Bool, momentum: Float) {
        self.x = x
        let c = channels
        let b = bound!
        var features = UnsafePointer(b.pool)
        if kind == .oneCNN {
            let conv = b.conv!
            b.convolution!.forward(output: conv, input: x, weight: b.convWeight!, bias: b.convBias!, batch: batch)
            reluForward(output: conv, input: conv, count: batch * c * spatial)
            globalAveragePoolForward(output: b.pool, input: conv, batch: batch, channels: c, spatial: spatial)
            KernelCounters.work += KernelWork.relu(count: batch * c * spatial) + KernelWork.pool(count: batch * c * spatial, outputs: batch * c)
            if training {
                batchNormForwardTraining(output: b.bn!, input: b.pool, weight: b.gamma!, bias: b.beta!,
                                         mean: b.bnMean!, inverseStd: b.bnInverseStd!,
                                         runningMean: b.runningMean!, runningVariance: b.runningVariance!,
                                         batch: batch, channels: c, spatial: 1, momentum: momentum)
            } else {
                batchNormForwardInference(output: b.bn!, input: b.pool, weight: b.gamma!, bias: b.beta!,
                                          runningMean: b.runningMean!, runningVariance: b.runningVariance!,
                                          batch: batch, channels: c, spatial: 1)
            }
            features = UnsafePointer(b.bn!)
        } else {
            globalAveragePoolForward(output: b.pool, input: x, batch: batch, channels: c, spatial: spatial)
            KernelCounters.work += KernelWork.pool(count: batch * c * spatial, outputs: batch * c)
        }
        linearForward(output: b.logits, input: features, weight: b.linearWeight, bias: b.linearBias,
                      batch: batch, inputFeatures: c, outputFeatures: classes)
    }

    /// The work ``forward(_:batch:training:momentum:)`` counts.
    func forwardWork(batch: Int, training: Bool) -> OperationWork {
        let c = channels
        var work = KernelWork.linearForward(batch: batch, inputs: c, outputs: classes)
            + KernelWork.pool(count: batch * c * spatial, outputs: batch * c)
        if kind == .oneCNN {
            work += KernelWork.convolutionForward(conv, batch: batch) + KernelWork.relu(count: batch * c * spatial)
                + (training ? KernelWork.batchNormTraining(batch: batch, channels: c, spatial: 1)
                            : KernelWork.batchNormInference(batch: batch, channels: c, spatial: 1))
        }
        return work
    }

    /// The work ``backward(dInput:batch:beforeInputGradient:)`` counts (the loss's own is the
    /// module's; `split`: the conv's gradients in two calls).
    func backwardWork(batch: Int, split: Bool = false) -> OperationWork {
        let c = channels
        let work = KernelWork.linearBackward(batch: batch, inputs: c, outputs: classes, inputGradient: true)
        guard kind == .oneCNN else { return work + KernelWork.pool(count: batch * c * spatial, outputs: batch * c) }
        let convolution = split
            ? KernelWork.convolutionBackward(conv, batch: batch, inputGradient: false, weightGradient: true)
                + KernelWork.convolutionBackward(conv, batch: batch, inputGradient: true, weightGradient: false)
            : KernelWork.convolutionBackward(conv, batch: batch, inputGradient: true, weightGradient: true)
        return work + KernelWork.batchNormBackward(batch: batch, channels: c, spatial: 1) + KernelWork.relu(count: batch * c * spatial)
            + convolution
    }

    /// Whether ``backward(dInput:batch:beforeInputGradient:)`` can split its conv's gradients.
    var splitsBackward: Bool { kind == .oneCNN }

    /// Backward from ``logitsGradient`` (already filled by the loss); accumulates into dInput.
    /// - beforeInputGradient: when given (a `1cnn` head in a packed arena), the conv's weight
    ///   gradient is computed first and its input gradient after calling it: the head's input is
    ///   dead by then, and dInput, which the caller zeroes in it, may lie where the input was.
    func backward(dInput: UnsafeMutablePointer<Float>, batch: Int, beforeInputGradient: (() -> Void)? = nil) {
        let c = channels
        let b = bound!
        let dFeatures = kind == .oneCNN ? b.dBN! : b.dPool!
        dFeatures.update(repeating: 0, count: batch * c)
        let features = kind == .oneCNN ? b.bn! : b.pool
        linearBackward(dInput: dFeatures, dWeight: b.dLinearWeight!, dBias: b.dLinearBias!, dOutput: b.dLogits!, input: features,
                       weight: b.linearWeight, batch: batch, inputFeatures: c, outputFeatures: classes)
        guard kind == .oneCNN else {
            globalAveragePoolBackward(dInput: dInput, dOutput: dFeatures, batch: batch, channels: c, spatial: spatial)
            KernelCounters.work += KernelWork.pool(count: batch * c * spatial, outputs: batch * c)
            return
        }
        let dPool = b.dPool!
        dPool.update(repeating: 0, count: batch * c)
        batchNormBackward(dInput: dPool, dWeight: b.dGamma!, dBias: b.dBeta!, dOutput: dFeatures, input: b.pool,
                          weight: b.gamma!, mean: b.bnMean!, inverseStd: b.bnInverseStd!, batch: batch, channels: c, spatial: 1)
        // dConv = ReLU'(conv) * dPool / S, written over the conv output itself (each element
        // depends only on its own activation), so the head needs no gradient buffer of its own.
        let dConv = b.conv!
        let scale = 1 / Float(spatial)
        for plane in 0..<(batch * c) {
            let g = dPool[plane] * scale
            let values = dConv + plane * spatial
            for i in 0..<spatial { values[i] = values[i] > 0 ? g : 0 }
        }
        KernelCounters.work += KernelWork.relu(count: batch * c * spatial)  // the mask pass reads and writes the conv output
        if let beforeInputGradient {
            b.convolution!.backward(dInput: nil, dWeight: b.dConvWeight!, dBias: b.dConvBias!, dOutput: dConv, input: x!,
                                    weight: b.convWeight!, batch: batch, splitsAsBoth: true)
            beforeInputGradient()
            b.convolution!.backward(dInput: dInput, dWeight: nil, dBias: nil, dOutput: dConv, input: x!,
                                    weight: b.convWeight!, batch: batch, splitsAsBoth: true)
        } else {
            b.convolution!.backward(dInput: dInput, dWeight: b.dConvWeight!, dBias: b.dConvBias!, dOutput: dConv, input: x!,
                                    weight: b.convWeight!, batch: batch)
        }
    }

    /// The input of the last forward call, read by backward.
    private var x: UnsafePointer<Float>?
}
