/// The work of kernel calls by operation class: FLOPs, and bytes moved (values read plus values
/// written, 4 bytes each). The device model times each class at its own rate, bounded by memory
/// bandwidth (a roofline per class); the run plan sums the same figures the kernels count.
public struct OperationWork: Codable, Equatable, Sendable {
    /// Spatial (3x3) convolutions, forward and backward.
    public var convolutionFlops = 0
    public var convolutionBytes = 0
    /// Matrix products outside the convolutions: the linear layers (and 1x1 convolutions).
    public var gemmFlops = 0
    public var gemmBytes = 0
    /// Element-wise and normalisation passes: batch norm, ReLU, pooling, the residual adds and
    /// shortcut, the transport term's gradient, the loss, the optimizer step.
    public var elementwiseFlops = 0
    public var elementwiseBytes = 0

    public init(convolutionFlops: Int = 0, convolutionBytes: Int = 0, gemmFlops: Int = 0, gemmBytes: Int = 0,
                elementwiseFlops: Int = 0, elementwiseBytes: Int = 0) {
        self.convolutionFlops = convolutionFlops; self.convolutionBytes = convolutionBytes
        self.gemmFlops = gemmFlops; self.gemmBytes = gemmBytes
        self.elementwiseFlops = elementwiseFlops; self.elementwiseBytes = elementwiseBytes
    }

    public static let zero = OperationWork()
    /// All FLOPs (what ``KernelCounters/flops`` reports).
    public var flops: Int { convolutionFlops + gemmFlops + elementwiseFlops }
    public var bytes: Int { convolutionBytes + gemmBytes + elementwiseBytes }

    public static func + (a: OperationWork, b: OperationWork) -> OperationWork {
        OperationWork(convolutionFlops: a.convolutionFlops + b.convolutionFlops, convolutionBytes: a.convolutionBytes + b.convolutionBytes,
                      gemmFlops: a.gemmFlops + b.gemmFlops, gemmBytes: a.gemmBytes + b.gemmBytes,
                      elementwiseFlops: a.elementwiseFlops + b.elementwiseFlops, elementwiseBytes: a.elementwiseBytes + b.elementwiseBytes)
    }
    public static func - (a: OperationWork, b: OperationWork) -> OperationWork { a + (-1) * b }
    public static func += (a: inout OperationWork, b: OperationWork) { a = a + b }
    public static func * (n: Int, w: OperationWork) -> OperationWork {
        OperationWork(convolutionFlops: n * w.convolutionFlops, convolutionBytes: n * w.convolutionBytes, gemmFlops: n * w.gemmFlops,
                      gemmBytes: n * w.gemmBytes, elementwiseFlops: n * w.elementwiseFlops, elementwiseBytes: n * w.elementwiseBytes)
    }
}

extension Sequence where Element == OperationWork {
    public func sum() -> OperationWork { reduce(.zero, +) }
}

/// The work each kernel counts into ``KernelCounters/work``, one formula per kernel. The kernels
/// add exactly these figures, and the run plan sums the same functions over the calls a run will
/// make, so planned and counted work are equal by construction. Bytes are the tensors a call reads
/// and writes once each (a pass that reads its input twice counts it twice); clearing a buffer is
/// not counted. The memory-bound passes without arithmetic (ReLU, pooling, the shortcut) count
/// bytes and no FLOPs; the layers that call them count them (``relu(count:)``...). Copies between
/// modules (the end-to-end techniques' and the frozen chain's carried buffers) are not counted.
public enum KernelWork {
    static func elementwise(flops: Int = 0, values: Int) -> OperationWork { OperationWork(elementwiseFlops: flops, elementwiseBytes: 4 * values) }

