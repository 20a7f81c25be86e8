/// Softmax cross-entropy with label smoothing, averaged over the batch.
///
/// For smoothing epsilon and C classes the target is `q = (1 - epsilon) onehot(y) + epsilon / C`
/// and the loss `-(1/N) sum_n sum_c q_c log softmax(z_n)_c` (Szegedy et al. 2016).
public struct CrossEntropyResult: Equatable, Sendable {
    /// Mean loss over the batch.
    public var loss: Double
    /// Samples whose largest logit is at their label.
    public var correct: Int
}

/// Forward and backward together (the gradient is cheap once the softmax is known).
///
/// - Shapes: logits [N, C]; labels N class indices in 0..<C; dLogits [N, C] or nil.
/// - Backward: accumulates `dLogits += scale * (softmax - q) / N`.
public func softmaxCrossEntropy(logits: UnsafePointer<Float>, labels: UnsafePointer<Int32>,
                                batch: Int, classes: Int, labelSmoothing: Float = 0,
                                dLogits: UnsafeMutablePointer<Float>?, scale: Float = 1) -> CrossEntropyResult {
    var total: Double = 0
    var correct = 0
    let off = Double(labelSmoothing) / Double(classes)
    for n in 0..<batch {
        let z = logits + n * classes
        let label = Int(labels[n])
        precondition(label >= 0 && label < classes, "label \(label) outside 0..<\(classes)")
        var maximum = z[0]
        var argmax = 0
        for c in 1..<classes where z[c] > maximum { maximum = z[c]; argmax = c }
        if argmax == label { correct += 1 }
        var sum: Double = 0
        for c in 0..<classes { sum += Foundation.exp(Double(z[c] - maximum)) }
        let logSum = Foundation.log(sum) + Double(maximum)
        var loss: Double = 0
        for c in 0..<classes {
            let q = (c == label ? 1 - Double(labelSmoothing) : 0) + off
            if q != 0 { loss -= q * (Double(z[c]) - logSum) }
        }
        total += loss
        if let dLogits {
            let g = dLogits + n * classes
            let factor = Double(scale) / Double(batch)
            for c in 0..<classes {
                let p = Foundation.exp(Double(z[c]) - logSum)
                let q = (c == label ? 1 - Double(labelSmoothing) : 0) + off
                g[c] += Float(factor * (p - q))
            }
        }
    }
    KernelCounters.work += KernelWork.crossEntropy(batch: batch, classes: classes)
    return CrossEntropyResult(loss: total / Double(batch), correct: correct)
}

import Foundation
