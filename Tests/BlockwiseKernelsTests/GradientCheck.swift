import BlockwiseKernels
import XCTest

/// Finite-difference gradient checking for kernels.
///
/// The scalar checked is `L = sum_i out_i * R_i` for a fixed random projection R, so
/// `dL/dout = R`. For every input tensor (or up to `maxProbes` random elements of it) the
/// analytic gradient from backward is compared with the central difference
/// `(L(x + h) - L(x - h)) / 2h`, L accumulated in Double.
/// Tolerance: |numeric - analytic| <= absolute + relative * max(|numeric|, |analytic|).
struct GradientCheck {
    var step: Float = 1e-2
    var absolute: Double = 2e-3
    var relative: Double = 2e-2
    var maxProbes = 60
    var seed: UInt64 = 7

    /// - forward: inputs -> output values.
    /// - backward: (inputs, dOutput) -> gradient of every input (accumulated from zero).
    func check(_ name: String, inputs: [[Float]],
               forward: ([[Float]]) -> [Float],
               backward: ([[Float]], [Float]) -> [[Float]],
               file: StaticString = #filePath, line: UInt = #line) {
        var generator = SeededGenerator(seed: seed)
        let output = forward(inputs)
        let projection = (0..<output.count).map { _ in Float(generator.nextNormal()) }
        let analytic = backward(inputs, projection)
        XCTAssertEqual(analytic.count, inputs.count, "\(name): one gradient per input", file: file, line: line)
        func loss(_ values: [[Float]]) -> Double {
            zip(forward(values), projection).reduce(0) { $0 + Double($1.0) * Double($1.1) }
        }
        var worst = 0.0
        for (which, input) in inputs.enumerated() {
            var probes = Array(0..<input.count)
            if probes.count > maxProbes {
                probes.seededShuffle(using: &generator)
                probes = Array(probes.prefix(maxProbes))
            }
            for index in probes {
                var plus = inputs, minus = inputs
                plus[which][index] += step
                minus[which][index] -= step
                let numeric = (loss(plus) - loss(minus)) / (2 * Double(step))
                let exact = Double(analytic[which][index])
                let error = abs(numeric - exact)
                let allowed = absolute + relative * max(abs(numeric), abs(exact))
                worst = max(worst, error / allowed)
                if error > allowed {
                    XCTFail("\(name): input \(which) element \(index): numeric \(numeric) vs analytic \(exact) "
                            + "(error \(error) > \(allowed))", file: file, line: line)
                    return
                }
            }
        }
        print("gradient check \(name): worst error / tolerance = \(String(format: "%.3f", worst))")
    }
}

func randomArray(_ count: Int, seed: UInt64, scale: Float = 1) -> [Float] {
    var generator = SeededGenerator(seed: seed)
    return (0..<count).map { _ in Float(generator.nextNormal()) * scale }
}

extension Array where Element == Float {
    func withPointer<R>(_ body: (UnsafePointer<Float>) -> R) -> R { withUnsafeBufferPointer { body($0.baseAddress!) } }
}

func maxDifference(_ a: [Float], _ b: [Float]) -> Float {
    zip(a, b).map { abs($0 - $1) }.max() ?? 0
}
