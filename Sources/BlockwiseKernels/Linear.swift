import CBLAS

/// Fully connected layer `output = input x weight^T + bias`.
///
/// - Shapes: output [N, O], input [N, I], weight [O, I], bias [O] or nil.
/// - Cost: 2 N O I flops through `sgemm`.
public func linearForward(output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
                          weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                          batch: Int, inputFeatures: Int, outputFeatures: Int) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(batch), Int32(outputFeatures), Int32(inputFeatures),
                1, input, Int32(inputFeatures), weight, Int32(inputFeatures), 0, output, Int32(outputFeatures))
    if let bias {
        for n in 0..<batch {
            let row = output + n * outputFeatures
            for o in 0..<outputFeatures { row[o] += bias[o] }
        }
    }
    KernelCounters.work += KernelWork.linearForward(batch: batch, inputs: inputFeatures, outputs: outputFeatures)
}

/// Linear backward; accumulates `dInput += dOutput x weight`, `dWeight += dOutput^T x input`,
/// `dBias += sum over N of dOutput`. `dInput` may be nil.
public func linearBackward(dInput: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>,
                           dBias: UnsafeMutablePointer<Float>?, dOutput: UnsafePointer<Float>,
                           input: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                           batch: Int, inputFeatures: Int, outputFeatures: Int) {
    let n = Int32(batch), i = Int32(inputFeatures), o = Int32(outputFeatures)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, o, i, n, 1, dOutput, o, input, i, 1, dWeight, i)
    if let dInput {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, i, o, 1, dOutput, o, weight, i, 1, dInput, i)
    }
    if let dBias {
        for row in 0..<batch {
            let g = dOutput + row * outputFeatures
            for j in 0..<outputFeatures { dBias[j] += g[j] }
        }
    }
    KernelCounters.work += KernelWork.linearBackward(batch: batch, inputs: inputFeatures, outputs: outputFeatures, inputGradient: dInput != nil)
}
