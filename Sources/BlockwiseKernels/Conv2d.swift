import CBLAS
import Dispatch

/// The geometry of a 2-D convolution over N C H W tensors (square kernel, zero padding).
public struct Conv2dGeometry: Equatable, Hashable, Codable, Sendable {
    public var inputChannels: Int
    public var outputChannels: Int
    public var kernelSize: Int
    public var stride: Int
    public var padding: Int
    public var inputHeight: Int
    public var inputWidth: Int

    public init(inputChannels: Int, outputChannels: Int, kernelSize: Int, stride: Int = 1,
                padding: Int? = nil, inputHeight: Int, inputWidth: Int) {
        precondition(kernelSize >= 1 && stride >= 1)
        self.inputChannels = inputChannels
        self.outputChannels = outputChannels
        self.kernelSize = kernelSize
        self.stride = stride
        self.padding = padding ?? kernelSize / 2
        self.inputHeight = inputHeight
        self.inputWidth = inputWidth
    }

    public var outputHeight: Int { (inputHeight + 2 * padding - kernelSize) / stride + 1 }
    public var outputWidth: Int { (inputWidth + 2 * padding - kernelSize) / stride + 1 }
    public var inputPixels: Int { inputHeight * inputWidth }
    public var outputPixels: Int { outputHeight * outputWidth }
    /// Rows of the im2col matrix: C_in * k * k.
    public var columnRows: Int { inputChannels * kernelSize * kernelSize }
    /// Weight shape [C_out, C_in, k, k].
    public var weightShape: [Int] { [outputChannels, inputChannels, kernelSize, kernelSize] }

    /// A 1x1, stride-1, unpadded convolution reads its input directly as the column matrix.
    public var needsColumns: Bool { !(kernelSize == 1 && stride == 1 && padding == 0) }

    /// Floats of workspace the convolution uses for one whole image at a time.
    public var fullImageWorkspace: Int { needsColumns ? (columnRows + outputChannels) * outputPixels : 0 }

    /// Smallest workspace (floats) the convolution can run in: one output pixel's column and outputs.
    public var minimumWorkspace: Int { needsColumns ? columnRows + outputChannels : 0 }

    /// Workspace floats used for `batch` images given a bound in floats (`nil` = one whole
    /// image's worth). The chunk is the largest number of output pixels that fits.
    public func workspaceFloats(bound: Int?, batch: Int = 1) -> Int {
        guard needsColumns else { return 0 }
        guard let bound else { return fullImageWorkspace }
        let pixels = max(1, min(outputPixels * batch, bound / (columnRows + outputChannels)))
        return pixels * (columnRows + outputChannels)
    }

    /// Multiply-adds x 2 of one forward pass over `batch` images (backward-data and
    /// backward-weights cost the same each).
    public func forwardFlops(batch: Int) -> Int { 2 * batch * outputChannels * columnRows * outputPixels }
}

/// Output pixels per chunk for a workspace of `workspaceCount` floats. A chunk is a range
/// of the batch's flattened output pixels (image-major), so it may span several images:
/// one GEMM then covers them all, which keeps GEMMs large when channels are few.
@inline(__always)
private func chunkPixels(_ geometry: Conv2dGeometry, workspaceCount: Int, batch: Int) -> Int {
    precondition(workspaceCount >= geometry.minimumWorkspace,
                 "conv workspace of \(workspaceCount) floats is below the minimum \(geometry.minimumWorkspace)")
    return max(1, min(geometry.outputPixels * batch, workspaceCount / geometry.floatsPerPixel))
}

extension Conv2dGeometry {
    /// Workspace floats per output pixel of a chunk: its im2col column (C_in*k*k) plus its
    /// gathered output or output-gradient values (C_out).
    public var floatsPerPixel: Int { columnRows + outputChannels }
}

