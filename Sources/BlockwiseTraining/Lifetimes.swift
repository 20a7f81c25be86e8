import BlockwiseKernels

/// One tensor of a phase as a rectangle of lifetime x bytes (issue 19): it must hold its values
/// from the start of operation `first` to the end of operation `last` (indices into
/// ``PhaseLifetimes/operations``), and may share memory with any tensor whose interval does not
/// meet its own.
public struct TensorLifetime: Codable, Sendable, Equatable {
    public var tag: String
    public var category: MemoryCategory
    public var bytes: Int
    public var first: Int
    public var last: Int

    public init(_ tag: String, _ category: MemoryCategory, bytes: Int, first: Int, last: Int) {
        precondition(first <= last, "\(tag): lifetime \(first)...\(last)")
        self.tag = tag; self.category = category; self.bytes = bytes; self.first = first; self.last = last
    }

    public func isLive(at operation: Int) -> Bool { first <= operation && operation <= last }
    public func meets(_ other: TensorLifetime) -> Bool { first <= other.last && other.first <= last }
}

/// The operations of one module phase in execution order, and the lifetime of every tensor of its
/// arena (saved activations and workspace; the parameters, their gradients and momentum and the
/// input batch live for the whole phase and are `resident`).
///
/// The shared gradient buffers of today's arena (`grad.a`/`grad.b`, sized for the largest layer,
/// and `grad.scratch0`) appear here as what they hold, each at its exact size: `grad.in.<layer>`
/// (a layer's input gradient, from its backward to the end of its producer's), `<block>.dResidual`
/// (the residual branch's gradient) and, in training, `<head>.conv`.
///
/// The liveness lower bound is the largest sum of bytes live at one operation: no placement of
/// these tensors, in any arena, needs less (``lowerBound``).
public struct PhaseLifetimes: Codable, Sendable, Equatable {
    public var operations: [String]
    public var tensors: [TensorLifetime]
    /// Bytes outside the arena, live for the whole phase (parameters, gradients, momentum, I/O).
    public var resident: Int

    /// Arena bytes live during each operation.
    public var liveBytes: [Int] {
        var live = [Int](repeating: 0, count: operations.count)
        for tensor in tensors { for op in tensor.first...tensor.last { live[op] += tensor.bytes } }
        return live
    }

    /// The operation at which the most arena bytes are live (the first such), and those bytes.
    public var peakOperation: (index: Int, bytes: Int) {
        let live = liveBytes
        let bytes = live.max() ?? 0
        return (live.firstIndex(of: bytes) ?? 0, bytes)
    }

    /// The smallest peak any arena can give the phase: resident bytes plus the most arena bytes
    /// live at one operation.
    public var lowerBound: Int { resident + peakOperation.bytes }

    /// The tensors live at operation `op`, largest first.
    public func live(at op: Int) -> [TensorLifetime] {
        tensors.filter { $0.isLive(at: op) }.sorted { $0.bytes != $1.bytes ? $0.bytes > $1.bytes : $0.tag < $1.tag }
    }
}

