import BlockwiseKernels

/// What a layer needs at run time: the module's parameters, its allocated slots, and the
/// shared im2col workspace.
struct LayerContext {
    let parameters: ParameterStore
    let arena: Arena
    let workspace: UnsafeMutablePointer<Float>
    let workspaceCount: Int
    /// Momentum of the batch-norm running statistics (PyTorch's 0.1; 1/t for a cumulative average).
    let batchNormMomentum: Float
    /// Whether the module was prepared for training (``ModuleMemoryOptions/training``): its
    /// arena then has the gradient slots, and the head's conv output lives in `grad.scratch0`.
    let preparedForTraining: Bool

    func value(_ name: String) -> UnsafeMutablePointer<Float> { parameters[name].value.data }
    func gradient(_ name: String) -> UnsafeMutablePointer<Float> { parameters[name].gradient!.data }
    func slot(_ tag: String) -> UnsafeMutablePointer<Float> { arena[tag].data }
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

    init(prefix: String, geometry: Conv2dGeometry, relu: Bool, outputTag: String? = nil) {
        self.prefix = prefix; self.geometry = geometry; self.relu = relu
        self.outputTag = outputTag ?? prefix + ".out"
        self.ownsOutput = outputTag == nil
    }

    var outputShape: [Int] { [geometry.outputChannels, geometry.outputHeight, geometry.outputWidth] }
    var outputCount: Int { outputShape.reduce(1, *) }

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

    /// The gradients at a residual block's output ReLU, in one pass: `dOutput = dOutput * (y > 0)`
    /// (dS, in place) and `dResidual = dS + weight * 2 r / count`, recomputing `r = BN(conv)` from
    /// the saved convolution output and batch statistics (so r itself is not kept).
    /// - Shapes: dOutput, reluOutput (y), dResidual [N, C_out, H_out, W_out].
    func residualGradients(dOutput: UnsafeMutablePointer<Float>, reluOutput: UnsafePointer<Float>,
                           dResidual: UnsafeMutablePointer<Float>, transportWeight: Float, batch: Int, _ context: LayerContext) {
        let c = geometry.outputChannels, spatial = geometry.outputPixels
        let conv = context.slot(prefix + ".conv"), mean = context.slot(prefix + ".bn.mean"), rstd = context.slot(prefix + ".bn.inverseStd")
        let gamma = context.value(prefix + ".bn.weight"), beta = context.value(prefix + ".bn.bias")
        let scale = 2 * transportWeight / Float(batch * c * spatial)
        parallelRanges(c, costPerItem: batch * spatial) { channels in
            for channel in channels {
                let a = gamma[channel] * rstd[channel], b = beta[channel] - mean[channel] * a
                for n in 0..<batch {
                    let offset = (n * c + channel) * spatial
                    let x = conv + offset, y = reluOutput + offset, g = dOutput + offset, r = dResidual + offset
                    maskedResidualGradient(g, r, y: y, x: x, spatial, transportScale: scale, a: a, b: b)
                }
            }
        }
        KernelCounters.flops += FlopCount.residualGradient(count: batch * c * spatial)
    }

    /// Forward; returns `mean(BN output^2)` (before the ReLU) when `measureSquares` is set, else 0.
    /// In training the ReLU and the squares are fused into batch norm's output pass.
    @discardableResult
    func forward(_ x: UnsafePointer<Float>, batch: Int, training: Bool, _ context: LayerContext, measureSquares: Bool = false) -> Double {
        input = x
        let conv = context.slot(prefix + ".conv"), out = context.slot(outputTag)
        conv2dForward(output: conv, input: x, weight: context.value(prefix + ".conv.weight"), bias: nil,
                      batch: batch, geometry: geometry, workspace: context.workspace, workspaceCount: context.workspaceCount)
        let c = geometry.outputChannels, spatial = geometry.outputPixels
        if training {
            return withUnsafeTemporaryAllocation(of: Double.self, capacity: c) { squares in
                batchNormForwardTraining(output: out, input: conv, weight: context.value(prefix + ".bn.weight"),
                                         bias: context.value(prefix + ".bn.bias"),
                                         mean: context.slot(prefix + ".bn.mean"), inverseStd: context.slot(prefix + ".bn.inverseStd"),
                                         runningMean: context.value(prefix + ".bn.runningMean"),
                                         runningVariance: context.value(prefix + ".bn.runningVariance"),
                                         batch: batch, channels: c, spatial: spatial, momentum: context.batchNormMomentum,
                                         relu: relu, outputSquares: measureSquares ? squares.baseAddress : nil)
                return measureSquares ? squares.reduce(0, +) / Double(batch * c * spatial) : 0
            }
        } else {
            batchNormForwardInference(output: out, input: conv, weight: context.value(prefix + ".bn.weight"),
                                      bias: context.value(prefix + ".bn.bias"),
                                      runningMean: context.value(prefix + ".bn.runningMean"),
                                      runningVariance: context.value(prefix + ".bn.runningVariance"),
                                      batch: batch, channels: c, spatial: spatial)
            let squares = measureSquares ? meanSquare(out, count: batch * outputCount) : 0
            if relu { reluForward(output: out, input: out, count: batch * outputCount) }
            return squares
        }
    }