/// Pixels of the chunk starting at `start`: chunks smaller than an image never cross an image's
/// end (so their GEMM reads and writes the N C H W tensors in place); larger ones are whole images.
@inline(__always)
private func chunkCount(start: Int, chunk: Int, total: Int, pixelsPerImage: Int) -> Int {
    if chunk < pixelsPerImage { return min(chunk, pixelsPerImage - start % pixelsPerImage) }
    return min((chunk / pixelsPerImage) * pixelsPerImage, total - start)
}

/// Calls `body(image, firstPixel, pixels, offsetInChunk)` for each image segment of the
/// chunk of flattened output pixels [start, start + count).
@inline(__always)
private func forEachSegment(start: Int, count: Int, pixelsPerImage: Int,
                            _ body: (_ image: Int, _ first: Int, _ pixels: Int, _ offset: Int) -> Void) {
    var position = start
    let end = start + count
    while position < end {
        let image = position / pixelsPerImage
        let first = position % pixelsPerImage
        let pixels = min(pixelsPerImage - first, end - position)
        body(image, first, pixels, position - start)
        position += pixels
    }
}

/// Writes the columns of output pixels [first, first + pixels) of one image into `columns`,
/// a [C_in*k*k, pixels] matrix whose rows are `rowStride` apart (zero where the kernel reads padding).
@inline(__always)
func im2col(_ columns: UnsafeMutablePointer<Float>, rowStride: Int, image: UnsafePointer<Float>,
            geometry g: Conv2dGeometry, first: Int, pixels: Int, threaded: Bool) {
    forEachChannelRange(g.inputChannels, work: threaded ? g.columnRows * pixels : 0) { channels in
        im2colChannels(columns, rowStride: rowStride, image: image, geometry: g, first: first, pixels: pixels, channels: channels)
    }
}

/// Splits input channels over the kernel threads when the work is large enough to pay for it
/// (each thread writes distinct rows of the column matrix, or distinct input planes).
@inline(__always)
func forEachChannelRange(_ channels: Int, work: Int, _ body: (Range<Int>) -> Void) {
    let threads = KernelThreads.count
    guard threads > 1, channels > 1, work >= 32_768 else { body(0..<channels); return }
    let parts = min(threads, channels)
    parallelParts(parts) { part in
        body((part * channels / parts)..<((part + 1) * channels / parts))
    }
}

@inline(__always)
func im2colChannels(_ columns: UnsafeMutablePointer<Float>, rowStride: Int, image: UnsafePointer<Float>,
                    geometry g: Conv2dGeometry, first: Int, pixels: Int, channels: Range<Int>) {
    let k = g.kernelSize, s = g.stride, p = g.padding
    let h = g.inputHeight, w = g.inputWidth, ow = g.outputWidth
    for channel in channels {
        let plane = image + channel * h * w
        for ky in 0..<k {
            for kx in 0..<k {
                let row = columns + ((channel * k + ky) * k + kx) * rowStride
                var pixel = first
                var column = 0
                while column < pixels {
                    let oy = pixel / ow
                    let ox0 = pixel % ow
                    let run = min(ow - ox0, pixels - column)  // pixels left in this output row
                    let iy = oy * s - p + ky
                    let destination = row + column
                    if iy < 0 || iy >= h {
                        destination.update(repeating: 0, count: run)
                    } else {
                        let source = plane + iy * w
                        if s == 1 {
                            // ix = ox - p + kx; valid range of ox: [p - kx, w + p - kx)
                            let ix0 = ox0 - p + kx
                            var j = 0
                            while j < run && ix0 + j < 0 { destination[j] = 0; j += 1 }
                            let validEnd = min(run, w - ix0)
                            if validEnd > j {
                                (destination + j).update(from: source + ix0 + j, count: validEnd - j)
                                j = validEnd
                            }
                            while j < run { destination[j] = 0; j += 1 }
                        } else {
                            for j in 0..<run {
                                let ix = (ox0 + j) * s - p + kx
                                destination[j] = (ix >= 0 && ix < w) ? source[ix] : 0
                            }
                        }
                    }
                    column += run
                    pixel += run
                }
            }
        }
    }
}

