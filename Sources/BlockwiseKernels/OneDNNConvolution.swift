import CKernels
import Foundation

/// Which implementation runs the convolutions.
///
/// - `reference`: im2col + OpenBLAS sgemm in this package (Conv2d.swift); works in any workspace
///   down to one output pixel's column, and is what the gradient checks were written against.
/// - `onednn`: oneDNN's JIT convolutions (Debian `libdnnl-dev`, the library PyTorch's CPU
///   convolutions use) in its blocked layouts. The blocked copies of the chunk's tensors, the
///   primitive's scratchpad and its weight-gradient partials are carved from the same workspace
///   the reference path would use, so the memory plan does not change; when not even one image
///   fits in that workspace (tiny budgets), the call falls back to the reference path.
public enum ConvolutionEngine: String, CaseIterable, Codable, Sendable {
    case reference
    case onednn

    /// The engine the convolution kernels use (process-wide, like ``KernelThreads``).
    nonisolated(unsafe) public static var selected: ConvolutionEngine = .onednn
}

/// oneDNN primitives for a geometry and chunk size, created once and cached. Each chunk of
/// `images` images is copied into oneDNN's layout inside the caller's workspace, convolved, and
/// copied (or, for gradients, added) back into the N C H W tensors.
enum OneDNNConvolution {
    struct Key: Hashable {
        var geometry: Conv2dGeometry
        var images: Int
        var hasBias: Bool
    }

    struct PlanKey: Hashable {
        var geometry: Conv2dGeometry
        var batch: Int
        var hasBias: Bool
        var workspaceBytes: Int
    }

    /// How a batch is cut into chunks: `chunk` images at a time, the last call `remainder` images.
    struct Plan {
        var chunk: Int
        var primitives: OpaquePointer
        var remainderPrimitives: OpaquePointer?
    }

    nonisolated(unsafe) private static var primitives: [Key: OpaquePointer] = [:]
    nonisolated(unsafe) private static var plans: [PlanKey: Plan?] = [:]
    private static let lock = NSLock()

    /// Slack for aligning the workspace start to 64 bytes.
    static let alignmentSlack = 64

    /// Keys created by the current ``plan(_:batch:hasBias:workspaceCount:)`` search; the ones it
    /// does not choose are destroyed (each holds JIT code outside the ledger).
    nonisolated(unsafe) private static var createdBySearch: [Key] = []

    private static func conv(_ key: Key) -> OpaquePointer? {
        if let cached = primitives[key] { return cached }
        createdBySearch.append(key)
        let g = key.geometry
        guard let created = bw_dnnl_conv_create(Int32(key.images), Int32(g.inputChannels), Int32(g.outputChannels),
                                                Int32(g.kernelSize), Int32(g.stride), Int32(g.padding),
                                                Int32(g.inputHeight), Int32(g.inputWidth), key.hasBias ? 1 : 0) else { return nil }
        primitives[key] = created
        return created
    }

    /// The plan when oneDNN is the selected engine and the geometry and workspace allow it;
    /// nil when the reference path runs.
    static func selectedPlan(_ g: Conv2dGeometry, batch: Int, hasBias: Bool, workspaceCount: Int) -> Plan? {
        guard ConvolutionEngine.selected == .onednn, g.needsColumns, workspaceCount > 0 else { return nil }
        return plan(g, batch: batch, hasBias: hasBias, workspaceCount: workspaceCount)
    }

    private static func bytes(_ conv: OpaquePointer) -> Int { Int(bw_dnnl_conv_workspace_bytes(conv)) + alignmentSlack }

