/// Batch normalisation over N C S tensors (S = H*W for BatchNorm2d, S = 1 for BatchNorm1d),
/// per channel C. Ioffe & Szegedy 2015; running statistics as in PyTorch
/// (`running = (1 - momentum) * running + momentum * batch`, unbiased batch variance).

/// Training-mode forward with batch statistics.
///
/// - Shapes: output, input [N, C, S]; weight (gamma), bias (beta) [C];
///   saved `mean`, `inverseStd` [C] (what backward needs); runningMean, runningVariance [C]
///   are updated in place when non-nil.
/// - relu: applies `max(y, 0)` in the same pass (a fused ReLU).
/// - outputSquares: when non-nil, [C] receives the sum over N and S of each channel's output
///   squared (before any ReLU), so a caller needing `mean(y^2)` skips another pass over y.
/// - Memory: none beyond its arguments. Cost: ~8 N C S flops.
public func batchNormForwardTraining(output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
                                     weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                                     mean: UnsafeMutablePointer<Float>, inverseStd: UnsafeMutablePointer<Float>,
                                     runningMean: UnsafeMutablePointer<Float>?, runningVariance: UnsafeMutablePointer<Float>?,
                                     batch: Int, channels: Int, spatial: Int,
                                     momentum: Float = 0.1, epsilon: Float = 1e-5,
                                     relu: Bool = false, outputSquares: UnsafeMutablePointer<Double>? = nil) {
    let count = batch * spatial
    let channelStride = spatial, imageStride = channels * spatial
    parallelRanges(channels, costPerItem: count) { range in
    for c in range {
        var sum: Double = 0
        for n in 0..<batch { sum += Double(planeSum(input + n * imageStride + c * channelStride, spatial)) }
        let mu = sum / Double(count)
        var squares: Double = 0
        for n in 0..<batch {
            squares += Double(planeSquaredDeviations(input + n * imageStride + c * channelStride, spatial, mean: Float(mu)))
        }
        let variance = squares / Double(count)
        let rstd = Float(1 / (variance + Double(epsilon)).squareRoot())
        mean[c] = Float(mu)
        inverseStd[c] = rstd
        if let runningMean, let runningVariance {
            let unbiased = count > 1 ? variance * Double(count) / Double(count - 1) : variance
            runningMean[c] = (1 - momentum) * runningMean[c] + momentum * Float(mu)
            runningVariance[c] = (1 - momentum) * runningVariance[c] + momentum * Float(unbiased)
        }
        let scale = weight[c] * rstd
        let shift = bias[c] - Float(mu) * scale
        var outputSquareSum: Double = 0
        for n in 0..<batch {
            let offset = n * imageStride + c * channelStride
            outputSquareSum += Double(planeAffine(output + offset, input + offset, spatial, scale: scale, shift: shift,
                                                  relu: relu, squares: outputSquares != nil))
        }
        outputSquares?[c] = outputSquareSum
    }
    }
    KernelCounters.work += KernelWork.batchNormTraining(batch: batch, channels: channels, spatial: spatial)
}

/// The training forward's output again, from its input and the batch statistics it saved:
/// `y = relu?(x * (gamma * rstd) + (beta - mean * gamma * rstd))`, the same arithmetic as
/// ``batchNormForwardTraining`` (so the same floats): a normalised output need not be kept
/// (`--arena packed`). Shapes as ``batchNormForwardTraining``.
public func batchNormRecomputeOutput(output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
                                     weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                                     mean: UnsafePointer<Float>, inverseStd: UnsafePointer<Float>,
                                     batch: Int, channels: Int, spatial: Int, relu: Bool) {
    let imageStride = channels * spatial
    parallelRanges(channels, costPerItem: batch * spatial) { range in
        for c in range {
            let scale = weight[c] * inverseStd[c]
            let shift = bias[c] - mean[c] * scale
            for n in 0..<batch {
                let offset = n * imageStride + c * spatial
                _ = planeAffine(output + offset, input + offset, spatial, scale: scale, shift: shift, relu: relu, squares: false)
            }
        }
    }
    KernelCounters.work += KernelWork.batchNormRecompute(count: batch * channels * spatial)
}

