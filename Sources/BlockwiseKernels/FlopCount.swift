/// The floating-point operations each kernel counts into ``KernelCounters/flops``, one formula
/// per kernel. The kernels add exactly these figures, and the run plan sums the same functions
/// over the calls a run will make, so planned and counted FLOPs are equal by construction.
/// (Memory-bound passes that do no arithmetic worth counting — ReLU, pooling, copies, the
/// shortcut — count nothing.)
public enum FlopCount {
    /// conv2d forward: 2 N C_out (C_in k^2) H_out W_out (the bias is not counted).
    public static func convolutionForward(_ g: Conv2dGeometry, batch: Int) -> Int { g.forwardFlops(batch: batch) }
    /// conv2d backward: one forward's worth for the input gradient and one for the weights'.
    public static func convolutionBackward(_ g: Conv2dGeometry, batch: Int, inputGradient: Bool, weightGradient: Bool) -> Int {
        g.forwardFlops(batch: batch) * ((inputGradient ? 1 : 0) + (weightGradient ? 1 : 0))
    }
    /// Batch norm, training mode (statistics, normalisation, affine, running statistics): 8 per element.
    public static func batchNormTraining(batch: Int, channels: Int, spatial: Int) -> Int { 8 * batch * spatial * channels }
    /// Batch norm, eval mode (affine with the running statistics): 2 per element.
    public static func batchNormInference(batch: Int, channels: Int, spatial: Int) -> Int { 2 * batch * channels * spatial }
    /// Batch-norm backward (xhat recomputed, both sums, the input gradient): 10 per element.
    public static func batchNormBackward(batch: Int, channels: Int, spatial: Int) -> Int { 10 * batch * spatial * channels }
    /// mean(x^2) over `count` values, and its backward.
    public static func meanSquare(count: Int) -> Int { 2 * count }
    /// Linear forward: 2 N I O.
    public static func linearForward(batch: Int, inputs: Int, outputs: Int) -> Int { 2 * batch * inputs * outputs }
    /// Linear backward: weights' gradient, and the input's when asked (2 N I O each).
    public static func linearBackward(batch: Int, inputs: Int, outputs: Int, inputGradient: Bool) -> Int {
        (inputGradient ? 4 : 2) * batch * inputs * outputs
    }
    /// Softmax cross-entropy with its gradient: 6 per logit.
    public static func crossEntropy(batch: Int, classes: Int) -> Int { 6 * batch * classes }
    /// The residual branch's gradient at a block's output ReLU with the transport term: 5 per element.
    public static func residualGradient(count: Int) -> Int { 5 * count }
    /// An SGD momentum step: 6 per trainable value.
    public static func optimizerStep(parameters: Int) -> Int { 6 * parameters }
}