    /// The largest chunk of images whose oneDNN buffers fit in `workspaceCount` floats, or nil
    /// (not even one image fits, or oneDNN refused the geometry).
    static func plan(_ g: Conv2dGeometry, batch: Int, hasBias: Bool, workspaceCount: Int) -> Plan? {
        let available = workspaceCount * MemoryLayout<Float>.stride
        let key = PlanKey(geometry: g, batch: batch, hasBias: hasBias, workspaceBytes: available)
        lock.lock(); defer { lock.unlock() }
        if let cached = plans[key] { return cached }
        var result: Plan?
        createdBySearch = []
        defer {
            for key in createdBySearch where key.images != result?.chunk && key.images != batch % (result?.chunk ?? 1) {
                if let rejected = primitives.removeValue(forKey: key) { bw_dnnl_conv_destroy(rejected) }
            }
            createdBySearch = []
        }
        var images = batch
        while images >= 1 {
            guard let candidate = conv(Key(geometry: g, images: images, hasBias: hasBias)) else { break }
            let need = bytes(candidate)
            if need <= available {
                let remainder = batch % images
                let remainderPrimitives = remainder > 0 ? conv(Key(geometry: g, images: remainder, hasBias: hasBias)) : nil
                if remainder == 0 || (remainderPrimitives.map { bytes($0) <= available } ?? false) {
                    result = Plan(chunk: images, primitives: candidate, remainderPrimitives: remainderPrimitives)
                    break
                }
                images -= 1
                continue
            }
            if images == 1 { break }
            // The buffers grow about linearly with the images: jump close, then step down.
            images = max(1, min(images - 1, Int(Double(images) * Double(available) / Double(need))))
        }
        plans[key] = result
        return result
    }

    @inline(__always)
    private static func aligned(_ workspace: UnsafeMutablePointer<Float>) -> UnsafeMutableRawPointer {
        let address = UInt(bitPattern: workspace)
        return UnsafeMutableRawPointer(bitPattern: (address + 63) & ~63)!
    }

    /// Calls `run(primitives, firstImage, aligned workspace)` for each chunk of the batch and stops
    /// the process if oneDNN fails: its execution cannot fail once the primitives exist, short of
    /// a broken install (the message names the way around it).
    @inline(__always)
    private static func forEachChunk(_ plan: Plan, batch: Int, geometry g: Conv2dGeometry, workspace: UnsafeMutablePointer<Float>,
                                     _ run: (OpaquePointer, Int, UnsafeMutableRawPointer) -> Int32) {
        let memory = aligned(workspace)
        var start = 0
        while start < batch {
            let images = min(plan.chunk, batch - start)
            let status = run(images == plan.chunk ? plan.primitives : plan.remainderPrimitives!, start, memory)
            precondition(status == 0, "oneDNN convolution failed (status \(status)) for \(g); rerun with --conv-engine reference")
            start += images
        }
    }

    /// The forward pass, chunk by chunk.
    static func forward(_ plan: Plan, output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
                        weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?, batch: Int, geometry g: Conv2dGeometry,
                        workspace: UnsafeMutablePointer<Float>) {
        let inputStride = g.inputChannels * g.inputPixels, outputStride = g.outputChannels * g.outputPixels
        forEachChunk(plan, batch: batch, geometry: g, workspace: workspace) { primitives, start, memory in
            bw_dnnl_conv_forward(primitives, input + start * inputStride, weight, bias, output + start * outputStride, memory)
        }
    }

    /// Accumulates the input and weight gradients, chunk by chunk.
    static func backward(_ plan: Plan, dInput: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>?,
                         dOutput: UnsafePointer<Float>, input: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                         batch: Int, geometry g: Conv2dGeometry, workspace: UnsafeMutablePointer<Float>) {
        let inputStride = g.inputChannels * g.inputPixels, outputStride = g.outputChannels * g.outputPixels
        forEachChunk(plan, batch: batch, geometry: g, workspace: workspace) { primitives, start, memory in
            bw_dnnl_conv_backward(primitives, input + start * inputStride, weight, dOutput + start * outputStride,
                                  dInput.map { $0 + start * inputStride }, dWeight, memory)
        }
    }

    static func setThreads(_ count: Int) { bw_dnnl_set_threads(Int32(count)) }
}

extension Conv2dGeometry {
    /// Images per oneDNN call for this batch and workspace, or nil when the reference path runs
    /// (engine `reference`, or the workspace is too small for one image in oneDNN's layout).
    public func oneDNNChunk(batch: Int, hasBias: Bool, workspaceCount: Int) -> Int? {
        OneDNNConvolution.selectedPlan(self, batch: batch, hasBias: hasBias, workspaceCount: workspaceCount)?.chunk
    }
}
