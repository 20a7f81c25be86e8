/// Average pooling (square window, no padding, floor), global average pooling, and the
/// "option A" downsampling shortcut of He et al. 2016 (CIFAR ResNets): 2x2 average pooling
/// with stride 2 (ceil mode, averaging the valid pixels only) then zero-padding of channels.

/// Output side of a `kernel` x `kernel` average pool with `stride`, no padding, floor mode.
public func averagePoolOutputSize(_ size: Int, kernel: Int, stride: Int) -> Int { (size - kernel) / stride + 1 }

/// Average pooling forward. Shapes: input [N, C, H, W] -> output [N, C, H_out, W_out].
public func averagePoolForward(output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
                               batch: Int, channels: Int, height: Int, width: Int, kernel: Int, stride: Int) {
    let oh = averagePoolOutputSize(height, kernel: kernel, stride: stride)
    let ow = averagePoolOutputSize(width, kernel: kernel, stride: stride)
    let scale = 1 / Float(kernel * kernel)
    for plane in 0..<(batch * channels) {
        let source = input + plane * height * width
        let destination = output + plane * oh * ow
        for oy in 0..<oh {
            for ox in 0..<ow {
                var sum: Float = 0
                for ky in 0..<kernel {
                    let row = source + (oy * stride + ky) * width + ox * stride
                    for kx in 0..<kernel { sum += row[kx] }
                }
                destination[oy * ow + ox] = sum * scale
            }
        }
    }
}

/// Average pooling backward; accumulates into dInput.
public func averagePoolBackward(dInput: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>,
                                batch: Int, channels: Int, height: Int, width: Int, kernel: Int, stride: Int) {
    let oh = averagePoolOutputSize(height, kernel: kernel, stride: stride)
    let ow = averagePoolOutputSize(width, kernel: kernel, stride: stride)
    let scale = 1 / Float(kernel * kernel)
    for plane in 0..<(batch * channels) {
        let destination = dInput + plane * height * width
        let source = dOutput + plane * oh * ow
        for oy in 0..<oh {
            for ox in 0..<ow {
                let g = source[oy * ow + ox] * scale
                for ky in 0..<kernel {
                    let row = destination + (oy * stride + ky) * width + ox * stride
                    for kx in 0..<kernel { row[kx] += g }
                }
            }
        }
    }
}

/// Global average pooling: [N, C, H, W] -> [N, C].
public func globalAveragePoolForward(output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
                                     batch: Int, channels: Int, spatial: Int) {
    let scale = 1 / Float(spatial)
    for plane in 0..<(batch * channels) {
        let source = input + plane * spatial
        var sum: Float = 0
        for i in 0..<spatial { sum += source[i] }
        output[plane] = sum * scale
    }
}

/// Global average pooling backward; accumulates `dInput[n, c, :] += dOutput[n, c] / S`.
public func globalAveragePoolBackward(dInput: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>,
                                      batch: Int, channels: Int, spatial: Int) {
    let scale = 1 / Float(spatial)
    for plane in 0..<(batch * channels) {
        let g = dOutput[plane] * scale
        let destination = dInput + plane * spatial
        for i in 0..<spatial { destination[i] += g }
    }
}

/// The option-A shortcut's geometry: halves H and W (ceil) and pads channels from
/// `inputChannels` to `outputChannels`, `(outputChannels - inputChannels) / 2` zero channels first.
public struct ShortcutGeometry: Equatable, Sendable {
    public var inputChannels: Int, outputChannels: Int, inputHeight: Int, inputWidth: Int
    public init(inputChannels: Int, outputChannels: Int, inputHeight: Int, inputWidth: Int) {
        precondition(outputChannels >= inputChannels)
        self.inputChannels = inputChannels; self.outputChannels = outputChannels
        self.inputHeight = inputHeight; self.inputWidth = inputWidth
    }
    /// ceil(H / 2): equal to a 3x3, stride-2, padding-1 convolution's output size.
    public var outputHeight: Int { (inputHeight + 1) / 2 }
    public var outputWidth: Int { (inputWidth + 1) / 2 }
    public var channelOffset: Int { (outputChannels - inputChannels) / 2 }
}

/// Option-A shortcut forward: input [N, C_in, H, W] -> output [N, C_out, ceil(H/2), ceil(W/2)].
public func shortcutForward(output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
                            batch: Int, geometry g: ShortcutGeometry) {
    output.update(repeating: 0, count: batch * g.outputChannels * g.outputHeight * g.outputWidth)
    shortcutForwardAdd(output: output, input: input, batch: batch, geometry: g)
}

/// Option-A shortcut forward that adds into `output` (y += shortcut(x)); the padded channels get nothing.
public func shortcutForwardAdd(output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
                               batch: Int, geometry g: ShortcutGeometry) {
    let oh = g.outputHeight, ow = g.outputWidth, h = g.inputHeight, w = g.inputWidth
    for n in 0..<batch {
        for c in 0..<g.inputChannels {
            let source = input + (n * g.inputChannels + c) * h * w
            let destination = output + (n * g.outputChannels + c + g.channelOffset) * oh * ow
            for oy in 0..<oh {
                let y1 = min(2 * oy + 1, h - 1)
                for ox in 0..<ow {
                    let x1 = min(2 * ox + 1, w - 1)
                    var sum: Float = 0
                    var count = 0
                    for y in (2 * oy)...y1 { for x in (2 * ox)...x1 { sum += source[y * w + x]; count += 1 } }
                    destination[oy * ow + ox] += sum / Float(count)
                }
            }
        }
    }
}

/// Option-A shortcut backward; accumulates into dInput (the padded channels get no gradient).
public func shortcutBackward(dInput: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>,
                             batch: Int, geometry g: ShortcutGeometry) {
    let oh = g.outputHeight, ow = g.outputWidth, h = g.inputHeight, w = g.inputWidth
    for n in 0..<batch {
        for c in 0..<g.inputChannels {
            let destination = dInput + (n * g.inputChannels + c) * h * w
            let source = dOutput + (n * g.outputChannels + c + g.channelOffset) * oh * ow
            for oy in 0..<oh {
                let y1 = min(2 * oy + 1, h - 1)
                for ox in 0..<ow {
                    let x1 = min(2 * ox + 1, w - 1)
                    let count = (y1 - 2 * oy + 1) * (x1 - 2 * ox + 1)
                    let g = source[oy * ow + ox] / Float(count)
                    for y in (2 * oy)...y1 { for x in (2 * ox)...x1 { destination[y * w + x] += g } }
                }
            }
        }
    }
}
