/// One convolution layer as its module's phase runs it: the geometry, the workspace it may use,
/// and the engine, chosen when the phase is prepared rather than on every call.
///
/// The oneDNN chunking of a batch (``OneDNNConvolution/plan(_:batch:hasBias:workspaceCount:)``,
/// the function `plan` reports through ``Conv2dGeometry/oneDNNChunk(batch:hasBias:workspaceCount:)``)
/// is resolved for the first batch size seen and kept; a call at another size (the last batch
/// of an epoch) resolves that size once and keeps it in its place. A call therefore costs one
/// integer comparison, not a lock and a dictionary look-up.
///
/// - Memory: none of its own; oneDNN's blocked buffers are carved from `workspace`.
public final class ConvolutionKernel {
    public let geometry: Conv2dGeometry
    public let hasBias: Bool
    public let engine: ConvolutionEngine
    let workspace: UnsafeMutablePointer<Float>
    let workspaceCount: Int

    private struct Resolved {
        var batch: Int
        var plan: OneDNNConvolution.Plan?
    }
    private var forwardPlan: Resolved?
    private var backwardPlan: Resolved?

    /// - workspace: the module's im2col slot, `workspaceCount` floats.
    /// - engine: the engine to use (default: the process-wide selection when the kernel is made).
    public init(geometry: Conv2dGeometry, hasBias: Bool, workspace: UnsafeMutablePointer<Float>, workspaceCount: Int,
                engine: ConvolutionEngine = ConvolutionEngine.selected) {
        self.geometry = geometry; self.hasBias = hasBias; self.engine = engine
        self.workspace = workspace; self.workspaceCount = workspaceCount
    }

    private func resolve(batch: Int, hasBias: Bool) -> OneDNNConvolution.Plan? {
        guard engine == .onednn, geometry.needsColumns, workspaceCount > 0 else { return nil }
        return OneDNNConvolution.plan(geometry, batch: batch, hasBias: hasBias, workspaceCount: workspaceCount)
    }

    /// The plan at `batch`, from `cache` when it holds that batch; otherwise resolved and kept there.
    @inline(__always)
    private func oneDNN(_ cache: inout Resolved?, batch: Int, hasBias: Bool) -> OneDNNConvolution.Plan? {
        if let resolved = cache, resolved.batch == batch { return resolved.plan }
        let plan = resolve(batch: batch, hasBias: hasBias)
        cache = Resolved(batch: batch, plan: plan)
        return plan
    }

    private func forwardOneDNN(batch: Int) -> OneDNNConvolution.Plan? { oneDNN(&forwardPlan, batch: batch, hasBias: hasBias) }
    private func backwardOneDNN(batch: Int) -> OneDNNConvolution.Plan? { oneDNN(&backwardPlan, batch: batch, hasBias: false) }

    /// Images per oneDNN call at `batch` (forward, or the backward's gradients), nil on the
    /// reference path: what the module's plan lists for this layer.
    public func chunk(batch: Int, backward: Bool) -> Int? {
        (backward ? backwardOneDNN(batch: batch) : forwardOneDNN(batch: batch))?.chunk
    }

    /// `output = conv(input, weight) + bias` (see ``conv2dForward(output:input:weight:bias:batch:geometry:workspace:workspaceCount:)``).
    /// - Shapes: output [N, C_out, H_out, W_out], input [N, C_in, H, W], weight [C_out, C_in, k, k], bias [C_out] or nil.
    public func forward(output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                        bias: UnsafePointer<Float>?, batch: Int) {
        precondition((bias != nil) == hasBias, "the kernel was made \(hasBias ? "with" : "without") a bias")
        conv2dForward(output: output, input: input, weight: weight, bias: bias, batch: batch, geometry: geometry,
                      workspace: workspace, workspaceCount: workspaceCount, oneDNN: forwardOneDNN(batch: batch))
    }

    /// Accumulates dInput, dWeight and dBias (see ``conv2dBackward(dInput:dWeight:dBias:dOutput:input:weight:batch:geometry:workspace:workspaceCount:)``).
    /// `splitsAsBoth`: one gradient of a backward done in two calls, chunked as one call doing both.
    public func backward(dInput: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>?,
                         dBias: UnsafeMutablePointer<Float>?, dOutput: UnsafePointer<Float>,
                         input: UnsafePointer<Float>, weight: UnsafePointer<Float>, batch: Int, splitsAsBoth: Bool = false) {
        conv2dBackward(dInput: dInput, dWeight: dWeight, dBias: dBias, dOutput: dOutput, input: input, weight: weight,
                       batch: batch, geometry: geometry, workspace: workspace, workspaceCount: workspaceCount,
                       oneDNN: backwardOneDNN(batch: batch), splitsAsBoth: splitsAsBoth)
    }
}