    /// The FLOPs ``forward(_:batch:training:_:measureSquares:)`` counts.
    func forwardFlops(batch: Int, training: Bool, measureSquares: Bool = false) -> Int {
        let c = geometry.outputChannels, spatial = geometry.outputPixels
        return FlopCount.convolutionForward(geometry, batch: batch)
            + (training ? FlopCount.batchNormTraining(batch: batch, channels: c, spatial: spatial)
                        : FlopCount.batchNormInference(batch: batch, channels: c, spatial: spatial)
                          + (measureSquares ? FlopCount.meanSquare(count: batch * outputCount) : 0))
    }

    /// The FLOPs ``backward(dOutput:dInput:batch:_:)`` counts (`inputGradient`: dInput is given).
    func backwardFlops(batch: Int, inputGradient: Bool) -> Int {
        FlopCount.batchNormBackward(batch: batch, channels: geometry.outputChannels, spatial: geometry.outputPixels)
            + FlopCount.convolutionBackward(geometry, batch: batch, inputGradient: inputGradient, weightGradient: true)
    }

    /// - dOutput: gradient w.r.t. this unit's output [N, C_out, H_out, W_out]; overwritten in
    ///   place by the ReLU mask and then by the batch-norm gradient (no scratch buffer).
    /// - dInput: accumulated into (nil: the input is detached or is the data).
    func backward(dOutput: UnsafeMutablePointer<Float>, dInput: UnsafeMutablePointer<Float>?,
                  batch: Int, _ context: LayerContext) {
        batchNormBackward(dInput: dOutput, dWeight: context.gradient(prefix + ".bn.weight"),
                          dBias: context.gradient(prefix + ".bn.bias"), dOutput: dOutput,
                          input: context.slot(prefix + ".conv"), weight: context.value(prefix + ".bn.weight"),
                          mean: context.slot(prefix + ".bn.mean"), inverseStd: context.slot(prefix + ".bn.inverseStd"),
                          batch: batch, channels: geometry.outputChannels, spatial: geometry.outputPixels, accumulate: false,
                          reluOutput: relu ? context.slot(outputTag) : nil)
        conv2dBackward(dInput: dInput, dWeight: context.gradient(prefix + ".conv.weight"), dBias: nil,
                       dOutput: dOutput, input: input!, weight: context.value(prefix + ".conv.weight"),
                       batch: batch, geometry: geometry, workspace: context.workspace, workspaceCount: context.workspaceCount)
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
    /// Mean of r^2 of the last forward.
    private(set) var lastKineticEnergy: Double = 0

    var parameterSpecs: [ParameterSpec] { unit1.parameterSpecs + unit2.parameterSpecs }

    func activationSpecs(batch: Int) -> [SlotSpec] {
        unit1.activationSpecs(batch: batch) + unit2.activationSpecs(batch: batch)
            + [SlotSpec(outputTag, .savedActivations, [batch] + outputShape)]
    }

    func forward(_ x: UnsafePointer<Float>, batch: Int, training: Bool, _ context: LayerContext) {
        unit1.forward(x, batch: batch, training: training, context)
        lastKineticEnergy = unit2.forward(context.slot(unit1.outputTag), batch: batch, training: training, context, measureSquares: true)
        let y = context.slot(outputTag)  // holds r now
        let count = batch * outputCount
        if let shortcut {
            // y = r + shortcut(x): the shortcut adds into y channel by channel.
            shortcutForwardAdd(output: y, input: x, batch: batch, geometry: shortcut)
            reluForward(output: y, input: y, count: count)
        } else {
            addReLU(y, x, count: count)
        }
    }

    /// Mean of r^2 over the batch tensor (of the last forward).
    func kineticEnergy(batch: Int, _ context: LayerContext) -> Double { lastKineticEnergy }

    /// The FLOPs ``forward(_:batch:training:_:)`` counts.
    func forwardFlops(batch: Int, training: Bool) -> Int {
        unit1.forwardFlops(batch: batch, training: training) + unit2.forwardFlops(batch: batch, training: training, measureSquares: true)
    }

    /// The FLOPs ``backward(dOutput:dInput:transportWeight:scratch:batch:_:)`` counts.
    func backwardFlops(batch: Int, inputGradient: Bool) -> Int {
        FlopCount.residualGradient(count: batch * outputCount) + unit2.backwardFlops(batch: batch, inputGradient: true)
            + unit1.backwardFlops(batch: batch, inputGradient: inputGradient)
    }

    /// - dOutput: gradient w.r.t. y; overwritten.
    /// - dInput: accumulated into, or nil (detached input).
    /// - transportWeight: w in `w * mean(r^2)`; its gradient enters the residual branch only.
    /// - scratch: one buffer of at least N x (block output) floats.
    /// The dOutput buffer is reused for the hidden gradient once the skip path has consumed it.
    func backward(dOutput: UnsafeMutablePointer<Float>, dInput: UnsafeMutablePointer<Float>?, transportWeight: Float,
                  scratch: UnsafeMutablePointer<Float>, batch: Int, _ context: LayerContext) {
        let count = batch * outputCount
        let dResidual = scratch
        unit2.residualGradients(dOutput: dOutput, reluOutput: context.slot(outputTag), dResidual: dResidual,
                                transportWeight: transportWeight, batch: batch, context)
        if let dInput {
            if let shortcut {
                shortcutBackward(dInput: dInput, dOutput: dOutput, batch: batch, geometry: shortcut)
            } else {
                accumulate(dInput, dOutput, count: count)
            }
        }
        let dHidden = dOutput
        dHidden.update(repeating: 0, count: count)
        unit2.backward(dOutput: dResidual, dInput: dHidden, batch: batch, context)
        unit1.backward(dOutput: dHidden, dInput: dInput, batch: batch, context)
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

    init(prefix: String, kind: HeadKind, inputShape: [Int], classes: Int) {
        self.prefix = prefix; self.kind = kind; self.inputShape = inputShape; self.classes = classes
        conv = Conv2dGeometry(inputChannels: inputShape[0], outputChannels: inputShape[0], kernelSize: 3,
                              inputHeight: inputShape[1], inputWidth: inputShape[2])
    }

    var channels: Int { inputShape[0] }
    var spatial: Int { inputShape[1] * inputShape[2] }
    var logitsTag: String { prefix + ".logits" }

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

    /// Computes the logits into `head.logits`.
    func forward(_ x: UnsafePointer<Float>, batch: Int, training: Bool, _ context: LayerContext) {
        self.x = x
        let c = channels
        let pool = context.slot(prefix + ".pool")
        var features = UnsafePointer(pool)
        if kind == .oneCNN {
            let conv = context.slot(convTag(context))
            conv2dForward(output: conv, input: x, weight: context.value(prefix + ".conv.weight"),
                          bias: context.value(prefix + ".conv.bias"), batch: batch, geometry: self.conv,
                          workspace: context.workspace, workspaceCount: context.workspaceCount)
            reluForward(output: conv, input: conv, count: batch * c * spatial)
            globalAveragePoolForward(output: pool, input: conv, batch: batch, channels: c, spatial: spatial)
            let bn = context.slot(prefix + ".bn")
            if training {
                batchNormForwardTraining(output: bn, input: pool, weight: context.value(prefix + ".bn.weight"),
                                         bias: context.value(prefix + ".bn.bias"),
                                         mean: context.slot(prefix + ".bn.mean"), inverseStd: context.slot(prefix + ".bn.inverseStd"),
                                         runningMean: context.value(prefix + ".bn.runningMean"),
                                         runningVariance: context.value(prefix + ".bn.runningVariance"),
                                         batch: batch, channels: c, spatial: 1, momentum: context.batchNormMomentum)
            } else {
                batchNormForwardInference(output: bn, input: pool, weight: context.value(prefix + ".bn.weight"),
                                          bias: context.value(prefix + ".bn.bias"),
                                          runningMean: context.value(prefix + ".bn.runningMean"),
                                          runningVariance: context.value(prefix + ".bn.runningVariance"),
                                          batch: batch, channels: c, spatial: 1)
            }
            features = UnsafePointer(bn)
        } else {
            globalAveragePoolForward(output: pool, input: x, batch: batch, channels: c, spatial: spatial)
        }
        linearForward(output: context.slot(logitsTag), input: features, weight: context.value(prefix + ".linear.weight"),
                      bias: context.value(prefix + ".linear.bias"), batch: batch, inputFeatures: c, outputFeatures: classes)
    }

    /// The FLOPs ``forward(_:batch:training:_:)`` counts.
    func forwardFlops(batch: Int, training: Bool) -> Int {
        let c = channels
        var flops = FlopCount.linearForward(batch: batch, inputs: c, outputs: classes)
        if kind == .oneCNN {
            flops += FlopCount.convolutionForward(conv, batch: batch)
                + (training ? FlopCount.batchNormTraining(batch: batch, channels: c, spatial: 1)
                            : FlopCount.batchNormInference(batch: batch, channels: c, spatial: 1))
        }
        return flops
    }

    /// The FLOPs ``backward(dInput:batch:_:)`` counts (the loss's own are the module's).
    func backwardFlops(batch: Int) -> Int {
        let c = channels
        var flops = FlopCount.linearBackward(batch: batch, inputs: c, outputs: classes, inputGradient: true)
        if kind == .oneCNN {
            flops += FlopCount.batchNormBackward(batch: batch, channels: c, spatial: 1)
                + FlopCount.convolutionBackward(conv, batch: batch, inputGradient: true, weightGradient: true)
        }
        return flops
    }

    /// Backward from `head.grad.logits` (already filled by the loss); accumulates into dInput.
    func backward(dInput: UnsafeMutablePointer<Float>, batch: Int, _ context: LayerContext) {
        let c = channels
        let dLogits = context.slot(prefix + ".grad.logits")
        let dFeatures = context.slot(kind == .oneCNN ? prefix + ".grad.bn" : prefix + ".grad.pool")
        dFeatures.update(repeating: 0, count: batch * c)
        let features = context.slot(kind == .oneCNN ? prefix + ".bn" : prefix + ".pool")
        linearBackward(dInput: dFeatures, dWeight: context.gradient(prefix + ".linear.weight"),
                       dBias: context.gradient(prefix + ".linear.bias"), dOutput: dLogits, input: features,
                       weight: context.value(prefix + ".linear.weight"), batch: batch, inputFeatures: c, outputFeatures: classes)
        guard kind == .oneCNN else {
            globalAveragePoolBackward(dInput: dInput, dOutput: dFeatures, batch: batch, channels: c, spatial: spatial)
            return
        }
        let dPool = context.slot(prefix + ".grad.pool")
        dPool.update(repeating: 0, count: batch * c)
        batchNormBackward(dInput: dPool, dWeight: context.gradient(prefix + ".bn.weight"), dBias: context.gradient(prefix + ".bn.bias"),
                          dOutput: dFeatures, input: context.slot(prefix + ".pool"), weight: context.value(prefix + ".bn.weight"),
                          mean: context.slot(prefix + ".bn.mean"), inverseStd: context.slot(prefix + ".bn.inverseStd"),
                          batch: batch, channels: c, spatial: 1)
        // dConv = ReLU'(conv) * dPool / S, written over the conv output itself (each element
        // depends only on its own activation), so the head needs no gradient buffer of its own.
        let dConv = context.slot(convTag(context))
        let scale = 1 / Float(spatial)
        for plane in 0..<(batch * c) {
            let g = dPool[plane] * scale
            let values = dConv + plane * spatial
            for i in 0..<spatial { values[i] = values[i] > 0 ? g : 0 }
        }
        conv2dBackward(dInput: dInput, dWeight: context.gradient(prefix + ".conv.weight"), dBias: context.gradient(prefix + ".conv.bias"),
                       dOutput: dConv, input: x!, weight: context.value(prefix + ".conv.weight"), batch: batch, geometry: conv,
                       workspace: context.workspace, workspaceCount: context.workspaceCount)
    }

    /// The input of the last forward call, read by backward.
    private var x: UnsafePointer<Float>?

    func convTag(_ context: LayerContext) -> String {
        context.preparedForTraining ? "grad.scratch0" : prefix + ".conv"
    }
}
