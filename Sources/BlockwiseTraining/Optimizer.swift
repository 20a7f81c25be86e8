import BlockwiseKernels
import Foundation

/// How weight decay enters SGD.
public enum WeightDecayMode: String, Codable, Sendable, CaseIterable {
    /// L2: `g += wd * w` before momentum (PyTorch's `SGD(weight_decay=)`, what the paper used).
    case l2
    /// Decoupled (Loshchilov & Hutter): `w -= lr * wd * w`, outside the momentum.
    case decoupled
}

/// Learning-rate schedule over a module's epochs.
public enum LearningRateSchedule: Equatable, Codable, Sendable {
    case constant
    /// Multiply by `factor` at each of the epoch fractions `milestones` (e.g. 0.5, 0.75).
    case step(milestones: [Double], factor: Double)
    /// Cosine from the base rate to 0 over the epochs.
    case cosine

    /// The rate for `epoch` (0-based) of `epochs`.
    public func rate(base: Double, epoch: Int, epochs: Int) -> Double {
        switch self {
        case .constant:
            return base
        case .step(let milestones, let factor):
            let fraction = Double(epoch) / Double(max(epochs, 1))
            return base * pow(factor, Double(milestones.filter { fraction >= $0 }.count))
        case .cosine:
            return base * 0.5 * (1 + cos(Double.pi * Double(epoch) / Double(max(epochs, 1))))
        }
    }

    /// Parses "constant", "cosine" or "step" (milestones 0.5, 0.75; factor 0.1).
    public init?(name: String) {
        switch name {
        case "constant": self = .constant
        case "cosine": self = .cosine
        case "step": self = .step(milestones: [0.5, 0.75], factor: 0.1)
        default: return nil
        }
    }

    public var name: String {
        switch self {
        case .constant: return "constant"
        case .cosine: return "cosine"
        case .step: return "step"
        }
    }
}

/// SGD with momentum (optionally Nesterov), PyTorch's formulation:
/// `v = mu v + g; w -= lr (nesterov ? g + mu v : v)`, weight decay per ``WeightDecayMode``
/// on every trainable parameter.
public struct SGD: Equatable, Codable, Sendable {
    public var learningRate: Double = 0.05
    public var momentum: Double = 0.9
    public var nesterov: Bool = false
    public var weightDecay: Double = 1e-4
    public var weightDecayMode: WeightDecayMode = .l2

    public init(learningRate: Double = 0.05, momentum: Double = 0.9, nesterov: Bool = false,
                weightDecay: Double = 1e-4, weightDecayMode: WeightDecayMode = .l2) {
        self.learningRate = learningRate; self.momentum = momentum; self.nesterov = nesterov
        self.weightDecay = weightDecay; self.weightDecayMode = weightDecayMode
    }

    /// Updates every trainable parameter from its gradient at rate `rate`. Memory: none
    /// (momentum buffers are the parameters' own). Cost: ~6 flops per parameter.
    public func step(_ parameters: ParameterStore, rate: Double) {
        let lr = Float(rate), mu = Float(momentum), wd = Float(weightDecay)
        for parameter in parameters.trainable {
            guard let gradient = parameter.gradient, let velocity = parameter.momentum else { continue }
            let w = parameter.value.data, g = gradient.data, v = velocity.data
            let count = parameter.value.count
            for i in 0..<count {
                var grad = g[i]
                if weightDecayMode == .l2 { grad += wd * w[i] }
                v[i] = mu * v[i] + grad
                let update = nesterov ? grad + mu * v[i] : v[i]
                if weightDecayMode == .decoupled { w[i] -= lr * wd * w[i] }
                w[i] -= lr * update
            }
            KernelCounters.work += KernelWork.optimizerStep(parameters: count)
        }
    }
}
