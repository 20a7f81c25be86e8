import CBLAS

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

    /// Floats of im2col workspace the convolution would use for one whole image.
    public var fullImageWorkspace: Int { needsColumns ? columnRows * outputPixels : 0 }

    /// Smallest workspace (floats) the convolution can run in: one output pixel's column.
    public var minimumWorkspace: Int { needsColumns ? columnRows : 0 }

    /// Workspace floats used given a bound (`nil` = a whole image at once).
    public func workspaceFloats(bound: Int?) -> Int {
        guard needsColumns else { return 0 }
        guard let bound else { return fullImageWorkspace }
        let pixels = max(1, min(outputPixels, bound / columnRows))
        return pixels * columnRows
    }

    /// Multiply-adds x 2 of one forward pass over `batch` images (backward-data and
    /// backward-weights cost the same each).
    public func forwardFlops(batch: Int) -> Int { 2 * batch * outputChannels * columnRows * outputPixels }
}

/// Output pixels per im2col chunk for a workspace of `workspaceCount` floats.
@inline(__always)
private func chunkPixels(_ geometry: Conv2dGeometry, workspaceCount: Int) -> Int {
    precondition(workspaceCount >= geometry.minimumWorkspace,
                 "conv workspace of \(workspaceCount) floats is below the minimum \(geometry.minimumWorkspace)")
    return max(1, min(geometry.outputPixels, workspaceCount / geometry.columnRows))
}

/// Writes the columns of output pixels [first, first + pixels) of one image into `columns`,
/// a [C_in*k*k, pixels] row-major matrix (zero where the kernel reads padding).
@inline(__always)
func im2col(_ columns: UnsafeMutablePointer<Float>, image: UnsafePointer<Float>,
            geometry g: Conv2dGeometry, first: Int, pixels: Int) {
    let k = g.kernelSize, s = g.stride, p = g.padding
    let h = g.inputHeight, w = g.inputWidth, ow = g.outputWidth
    for channel in 0..<g.inputChannels {
        let plane = image + channel * h * w
        for ky in 0..<k {
            for kx in 0..<k {
                let row = columns + ((channel * k + ky) * k + kx) * pixels
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
func col2imAdd(_ image: UnsafeMutablePointer<Float>, columns: UnsafePointer<Float>,
               geometry g: Conv2dGeometry, first: Int, pixels: Int) {
    let k = g.kernelSize, s = g.stride, p = g.padding
    let h = g.inputHeight, w = g.inputWidth, ow = g.outputWidth
    for channel in 0..<g.inputChannels {
        let plane = image + channel * h * w
        for ky in 0..<k {
            for kx in 0..<k {
                let row = columns + ((channel * k + ky) * k + kx) * pixels
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
                        for j in 0..<run {
                            let ix = (ox0 + j) * s - p + kx
                            if ix >= 0 && ix < w { target[ix] += source[j] }
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
/// - Memory: `workspace` holds the im2col columns of a chunk of output pixels of one image;
///   it needs at least ``Conv2dGeometry/minimumWorkspace`` floats, and the chunk is as many
///   pixels as fit (so the bound is a parameter, not N x C x 9 x H x W).
/// - Cost: ``Conv2dGeometry/forwardFlops(batch:)`` through CBLAS `sgemm`.
public func conv2dForward(output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
                          weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                          batch: Int, geometry g: Conv2dGeometry,
                          workspace: UnsafeMutablePointer<Float>?, workspaceCount: Int) {
    let m = g.outputChannels, kk = g.columnRows, opix = g.outputPixels
    let inputStride = g.inputChannels * g.inputPixels, outputStride = m * opix
    for n in 0..<batch {
        let image = input + n * inputStride
        let out = output + n * outputStride
        if !g.needsColumns {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(opix), Int32(kk),
                        1, weight, Int32(kk), image, Int32(opix), 0, out, Int32(opix))
        } else {
            let chunk = chunkPixels(g, workspaceCount: workspaceCount)
            var first = 0
            while first < opix {
                let pixels = min(chunk, opix - first)
                im2col(workspace!, image: image, geometry: g, first: first, pixels: pixels)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(pixels), Int32(kk),
                            1, weight, Int32(kk), workspace!, Int32(pixels), 0, out + first, Int32(opix))
                first += pixels
            }
        }
        if let bias {
            for c in 0..<m {
                let plane = out + c * opix
                let b = bias[c]
                for i in 0..<opix { plane[i] += b }
            }
        }
    }
    KernelCounters.flops += g.forwardFlops(batch: batch)
}

/// Convolution backward. Accumulates (adds into) every gradient it is given:
/// `dInput += conv_transpose(dOutput, weight)`, `dWeight += dOutput x columns(input)^T`,
/// `dBias += sum of dOutput over N, H, W`.
///
/// - Shapes: as ``conv2dForward``; `dInput` like input (nil to skip, e.g. for a detached input),
///   `dWeight` like weight, `dBias` [C_out] or nil.
/// - Memory: the same bounded `workspace` as forward (columns, then reused for dColumns).
/// - Cost: 2x ``Conv2dGeometry/forwardFlops(batch:)`` (1x without dInput).
public func conv2dBackward(dInput: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>,
                           dBias: UnsafeMutablePointer<Float>?, dOutput: UnsafePointer<Float>,
                           input: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                           batch: Int, geometry g: Conv2dGeometry,
                           workspace: UnsafeMutablePointer<Float>?, workspaceCount: Int) {
    let m = g.outputChannels, kk = g.columnRows, opix = g.outputPixels
    let inputStride = g.inputChannels * g.inputPixels, outputStride = m * opix
    for n in 0..<batch {
        let image = input + n * inputStride
        let dOut = dOutput + n * outputStride
        if let dBias {
            for c in 0..<m {
                let plane = dOut + c * opix
                var sum: Float = 0
                for i in 0..<opix { sum += plane[i] }
                dBias[c] += sum
            }
        }
        if !g.needsColumns {
            // dW[m, kk] += dOut[m, opix] * image[kk, opix]^T
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(kk), Int32(opix),
                        1, dOut, Int32(opix), image, Int32(opix), 1, dWeight, Int32(kk))
            if let dInput {
                // dIn[kk, opix] += W[m, kk]^T * dOut[m, opix]
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(kk), Int32(opix), Int32(m),
                            1, weight, Int32(kk), dOut, Int32(opix), 1, dInput + n * inputStride, Int32(opix))
            }
            continue
        }
        let chunk = chunkPixels(g, workspaceCount: workspaceCount)
        let columns = workspace!
        var first = 0
        while first < opix {
            let pixels = min(chunk, opix - first)
            im2col(columns, image: image, geometry: g, first: first, pixels: pixels)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(kk), Int32(pixels),
                        1, dOut + first, Int32(opix), columns, Int32(pixels), 1, dWeight, Int32(kk))
            if let dInput {
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(kk), Int32(pixels), Int32(m),
                            1, weight, Int32(kk), dOut + first, Int32(opix), 0, columns, Int32(pixels))
                col2imAdd(dInput + n * inputStride, columns: columns, geometry: g, first: first, pixels: pixels)
            }
            first += pixels
        }
    }
    KernelCounters.flops += g.forwardFlops(batch: batch) * (dInput == nil ? 1 : 2)
}

/// Sets the number of threads OpenBLAS uses for `sgemm`.
public func setBLASThreads(_ count: Int) {
    openblas_set_num_threads(Int32(max(1, count)))
}

public func blasThreads() -> Int { Int(openblas_get_num_threads()) }
