import BlockwiseKernels

/// A named, trainable (or running-statistic) tensor of a module, with its gradient and
/// momentum buffer once the module is being trained.
public final class Parameter {
    public let name: String
    public let shape: [Int]
    public let role: ParameterRole
    /// Running statistics are state, not trained: no gradient, no momentum, no weight decay.
    public var isTrainable: Bool { role.isTrainable }
    public let value: Tensor
    public internal(set) var gradient: Tensor?
    public internal(set) var momentum: Tensor?

    init(name: String, shape: [Int], role: ParameterRole, ledger: MemoryLedger) throws {
        self.name = name
        self.shape = shape
        self.role = role
        self.value = try Tensor(shape, category: .parameters, tag: name, ledger: ledger)
    }

    public var byteCount: Int { value.byteCount }
}

/// The description of a parameter before it exists (for plans).
public struct ParameterSpec: Equatable, Sendable {
    public var name: String
    public var shape: [Int]
    public var role: ParameterRole
    public var isTrainable: Bool { role.isTrainable }
    public var bytes: Int { Tensor.byteCount(shape: shape) }

    public init(name: String, shape: [Int], role: ParameterRole) {
        self.name = name; self.shape = shape; self.role = role
    }
}

/// What a parameter is for, set where the layer declares it (its name no longer says it):
/// how it is initialised, and whether it is trained or a running statistic.
public enum ParameterRole: Equatable, Sendable {
    /// A convolution's or linear layer's weights (orthogonal initialisation).
    case weight
    /// A bias (zero).
    case bias
    /// Batch norm's scale gamma (one) and shift beta (zero).
    case scale, shift
    /// Batch norm's running statistics: state, not trained (mean zero, variance one).
    case runningMean, runningVariance

    public var isTrainable: Bool { self != .runningMean && self != .runningVariance }
}

/// The parameters of a module in a fixed order, with lookup by name.
public final class ParameterStore {
    public private(set) var all: [Parameter] = []
    private var byName: [String: Parameter] = [:]
    public let ledger: MemoryLedger

    public init(specs: [ParameterSpec], ledger: MemoryLedger) throws {
        self.ledger = ledger
        for spec in specs {
            let parameter = try Parameter(name: spec.name, shape: spec.shape, role: spec.role, ledger: ledger)
            all.append(parameter)
            byName[spec.name] = parameter
        }
    }

    public subscript(name: String) -> Parameter {
        guard let parameter = byName[name] else { preconditionFailure("no parameter \(name)") }
        return parameter
    }

    public var trainable: [Parameter] { all.filter(\.isTrainable) }

    /// Allocates gradients and momentum buffers (training state) for the trainable parameters.
    public func allocateTrainingState() throws {
        for parameter in trainable where parameter.gradient == nil {
            parameter.gradient = try Tensor(parameter.shape, category: .gradients, tag: parameter.name + ".grad", ledger: ledger)
            parameter.momentum = try Tensor(parameter.shape, category: .optimizerState, tag: parameter.name + ".momentum", ledger: ledger)
        }
    }

    /// Frees gradients and momentum (the module is frozen).
    public func releaseTrainingState() {
        for parameter in all {
            parameter.gradient = nil
            parameter.momentum = nil
        }
    }

    public func zeroGradients() {
        for parameter in trainable { parameter.gradient?.zero() }
    }

    /// Values of every parameter in order (for checkpoints and determinism tests).
    public func snapshot() -> [String: [Float]] {
        Dictionary(uniqueKeysWithValues: all.map { ($0.name, $0.value.toArray()) })
    }

    public func load(_ values: [String: [Float]]) {
        for parameter in all { if let v = values[parameter.name] { parameter.value.copy(from: v) } }
    }

    /// What of `specs` a saved state lacks or holds with the wrong number of values ("unit2.bn.weight
    /// missing", "head.linear.weight has 90 values, 160 expected"); empty when it is complete.
    /// - momentum: check the momentum of the trainable parameters instead of every value.
    public static func problems(loading values: [String: [Float]], specs: [ParameterSpec], momentum: Bool = false) -> [String] {
        var result: [String] = []
        for spec in specs where !momentum || spec.isTrainable {
            let expected = spec.shape.reduce(1, *)
            guard let saved = values[spec.name] else { result.append("\(spec.name) missing"); continue }
            if saved.count != expected { result.append("\(spec.name) has \(saved.count) values, \(expected) expected") }
        }
        return result
    }

    /// The specs of these parameters.
    public var specs: [ParameterSpec] { all.map { ParameterSpec(name: $0.name, shape: $0.shape, role: $0.role) } }

    /// Loads every parameter from `values`, which must hold each with its exact size.
    /// - Throws: ``TrainingError/incompleteCheckpoint`` listing what is missing or misshapen.
    public func loadChecked(_ values: [String: [Float]], module: Int, what: String) throws {
        let problems = ParameterStore.problems(loading: values, specs: specs)
        guard problems.isEmpty else { throw TrainingError.incompleteCheckpoint(module: module, what: what, problems: problems) }
        load(values)
    }

    /// Loads every trainable parameter's momentum from `values` (each must be there, exact size).
    public func loadMomentumChecked(_ values: [String: [Float]], module: Int, what: String) throws {
        let problems = ParameterStore.problems(loading: values, specs: specs, momentum: true)
        guard problems.isEmpty else { throw TrainingError.incompleteCheckpoint(module: module, what: what + " momentum", problems: problems) }
        for parameter in trainable { parameter.momentum?.copy(from: values[parameter.name]!) }
    }
}