/// Adds the columns of output pixels [first, first + pixels) back into one image's gradient
/// (the adjoint of ``im2col``).
@inline(__always)
func col2imAdd(_ image: UnsafeMutablePointer<Float>, columns: UnsafePointer<Float>, rowStride: Int,
               geometry g: Conv2dGeometry, first: Int, pixels: Int, threaded: Bool) {
    forEachChannelRange(g.inputChannels, work: threaded ? g.columnRows * pixels : 0) { channels in
        col2imAddChannels(image, columns: columns, rowStride: rowStride, geometry: g, first: first, pixels: pixels, channels: channels)
    }
}

@inline(__always)
func col2imAddChannels(_ image: UnsafeMutablePointer<Float>, columns: UnsafePointer<Float>, rowStride: Int,
                       geometry g: Conv2dGeometry, first: Int, pixels: Int, channels: Range<Int>) {
    let k = g.kernelSize, s = g.stride, p = g.padding
    let h = g.inputHeight, w = g.inputWidth, ow = g.outputWidth
    for channel in channels {
        let plane = image + channel * h * w
        for ky in 0..<k {
            for kx in 0..<k {
                let row = columns + ((channel * k + ky) * k + kx) * rowStride
                var pixel = first
                var column = 0
                while column < pixels {
                    let oy = pixel / ow
                    let ox0 = pixel % ow
                    let run = min(ow - ox0, pixels - column)
                    let iy = oy * s - p + ky
                    if iy >= 0 && iy < h {
                        let target = plane + iy * w
                        let source = row + column
                        if s == 1 {
                            // ix = ox0 + j - p + kx, valid for j in [lo, hi)
                            let shift = ox0 - p + kx
                            let lo = max(0, -shift), hi = min(run, w - shift)
                            if hi > lo {
                                let t = target + shift
                                for j in lo..<hi { t[j] += source[j] }
                            }
                        } else {
                            for j in 0..<run {
                                let ix = (ox0 + j) * s - p + kx
                                if ix >= 0 && ix < w { target[ix] += source[j] }
                            }
                        }
                    }
                    column += run
                    pixel += run
                }
            }
        }
    }
}

/// Convolution forward: `output = conv(input, weight) + bias`.
///
/// - Shapes: output [N, C_out, H_out, W_out], input [N, C_in, H, W], weight [C_out, C_in, k, k],
///   bias [C_out] or nil.
/// - Memory: `workspace` holds, for a chunk of the batch's output pixels, their im2col columns
///   and their outputs before they are scattered to N C H W; it needs at least
///   ``Conv2dGeometry/minimumWorkspace`` floats, and the chunk is as many pixels as fit
///   (so the bound is a parameter, not N x C x 9 x H x W).
/// - Cost: ``Conv2dGeometry/forwardFlops(batch:)`` through CBLAS `sgemm`.
public func conv2dForward(output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
                          weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                          batch: Int, geometry g: Conv2dGeometry,
                          workspace: UnsafeMutablePointer<Float>?, workspaceCount: Int) {
    let plan = workspace == nil ? nil : OneDNNConvolution.selectedPlan(g, batch: batch, hasBias: bias != nil, workspaceCount: workspaceCount)
    conv2dForward(output: output, input: input, weight: weight, bias: bias, batch: batch, geometry: g,
                  workspace: workspace, workspaceCount: workspaceCount, oneDNN: plan)
}

