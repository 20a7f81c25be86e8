/// Element-wise kernels: ReLU, residual add, scaling, and the mean of squares used by the
/// transport (kinetic-energy) term.

/// `output = max(input, 0)`; output may be the same buffer as input (in place).
public func reluForward(output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>, count: Int) {
    parallelRanges(count) { range in for i in range { output[i] = max(input[i], 0) } }
}

/// Accumulates `dInput += dOutput * (output > 0)`; reads the forward *output* (so the input
/// need not be kept). `dInput` may alias `dOutput` only if it was zero before (use
/// ``reluBackwardInPlace`` for that case).
public func reluBackward(dInput: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>,
                         output: UnsafePointer<Float>, count: Int) {
    for i in 0..<count where output[i] > 0 { dInput[i] += dOutput[i] }
}

/// `gradient *= (output > 0)` in place.
public func reluBackwardInPlace(gradient: UnsafeMutablePointer<Float>, output: UnsafePointer<Float>, count: Int) {
    parallelRanges(count) { range in for i in range { gradient[i] = output[i] > 0 ? gradient[i] : 0 } }
}

/// `output = a + b` (the residual add); output may alias a or b.
public func addForward(output: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) {
    for i in 0..<count { output[i] = a[i] + b[i] }
}

/// `target = max(target + source, 0)`: the residual add and the ReLU after it, in one pass.
public func addReLU(_ target: UnsafeMutablePointer<Float>, _ source: UnsafePointer<Float>, count: Int) {
    parallelRanges(count) { range in for i in range { target[i] = max(target[i] + source[i], 0) } }
}

/// `target += scale * source`.
public func accumulate(_ target: UnsafeMutablePointer<Float>, _ source: UnsafePointer<Float>, count: Int, scale: Float = 1) {
    parallelRanges(count) { range in
        if scale == 1 {
            for i in range { target[i] += source[i] }
        } else {
            for i in range { target[i] += scale * source[i] }
        }
    }
}

/// The mean of squares `mean(x^2)` over `count` elements, accumulated in Double.
public func meanSquare(_ input: UnsafePointer<Float>, count: Int) -> Double {
    var total: Double = 0
    var i = 0
    while i < count {
        let end = min(count, i + 4096)
        var partial: Float = 0
        for j in i..<end { partial += input[j] * input[j] }
        total += Double(partial)
        i = end
    }
    KernelCounters.work += KernelWork.meanSquare(count: count)
    return count > 0 ? total / Double(count) : 0
}

/// Backward of `weight * mean(x^2)`: accumulates `dInput += weight * 2 x / count`.
public func meanSquareBackward(dInput: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
                               count: Int, weight: Float) {
    let scale = 2 * weight / Float(count)
    for i in 0..<count { dInput[i] += scale * input[i] }
    KernelCounters.work += KernelWork.meanSquare(count: count)
}