extension ModulePhase {
    /// The phase's operations and tensor lifetimes (training and streaming phases; nil for the
    /// resident procedures' phases, whose outputs and gradients cross modules).
    ///
    /// Operations, training: each encoder unit's forward, each block's `unit1`, `unit2` and `add`
    /// (shortcut and ReLU), the head's forward, `head.backward` (the loss and the head; in a
    /// packed arena `head.backward.input` after it), then per block in reverse `residual` (the
    /// output ReLU's and the transport term's gradients), `skip` (the input gradient through the
    /// skip path), `unit2` (packed: `unit2.backward.input` after it) and `unit1`, and each encoder
    /// unit in reverse (packed: `backward.input` after each but the first). Streaming: the forward operations only; the output and logits are read after
    /// the last one.
    ///
    /// `recomputingOutputs` (a packed training arena): the encoder units' and the blocks' unit1
    /// outputs live only until their last forward reader; the backward computes each again into
    /// `<unit>.out.recomputed`, from its reader's backward (the weight gradient) to its own (the mask).
    /// Each block keeps its output ReLU's mask as bits (`<block>.out.mask`), so its output lives
    /// only until its last reader as an input; unit2's input gradient (`<unit2>.backward.input`,
    /// into `<block>.dHidden`) and a `1cnn` head's (`<head>.backward.input`, into `grad.output`)
    /// are operations of their own, after the weight gradients, so that the output gradient a
    /// block receives dies once its skip path has read it.
    ///
    /// `recomputingConvolutions` (`--arena smallest`, with `recomputingOutputs`): the blocks that
    /// ``ResNetModule/reconvolves(block:encoderUnits:)`` keep their unit1 conv output only for
    /// their forward; `<unit1>.forward.again`, after unit2's batch-norm backward, computes it again
    /// into `<unit1>.conv.recomputed` (read until unit1's backward) and the output from it, for
    /// unit2's weight gradient.
    public func lifetimes(configuration: ModelConfiguration, recomputingOutputs: Bool = false,
                          recomputingConvolutions: Bool = false) -> PhaseLifetimes? {
        guard kind != .resident else { return nil }
        if placement != nil {
            // A packed phase's slots are the arena: its tensors are the slot-per-tensor phase's.
            return slotPerTensor(configuration: configuration).lifetimes(configuration: configuration, recomputingOutputs: options.training,
                                                                         recomputingConvolutions: options.recomputesConvolutions == true)
        }
        let recomputes = recomputingOutputs && options.training
        let (encoder, blocks, head) = ResNetModule.layers(configuration, index: module, hasHead: hasHead)
        let n = options.batch, training = options.training
        var operations: [String] = []
        func op(_ name: String) -> Int { operations.append(name); return operations.count - 1 }
        // Forward.
        let encoderForward = encoder.map { op($0.prefix + ".forward") }
        let blockForward = blocks.map { (unit1: op($0.unit1.prefix + ".forward"), unit2: op($0.unit2.prefix + ".forward"),
                                          add: op($0.prefix + ".add")) }
        let headForward = head.map { op($0.prefix + ".forward") }
        // Backward (training).
        var headBackward: Int? = nil, headInputGradient: Int? = nil
        var blockBackward: [(residual: Int, skip: Int, unit2: Int, unit1: Int)] = Array(repeating: (0, 0, 0, 0), count: blocks.count)
        // A packed arena computes unit2's input gradient (into `<block>.dHidden`) after its weight
        // gradient, and a `1cnn` head's (into the module's output gradient) after its own.
        var unit2InputGradient = [Int](repeating: 0, count: blocks.count)
        // `--arena smallest`: the operation that computes a block's unit1 conv again (nil: kept).
        var convolutionAgain = [Int?](repeating: nil, count: blocks.count)
        var encoderBackward = [Int](repeating: 0, count: encoder.count)
        var encoderInputGradient: [Int: Int] = [:]
        if training {
            headBackward = head.map { op($0.prefix + ".backward") }
            if recomputes, let head, head.splitsBackward { headInputGradient = op(head.prefix + ".backward.input") }
            for j in blocks.indices.reversed() {
                let b = blocks[j]
                let residual = op(b.prefix + ".residual.backward"), skip = op(b.prefix + ".skip.backward"), unit2 = op(b.unit2.prefix + ".backward")
                if recomputes && recomputingConvolutions && ResNetModule.reconvolves(block: j, encoderUnits: encoder.count) {
                    convolutionAgain[j] = op(b.unit1.prefix + ".forward.again")
                }
                unit2InputGradient[j] = recomputes ? op(b.unit2.prefix + ".backward.input") : unit2
                blockBackward[j] = (residual, skip, unit2, op(b.unit1.prefix + ".backward"))
            }
            for i in encoder.indices.reversed() {
                encoderBackward[i] = op(encoder[i].prefix + ".backward")
                // A packed arena computes an encoder unit's input gradient after its weight
                // gradient, once the input (computed again) is dead: an operation of its own.
                if recomputes && i > 0 { encoderInputGradient[i] = op(encoder[i].prefix + ".backward.input") }
            }
        }
        let end = operations.count - 1
        var interval: [String: (Int, Int)] = [:]
        // A layer's output is read by the next layer's forward (and, in training, by its backward,
        // for the weight gradient, and by its own backward's mask); the last output by the head,
        // and after a streaming forward by the caller.
        let layerCount = encoder.count + blocks.count
        func forwardOf(layer l: Int) -> Int { l < encoder.count ? encoderForward[l] : blockForward[l - encoder.count].unit1 }
        func backwardEnd(layer l: Int) -> Int {
            l < encoder.count ? encoderInputGradient[l] ?? encoderBackward[l] : blockBackward[l - encoder.count].unit1
        }
        // The last operation that reads layer l's output gradient. A block reads it at its residual
        // and (with an input gradient) its skip path; only without a packed arena does it hold the
        // block's hidden gradient after that, until unit1.
        func outputGradientEnd(layer l: Int) -> Int {
            guard recomputes, l >= encoder.count else { return backwardEnd(layer: l) }
            let b = blockBackward[l - encoder.count]
            return l > 0 || options.needsInputGradient ? b.skip : b.residual
        }
        func outputReaders(layer l: Int, written: Int) -> Int {
            if training { return l < encoder.count ? encoderBackward[l] : blockBackward[l - encoder.count].residual }
            if l + 1 < layerCount {
                let next = l + 1 - encoder.count
                // A block's `add` reads its input for the skip path.
                return next >= 0 ? blockForward[next].add : forwardOf(layer: l + 1)
            }
            return end
        }
        // The forward readers of layer l's output: the next layer's forward (a block's add reads its
        // input for the skip path too).
        func lastForwardReader(layer l: Int) -> Int {
            let next = l + 1 - encoder.count
            return next >= 0 ? blockForward[next].add : forwardOf(layer: l + 1)
        }
        var recomputed: [TensorLifetime] = []
        for (i, unit) in encoder.enumerated() {
            let f = encoderForward[i], b = training ? encoderBackward[i] : f
            for tag in [unit.prefix + ".conv", unit.prefix + ".bn.mean", unit.prefix + ".bn.inverseStd"] { interval[tag] = (f, b) }
            interval[unit.outputTag] = (f, outputReaders(layer: i, written: f))
            if recomputes {
                // The next layer's backward reads it as its input: an encoder unit's backward, or
                // block 0's unit1.
                interval[unit.outputTag] = (f, lastForwardReader(layer: i))
                // Read only by the next layer's weight gradient: the unit's own mask comes from
                // its conv output.
                let reader = i + 1 < encoder.count ? encoderBackward[i + 1] : blockBackward[0].unit1
                recomputed.append(TensorLifetime(unit.prefix + ".out.recomputed", .savedActivations,
                                                 bytes: n * unit.outputCount * MemoryLayout<Float>.stride, first: reader, last: reader))
            }
        }
        for (j, block) in blocks.enumerated() {
            let f = blockForward[j], b = blockBackward[j]
            for unit in [block.unit1, block.unit2] {
                let forward = unit === block.unit1 ? f.unit1 : f.unit2
                let backward = training ? (unit === block.unit1 ? b.unit1 : b.unit2) : forward
                for tag in [unit.prefix + ".conv", unit.prefix + ".bn.mean", unit.prefix + ".bn.inverseStd"] {
                    interval[tag] = (forward, backward)
                }
            }
            // unit1's output is unit2's input (its weight gradient) and unit1's own mask.
            interval[block.unit1.outputTag] = (f.unit1, training && !recomputes ? b.unit1 : f.unit2)
            if recomputes {
                let bytes = n * block.unit1.outputCount * MemoryLayout<Float>.stride
                if let again = convolutionAgain[j] {
                    // The forward's conv output feeds only its batch norm; the one computed again
                    // feeds the output's recomputation and unit1's batch-norm backward.
                    interval[block.unit1.prefix + ".conv"] = (f.unit1, f.unit1)
                    recomputed.append(TensorLifetime(block.unit1.prefix + ".conv.recomputed", .savedActivations,
                                                     bytes: bytes, first: again, last: b.unit1))
                    recomputed.append(TensorLifetime(block.unit1.prefix + ".out.recomputed", .savedActivations,
                                                     bytes: bytes, first: again, last: again))
                } else {
                    recomputed.append(TensorLifetime(block.unit1.prefix + ".out.recomputed", .savedActivations,
                                                     bytes: bytes, first: b.unit2, last: b.unit2))
                }
            }
            // unit2 writes r into the block's output, which the add turns into y.
            interval[block.outputTag] = (f.unit2, outputReaders(layer: encoder.count + j, written: f.unit2))
            if recomputes {
                // The residual gradient reads y's mask as bits (`<block>.out.mask`, from the add),
                // so y lives until its last reader as an input: the next block's unit1 backward,
                // or the head (its weight gradient; a linear head reads only its pooled features).
                let last: Int
                if j + 1 < blocks.count { last = blockBackward[j + 1].unit1 }
                else if let head, let hb = headBackward { last = head.splitsBackward ? hb : headForward! }
                else { last = end }
                interval[block.outputTag] = (f.unit2, last)
                recomputed.append(TensorLifetime(block.prefix + ".out.mask", .savedActivations,
                                                 bytes: reluMaskWords(count: n * block.outputCount) * 4, first: f.add, last: b.residual))
                recomputed.append(TensorLifetime(block.prefix + ".dHidden", .workspace,
                                                 bytes: n * block.unit1.outputCount * MemoryLayout<Float>.stride,
                                                 first: unit2InputGradient[j], last: b.unit1))
            }
        }
        if let head, let hf = headForward {
            let hb = headBackward ?? hf
            // The logits are read after a forward (the accuracy) and by the loss.
            for tag in [head.prefix + ".bn", head.prefix + ".bn.mean", head.prefix + ".bn.inverseStd", head.prefix + ".pool"] {
                interval[tag] = (hf, hb)
            }
            interval[head.logitsTag] = (hf, training ? hb : end)
            interval[head.prefix + ".conv"] = (hf, hb)
            for tag in [head.prefix + ".grad.logits", head.prefix + ".grad.pool", head.prefix + ".grad.bn"] where training {
                interval[tag] = (hb, hb)
            }
        }
        // Every convolution uses the im2col workspace.
        interval[ResNetModule.sharedWorkspaceTag] = (0, end)

        var tensors: [TensorLifetime] = []
        var resident = 0
        for slot in arenaSlots {
            if slot.category == .ioBuffers { resident += slot.bytes; continue }
            if ["grad.a", "grad.b", "grad.scratch0", "grad.output"].contains(slot.tag) { continue }
            guard let (first, last) = interval[slot.tag] else { preconditionFailure("no lifetime for slot \(slot.tag)") }
            tensors.append(TensorLifetime(slot.tag, slot.category, bytes: slot.bytes, first: first, last: last))
        }
        resident += parameterSlots.reduce(0) { $0 + $1.bytes }
        tensors += recomputed
        if training {
            // What today's shared gradient buffers hold, each at its size.
            func bytes(_ values: Int) -> Int { n * values * MemoryLayout<Float>.stride }
            if let head, let hb = headBackward, let hf = headForward {
                if head.kind == .oneCNN {
                    tensors.append(TensorLifetime(head.prefix + ".conv", .workspace, bytes: bytes(head.inputShape.reduce(1, *)),
                                                  first: hf, last: headInputGradient ?? hb))
                }
                // The module's output gradient: the head writes it; the last layer reads it, and
                // (without a packed arena) a block reuses it for its hidden gradient until its unit1.
                let lastLayer = layerCount - 1
                tensors.append(TensorLifetime("grad.output", .workspace, bytes: bytes(outputShapeValues(configuration)),
                                              first: headInputGradient ?? hb, last: outputGradientEnd(layer: lastLayer)))
            }
            for (j, block) in blocks.enumerated() {
                let b = blockBackward[j]
                // It holds unit2's conv gradient (in place) until unit2's input gradient has read it.
                tensors.append(TensorLifetime(block.prefix + ".dResidual", .workspace, bytes: bytes(block.outputCount),
                                              first: b.residual, last: unit2InputGradient[j]))
            }
            // Layer l's input gradient: zeroed as its backward starts, read by layer l - 1's
            // backward (a block reuses it for its hidden gradient). The first layer's is the
            // module's dInput (given by the caller, or not computed).
            for l in 1..<max(layerCount, 1) {
                let start = l < encoder.count ? encoderInputGradient[l] ?? encoderBackward[l] : blockBackward[l - encoder.count].residual
                let values = l < encoder.count ? encoder[l].geometry.inputChannels * encoder[l].geometry.inputPixels
                                               : blocks[l - encoder.count].inputShape.reduce(1, *)
                let name = l < encoder.count ? encoder[l].prefix : blocks[l - encoder.count].prefix
                tensors.append(TensorLifetime("grad.in." + name, .workspace, bytes: bytes(values), first: start, last: outputGradientEnd(layer: l - 1)))
            }
        }
        return PhaseLifetimes(operations: operations, tensors: tensors, resident: resident)
    }

    /// This phase with a slot per tensor (itself unless it is packed).
    public func slotPerTensor(configuration: ModelConfiguration) -> ModulePhase {
        guard placement != nil else { return self }
        var unpacked = options
        unpacked.packedArena = nil
        return ModulePhase(kind, configuration: configuration, module: module, hasHead: hasHead, unpacked)
    }

    private func outputShapeValues(_ configuration: ModelConfiguration) -> Int {
        configuration.moduleOutputShape(module).reduce(1, *)
    }
}