/// ``conv2dForward(output:input:weight:bias:batch:geometry:workspace:workspaceCount:)`` with the
/// engine already chosen: oneDNN in `plan`'s chunks, or the reference path when `plan` is nil.
func conv2dForward(output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
                   weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                   batch: Int, geometry g: Conv2dGeometry,
                   workspace: UnsafeMutablePointer<Float>?, workspaceCount: Int, oneDNN plan: OneDNNConvolution.Plan?) {
    if let workspace, let plan {
        OneDNNConvolution.forward(plan, output: output, input: input, weight: weight, bias: bias, batch: batch,
                                  geometry: g, workspace: workspace)
        KernelCounters.work += KernelWork.convolutionForward(g, batch: batch)
        return
    }
    let half = workspaceCount / 2
    if KernelThreads.count > 1 && batch >= 2 && (!g.needsColumns || half >= g.minimumWorkspace) {
        // Two halves of the batch at once, each with half the workspace and single-threaded sgemm.
        let split = batch / 2
        let inputStride = g.inputChannels * g.inputPixels, outputStride = g.outputChannels * g.outputPixels
        parallelParts(2) { part in
            let start = part == 0 ? 0 : split
            conv2dForwardSerial(output: output + start * outputStride, input: input + start * inputStride, weight: weight, bias: bias,
                                batch: part == 0 ? split : batch - split, geometry: g,
                                workspace: workspace.map { $0 + part * half }, workspaceCount: half, threaded: false)
        }
    } else {
        conv2dForwardSerial(output: output, input: input, weight: weight, bias: bias, batch: batch, geometry: g,
                            workspace: workspace, workspaceCount: workspaceCount, threaded: KernelThreads.count > 1)
    }
    KernelCounters.work += KernelWork.convolutionForward(g, batch: batch)
}

func conv2dForwardSerial(output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
                         weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                         batch: Int, geometry g: Conv2dGeometry,
                         workspace: UnsafeMutablePointer<Float>?, workspaceCount: Int, threaded: Bool) {
    let m = g.outputChannels, kk = g.columnRows, opix = g.outputPixels
    let inputStride = g.inputChannels * g.inputPixels, outputStride = m * opix
    if !g.needsColumns {
        for n in 0..<batch {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(opix), Int32(kk),
                        1, weight, Int32(kk), input + n * inputStride, Int32(opix), 0, output + n * outputStride, Int32(opix))
        }
    } else {
        let chunk = chunkPixels(g, workspaceCount: workspaceCount, batch: batch)
        let columns = workspace!
        let gathered = columns + kk * chunk
        var start = 0
        let total = batch * opix
        while start < total {
            let count = chunkCount(start: start, chunk: chunk, total: total, pixelsPerImage: opix)
            forEachSegment(start: start, count: count, pixelsPerImage: opix) { n, first, pixels, offset in
                im2col(columns + offset, rowStride: count, image: input + n * inputStride, geometry: g, first: first, pixels: pixels, threaded: threaded)
            }
            if count <= opix {
                // Within one image: the output rows are `opix` apart, write straight into them.
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(count), Int32(kk),
                            1, weight, Int32(kk), columns, Int32(count), 0,
                            output + (start / opix) * outputStride + start % opix, Int32(opix))
            } else {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(count), Int32(kk),
                            1, weight, Int32(kk), columns, Int32(count), 0, gathered, Int32(count))
                forEachSegment(start: start, count: count, pixelsPerImage: opix) { n, first, pixels, offset in
                    for c in 0..<m {
                        (output + n * outputStride + c * opix + first).update(from: gathered + c * count + offset, count: pixels)
                    }
                }
            }
            start += count
        }
    }
    if let bias {
        for n in 0..<batch {
            for c in 0..<m {
                let plane = output + n * outputStride + c * opix
                let b = bias[c]
                for i in 0..<opix { plane[i] += b }
            }
        }
    }
}