/// Eval-mode forward with running statistics: `y = (x - runningMean) / sqrt(runningVariance + eps) * gamma + beta`.
/// Shapes as ``batchNormForwardTraining``.
public func batchNormForwardInference(output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
                                      weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                                      runningMean: UnsafePointer<Float>, runningVariance: UnsafePointer<Float>,
                                      batch: Int, channels: Int, spatial: Int, epsilon: Float = 1e-5) {
    let imageStride = channels * spatial
    parallelRanges(channels, costPerItem: batch * spatial) { range in
    for c in range {
        let scale = weight[c] / (runningVariance[c] + epsilon).squareRoot()
        let shift = bias[c] - runningMean[c] * scale
        for n in 0..<batch {
            let source = input + n * imageStride + c * spatial
            let destination = output + n * imageStride + c * spatial
            for i in 0..<spatial { destination[i] = source[i] * scale + shift }
        }
    }
    }
    KernelCounters.work += KernelWork.batchNormInference(batch: batch, channels: channels, spatial: spatial)
}

/// Training-mode backward. Accumulates `dWeight += sum(dy * xhat)`, `dBias += sum(dy)`, and
/// `dInput +=` (or `dInput =` when `accumulate` is false) with
/// `dx = gamma * rstd / M * (M * dy - sum(dy) - xhat * sum(dy * xhat))`, M = N*S.
///
/// Recomputes `xhat` from `input` and the saved `mean`, `inverseStd` (no saved xhat tensor).
/// `dInput` may be nil (detached input). With `accumulate: false`, `dInput` may be the same
/// buffer as `dOutput` (in place): each channel's sums are taken before its gradients are written.
/// With `reluOutput` (the output of a ReLU that followed this batch norm), `dOutput` is the
/// gradient w.r.t. that ReLU's output and is masked by `reluOutput > 0` on the fly (a fused
/// ReLU backward; nothing is written to `dOutput` unless it is also `dInput`). With
/// `reluOfInputWithBias` (beta) instead, the ReLU output is computed again per plane from the
/// input and statistics (`--arena packed`: it is not kept), on the stack (one plane).
/// Memory: none beyond its arguments (and one plane of stack).
public func batchNormBackward(dInput: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>,
                              dBias: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>,
                              input: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                              mean: UnsafePointer<Float>, inverseStd: UnsafePointer<Float>,
                              batch: Int, channels: Int, spatial: Int, accumulate: Bool = true,
                              reluOutput: UnsafePointer<Float>? = nil, reluOfInputWithBias bias: UnsafePointer<Float>? = nil) {
    let count = batch * spatial
    let imageStride = channels * spatial
    parallelRanges(channels, costPerItem: count) { range in
    withUnsafeTemporaryAllocation(of: Float.self, capacity: bias == nil ? 1 : spatial) { plane in
    /// The ReLU output that masks the gradient: given, or (`bias`) this plane's computed again
    /// from the input, as ``batchNormRecomputeOutput`` does (the same floats, so the same mask).
    func mask(_ offset: Int, _ c: Int) -> UnsafePointer<Float>? {
        guard let bias else { return reluOutput.map { $0 + offset } }
        let scale = weight[c] * inverseStd[c]
        _ = planeAffine(plane.baseAddress!, input + offset, spatial, scale: scale, shift: bias[c] - mean[c] * scale, relu: true, squares: false)
        return UnsafePointer(plane.baseAddress!)
    }
    for c in range {
        let mu = mean[c], rstd = inverseStd[c]
        var sumDy: Double = 0, sumDyCentered: Double = 0
        for n in 0..<batch {
            let offset = n * imageStride + c * spatial
            let (a, b) = planeGradientSums(dOutput + offset, input + offset, mask: mask(offset, c), spatial, mean: mu)
            sumDy += Double(a)
            sumDyCentered += Double(b)
        }
        let sumDyXhat = Float(sumDyCentered) * rstd
        dBias[c] += Float(sumDy)
        dWeight[c] += sumDyXhat
        guard let dInput = dInput else { continue }
        // dx = gamma * rstd / M * (M * g - sum(g) - xhat * sum(g * xhat)), xhat = (x - mu) * rstd,
        // written as gScale * g + xScale * x + shift.
        let scale = weight[c] * rstd / Float(count)
        let gScale = scale * Float(count)
        let xScale = -scale * sumDyXhat * rstd
        let shift = -scale * Float(sumDy) - xScale * mu
        for n in 0..<batch {
            let offset = n * imageStride + c * spatial
            planeGradient(dInput + offset, dOutput + offset, input + offset, mask: mask(offset, c), spatial,
                          gScale: gScale, xScale: xScale, shift: shift, accumulate: accumulate)
        }
    }
    }
    }
    KernelCounters.work += KernelWork.batchNormBackward(batch: batch, channels: channels, spatial: spatial)
        // (The mask computed again: once for the sums, once for the gradient.)
        + (bias == nil ? .zero : 2 * KernelWork.batchNormRecompute(count: batch * channels * spatial))
}