    /// conv2d forward: 2 N C_out (C_in k^2) H_out W_out FLOPs (the bias is not counted); reads the
    /// input and the weights, writes the output. A 1x1 convolution is a GEMM.
    public static func convolutionForward(_ g: Conv2dGeometry, batch: Int) -> OperationWork {
        let values = batch * g.inputChannels * g.inputPixels + g.weightShape.reduce(1, *) + batch * g.outputChannels * g.outputPixels
        return convolution(g, flops: g.forwardFlops(batch: batch), values: values)
    }
    /// conv2d backward: one forward's worth of FLOPs for the input gradient and one for the
    /// weights'; reads the output gradient, the input and the weights, writes the gradients asked for.
    public static func convolutionBackward(_ g: Conv2dGeometry, batch: Int, inputGradient: Bool, weightGradient: Bool) -> OperationWork {
        let input = batch * g.inputChannels * g.inputPixels, weights = g.weightShape.reduce(1, *)
        let values = batch * g.outputChannels * g.outputPixels + input + weights
            + (inputGradient ? input : 0) + (weightGradient ? weights : 0)
        return convolution(g, flops: g.forwardFlops(batch: batch) * ((inputGradient ? 1 : 0) + (weightGradient ? 1 : 0)), values: values)
    }
    static func convolution(_ g: Conv2dGeometry, flops: Int, values: Int) -> OperationWork {
        g.kernelSize == 1 ? OperationWork(gemmFlops: flops, gemmBytes: 4 * values) : OperationWork(convolutionFlops: flops, convolutionBytes: 4 * values)
    }
    /// Batch norm, training mode (statistics, normalisation, affine, running statistics): 8 FLOPs
    /// per element; the input is read twice (statistics, then normalisation), the output written.
    public static func batchNormTraining(batch: Int, channels: Int, spatial: Int) -> OperationWork {
        elementwise(flops: 8 * batch * spatial * channels, values: 3 * batch * spatial * channels)
    }
    /// Batch norm, eval mode (affine with the running statistics): 2 FLOPs per element, read and written once.
    public static func batchNormInference(batch: Int, channels: Int, spatial: Int) -> OperationWork {
        elementwise(flops: 2 * batch * channels * spatial, values: 2 * batch * channels * spatial)
    }
    /// Batch-norm backward (xhat recomputed, both sums, the input gradient): 10 FLOPs per element;
    /// reads the output gradient and the input twice, writes the input gradient.
    public static func batchNormBackward(batch: Int, channels: Int, spatial: Int) -> OperationWork {
        elementwise(flops: 10 * batch * spatial * channels, values: 5 * batch * spatial * channels)
    }
    /// mean(x^2) over `count` values (read once).
    public static func meanSquare(count: Int) -> OperationWork { elementwise(flops: 2 * count, values: count) }
    /// Linear forward: 2 N I O FLOPs; reads the input and the weights, writes the output.
    public static func linearForward(batch: Int, inputs: Int, outputs: Int) -> OperationWork {
        OperationWork(gemmFlops: 2 * batch * inputs * outputs, gemmBytes: 4 * (batch * inputs + inputs * outputs + batch * outputs))
    }
    /// Linear backward: the weights' gradient, and the input's when asked (2 N I O FLOPs each).
    public static func linearBackward(batch: Int, inputs: Int, outputs: Int, inputGradient: Bool) -> OperationWork {
        let values = batch * outputs + batch * inputs + inputs * outputs + inputs * outputs + (inputGradient ? batch * inputs : 0)
        return OperationWork(gemmFlops: (inputGradient ? 4 : 2) * batch * inputs * outputs, gemmBytes: 4 * values)
    }
    /// Softmax cross-entropy with its gradient: 6 FLOPs per logit; reads the logits, writes their gradient.
    public static func crossEntropy(batch: Int, classes: Int) -> OperationWork { elementwise(flops: 6 * batch * classes, values: 2 * batch * classes) }
    /// The residual branch's gradient at a block's output ReLU with the transport term: 5 FLOPs per
    /// element; reads the gradient, the output and the convolution's output, writes two gradients.
    public static func residualGradient(count: Int) -> OperationWork { elementwise(flops: 5 * count, values: 5 * count) }
    /// The same with the output ReLU's mask as bits (``maskedResidualGradient(_:_:mask:maskStart:x:_:transportScale:a:b:)``):
    /// the mask's words read instead of y.
    public static func residualGradientFromMask(count: Int) -> OperationWork {
        elementwise(flops: 5 * count, values: 4 * count + reluMaskWords(count: count))
    }
    /// ``packReLUMask(_:count:into:)``: `count` values read, their mask's words written.
    public static func reluMaskPack(count: Int) -> OperationWork { elementwise(values: count + reluMaskWords(count: count)) }
    /// An SGD momentum step: 6 FLOPs per trainable value; reads value, gradient and momentum, writes two.
    public static func optimizerStep(parameters: Int) -> OperationWork { elementwise(flops: 6 * parameters, values: 5 * parameters) }
    /// ReLU over `count` values (read and written).
    public static func relu(count: Int) -> OperationWork { elementwise(values: 2 * count) }
    /// ``batchNormRecomputeOutput``: one multiply-add per value, read and written.
    public static func batchNormRecompute(count: Int) -> OperationWork { elementwise(flops: 2 * count, values: 2 * count) }
    /// `target += source` (with a ReLU or not) over `count` values: two read, one written.
    public static func add(count: Int) -> OperationWork { elementwise(values: 3 * count) }
    /// Global average pooling of `count` values into `outputs`, or its backward (the reverse).
    public static func pool(count: Int, outputs: Int) -> OperationWork { elementwise(values: count + outputs) }
    /// The option-A shortcut's add: the input's `inputs` values read (2x2 averages), `outputs`
    /// values of the block's output read and written.
    public static func shortcutForward(inputs: Int, outputs: Int) -> OperationWork { elementwise(values: inputs + 2 * outputs) }
    /// Its backward: `outputs` gradient values read, `inputs` input-gradient values read and written.
    public static func shortcutBackward(inputs: Int, outputs: Int) -> OperationWork { elementwise(values: outputs + 2 * inputs) }
}