/// Convolution backward. Accumulates (adds into) every gradient it is given:
/// `dInput += conv_transpose(dOutput, weight)`, `dWeight += dOutput x columns(input)^T`,
/// `dBias += sum of dOutput over N, H, W`.
///
/// - Shapes: as ``conv2dForward``; `dInput` like input (nil to skip, e.g. for a detached input),
///   `dWeight` like weight (nil to skip: backward-data only), `dBias` [C_out] or nil.
/// - Memory: the same bounded `workspace` as forward (gathered output gradients and columns,
///   the columns reused for the column gradients).
/// - Cost: 2x ``Conv2dGeometry/forwardFlops(batch:)`` (1x without dInput or dWeight).
public func conv2dBackward(dInput: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>?,
                           dBias: UnsafeMutablePointer<Float>?, dOutput: UnsafePointer<Float>,
                           input: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                           batch: Int, geometry g: Conv2dGeometry,
                           workspace: UnsafeMutablePointer<Float>?, workspaceCount: Int, splitsAsBoth: Bool = false) {
    let plan = workspace == nil || (dInput == nil && dWeight == nil) ? nil
        : OneDNNConvolution.selectedPlan(g, batch: batch, hasBias: false, workspaceCount: workspaceCount)
    conv2dBackward(dInput: dInput, dWeight: dWeight, dBias: dBias, dOutput: dOutput, input: input, weight: weight, batch: batch,
                   geometry: g, workspace: workspace, workspaceCount: workspaceCount, oneDNN: plan, splitsAsBoth: splitsAsBoth)
}

/// ``conv2dBackward(dInput:dWeight:dBias:dOutput:input:weight:batch:geometry:workspace:workspaceCount:)``
/// with the engine already chosen (`plan` nil: the reference path).
func conv2dBackward(dInput: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>?,
                    dBias: UnsafeMutablePointer<Float>?, dOutput: UnsafePointer<Float>,
                    input: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                    batch: Int, geometry g: Conv2dGeometry,
                    workspace: UnsafeMutablePointer<Float>?, workspaceCount: Int, oneDNN plan: OneDNNConvolution.Plan?,
                    splitsAsBoth: Bool = false) {
    let m = g.outputChannels, kk = g.columnRows, opix = g.outputPixels
    let inputStride = g.inputChannels * g.inputPixels, outputStride = m * opix
    if let dBias {
        for n in 0..<batch {
            for c in 0..<m {
                let plane = dOutput + n * outputStride + c * opix
                var sum: Float = 0
                for i in 0..<opix { sum += plane[i] }
                dBias[c] += sum
            }
        }
    }
    if dInput == nil && dWeight == nil { return }
    let work = KernelWork.convolutionBackward(g, batch: batch, inputGradient: dInput != nil, weightGradient: dWeight != nil)
    if let workspace, let plan {
        OneDNNConvolution.backward(plan, dInput: dInput, dWeight: dWeight, dOutput: dOutput, input: input, weight: weight,
                                   batch: batch, geometry: g, workspace: workspace)
        KernelCounters.work += work
        return
    }
    // The second half of the batch accumulates its weight gradient into a partial buffer carved
    // from the end of the workspace, added to dWeight afterwards. `splitsAsBoth`: one of the two
    // gradients alone, in the chunks a call computing both would use (so the same floats: a packed
    // arena computes them in two calls).
    let partialCount = dWeight == nil && !splitsAsBoth ? 0 : m * kk
    let available = workspaceCount - partialCount
    let half = available / 2
    let canSplit = KernelThreads.count > 1 && batch >= 2 && available >= 0
        && (!g.needsColumns || half >= g.minimumWorkspace) && (partialCount == 0 || workspace != nil)
    if canSplit {
        let split = batch / 2
        let partial = workspace.map { $0 + 2 * half }
        if partialCount > 0 { partial!.update(repeating: 0, count: partialCount) }
        parallelParts(2) { part in
            let start = part == 0 ? 0 : split
            conv2dBackwardSerial(dInput: dInput.map { $0 + start * inputStride },
                                 dWeight: part == 0 ? dWeight : (dWeight == nil ? nil : partial),
                                 dOutput: dOutput + start * outputStride, input: input + start * inputStride, weight: weight,
                                 batch: part == 0 ? split : batch - split, geometry: g,
                                 workspace: workspace.map { $0 + part * half }, workspaceCount: half, threaded: false)
        }
        if let dWeight, let partial { accumulate(dWeight, partial, count: partialCount) }
    } else {
        conv2dBackwardSerial(dInput: dInput, dWeight: dWeight, dOutput: dOutput, input: input, weight: weight, batch: batch,
                             geometry: g, workspace: workspace, workspaceCount: workspaceCount, threaded: KernelThreads.count > 1)
    }
    KernelCounters.work += work
}

