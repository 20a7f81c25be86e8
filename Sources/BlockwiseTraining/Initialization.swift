import BlockwiseKernels

/// Orthogonal initialisation (Saxe et al. 2014), as in the paper's code: the weight viewed as
/// a [rows = C_out, columns = fan-in] matrix gets orthonormal rows (or columns, if rows >
/// columns), times `gain`. BatchNorm weights 1, biases 0, running mean 0, running variance 1.
public enum Initialization {
    /// An orthonormal [rows, columns] matrix scaled by `gain`, by modified Gram-Schmidt on a
    /// Gaussian matrix (Double precision).
    public static func orthogonal(rows: Int, columns: Int, gain: Float, generator: inout SeededGenerator) -> [Float] {
        let transpose = rows > columns
        let (r, c) = transpose ? (columns, rows) : (rows, columns)  // r <= c: orthonormal rows
        var matrix = (0..<(r * c)).map { _ in generator.nextNormal() }
        for i in 0..<r {
            for j in 0..<i {
                var dot = 0.0
                for k in 0..<c { dot += matrix[i * c + k] * matrix[j * c + k] }
                for k in 0..<c { matrix[i * c + k] -= dot * matrix[j * c + k] }
            }
            var norm = 0.0
            for k in 0..<c { norm += matrix[i * c + k] * matrix[i * c + k] }
            norm = norm.squareRoot()
            for k in 0..<c { matrix[i * c + k] /= norm }
        }
        var result = [Float](repeating: 0, count: rows * columns)
        for i in 0..<r {
            for k in 0..<c {
                let value = Float(matrix[i * c + k]) * gain
                if transpose { result[k * columns + i] = value } else { result[i * c + k] = value }
            }
        }
        return result
    }

    /// Initialises every parameter of a module from `seed` (independent of the other modules).
    public static func initialize(_ parameters: ParameterStore, gain: Float, seed: UInt64, module: Int) {
        var generator = SeededGenerator.stream(seed: seed, "init-module-\(module)")
        for parameter in parameters.all {
            switch parameter.role {
            case .weight:
                let rows = parameter.shape[0]
                let columns = parameter.shape.dropFirst().reduce(1, *)
                parameter.value.copy(from: orthogonal(rows: rows, columns: columns, gain: gain, generator: &generator))
            case .scale, .runningVariance:
                parameter.value.fill(1)
            case .bias, .shift, .runningMean:
                parameter.value.fill(0)
            }
        }
    }
}