func conv2dBackwardSerial(dInput: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>?,
                          dOutput: UnsafePointer<Float>, input: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                          batch: Int, geometry g: Conv2dGeometry,
                          workspace: UnsafeMutablePointer<Float>?, workspaceCount: Int, threaded: Bool) {
    let m = g.outputChannels, kk = g.columnRows, opix = g.outputPixels
    let inputStride = g.inputChannels * g.inputPixels, outputStride = m * opix
    if !g.needsColumns {
        for n in 0..<batch {
            let image = input + n * inputStride
            let dOut = dOutput + n * outputStride
            if let dWeight {
                // dW[m, kk] += dOut[m, opix] * image[kk, opix]^T
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(kk), Int32(opix),
                            1, dOut, Int32(opix), image, Int32(opix), 1, dWeight, Int32(kk))
            }
            if let dInput {
                // dIn[kk, opix] += W[m, kk]^T * dOut[m, opix]
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(kk), Int32(opix), Int32(m),
                            1, weight, Int32(kk), dOut, Int32(opix), 1, dInput + n * inputStride, Int32(opix))
            }
        }
    } else if dWeight != nil || dInput != nil {
        let chunk = chunkPixels(g, workspaceCount: workspaceCount, batch: batch)
        let columns = workspace!
        let gathered = columns + kk * chunk
        var start = 0
        let total = batch * opix
        while start < total {
            let count = chunkCount(start: start, chunk: chunk, total: total, pixelsPerImage: opix)
            let withinImage = count <= opix
            let dOutChunk: UnsafePointer<Float>
            let leading = withinImage ? opix : count  // row stride of dOutChunk
            if withinImage {
                dOutChunk = dOutput + (start / opix) * outputStride + start % opix
            } else {
                forEachSegment(start: start, count: count, pixelsPerImage: opix) { n, first, pixels, offset in
                    for c in 0..<m {
                        (gathered + c * count + offset).update(from: dOutput + n * outputStride + c * opix + first, count: pixels)
                    }
                }
                dOutChunk = UnsafePointer(gathered)
            }
            if let dWeight {
                forEachSegment(start: start, count: count, pixelsPerImage: opix) { n, first, pixels, offset in
                    im2col(columns + offset, rowStride: count, image: input + n * inputStride, geometry: g, first: first, pixels: pixels, threaded: threaded)
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(kk), Int32(count),
                            1, dOutChunk, Int32(leading), columns, Int32(count), 1, dWeight, Int32(kk))
            }
            if let dInput {
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(kk), Int32(count), Int32(m),
                            1, weight, Int32(kk), dOutChunk, Int32(leading), 0, columns, Int32(count))
                forEachSegment(start: start, count: count, pixelsPerImage: opix) { n, first, pixels, offset in
                    col2imAdd(dInput + n * inputStride, columns: columns + offset, rowStride: count, geometry: g, first: first, pixels: pixels, threaded: threaded)
                }
            }
            start += count
        }
    }
}

/// Sets the threads every kernel uses: oneDNN's OpenMP team (which the plain loops of
/// ``parallelRanges`` share) and the reference path's batch split. OpenBLAS itself always runs
/// one thread: the reference path splits a batch into two halves, each with a single-threaded
/// `sgemm` (measured faster than OpenBLAS's own threading on these small GEMMs, where its
/// threads mostly wait in sched_yield).
public func setKernelThreads(_ count: Int) {
    KernelThreads.count = max(1, count)
    openblas_set_num_threads(1)
    OneDNNConvolution.setThreads(max(1, count))
}

/// Threads the kernels may use; set with ``setKernelThreads(_:)``. On the reference path two or
/// more split a batch in halves whose weight gradients are summed afterwards, so the float
/// summation order (and with it the last bits of a result) depends on it; oneDNN's results may
/// depend on its team size too. Runs are reproducible at a fixed `--threads`.
public enum KernelThreads {
    nonisolated(unsafe) public static var count = 1
}

