import BlockwiseKernels

/// The auxiliary classifier attached to every module.
public enum HeadKind: String, Codable, Sendable, CaseIterable {
    /// conv3x3 (same channels, with bias) -> ReLU -> global average pool -> BatchNorm1d -> linear
    /// (the authors' "1CNN" head).
    case oneCNN = "1cnn"
    /// global average pool -> linear.
    case linear
}

/// A K-M ResNet: an encoder, then K modules of M BasicBlocks, each module with a head.
///
/// Shapes: images [N, inputChannels, inputHeight, inputWidth]. The encoder maps them to
/// [N, width, H/2^e, W/2^e] (e = encoderDownsamplings, ceil at each halving). A module whose
/// index is in `downsampleAt` starts with a stride-2 block that doubles the width (option-A
/// shortcut). The encoder belongs to module 0 and trains with it.
public struct ModelConfiguration: Equatable, Codable, Sendable {
    public var inputChannels: Int = 1
    public var inputHeight: Int = 28
    public var inputWidth: Int = 28
    public var classes: Int = 10
    public var width: Int = 16
    public var modules: Int = 4
    public var blocksPerModule: Int = 1
    /// Stride-2 conv-BN-ReLU stages after the encoder's first conv.
    public var encoderDownsamplings: Int = 0
    /// Module indices (from 0) whose first block halves the resolution and doubles the width.
    public var downsampleAt: [Int] = []
    public var head: HeadKind = .oneCNN
    /// Gain of the orthogonal initialisation of convolution and linear weights (paper: 0.05-0.1).
    public var initGain: Float = 0.1

    public init() {}

    public init(inputChannels: Int = 1, inputHeight: Int = 28, inputWidth: Int = 28, classes: Int = 10,
                width: Int, modules: Int, blocksPerModule: Int = 1, encoderDownsamplings: Int = 0,
                downsampleAt: [Int] = [], head: HeadKind = .oneCNN, initGain: Float = 0.1) {
        self.inputChannels = inputChannels; self.inputHeight = inputHeight; self.inputWidth = inputWidth
        self.classes = classes; self.width = width; self.modules = modules; self.blocksPerModule = blocksPerModule
        self.encoderDownsamplings = encoderDownsamplings; self.downsampleAt = downsampleAt
        self.head = head; self.initGain = initGain
    }

    /// [C, H, W] of the encoder's output.
    public var encoderOutputShape: [Int] {
        var h = inputHeight, w = inputWidth
        for _ in 0..<encoderDownsamplings { h = (h + 1) / 2; w = (w + 1) / 2 }
        return [width, h, w]
    }

    /// [C, H, W] of the input of module k (module 0's input is the image).
    public func moduleInputShape(_ k: Int) -> [Int] {
        k == 0 ? [inputChannels, inputHeight, inputWidth] : moduleOutputShape(k - 1)
    }

    /// [C, H, W] of the output of module k.
    public func moduleOutputShape(_ k: Int) -> [Int] {
        var shape = encoderOutputShape
        for index in 0...k where downsampleAt.contains(index) {
            shape = [shape[0] * 2, (shape[1] + 1) / 2, (shape[2] + 1) / 2]
        }
        return shape
    }

    /// A short name like "8-1 ResNet w32 (1cnn heads)".
    public var summary: String {
        "\(modules)-\(blocksPerModule) ResNet, width \(width), \(head.rawValue) heads"
            + (encoderDownsamplings > 0 ? ", encoder stride \(1 << encoderDownsamplings)" : "")
            + (downsampleAt.isEmpty ? "" : ", downsampling at modules \(downsampleAt.map(String.init).joined(separator: ","))")
    }

    /// Checks the configuration; returns a message per problem.
    public func problems() -> [String] {
        var result: [String] = []
        if !(1...4096).contains(width) { result.append("--width must be in 1...4096 (got \(width))") }
        if !(1...256).contains(modules) { result.append("--modules must be in 1...256 (got \(modules))") }
        if !(1...64).contains(blocksPerModule) { result.append("--blocks must be in 1...64 (got \(blocksPerModule))") }
        if !(initGain > 0 && initGain <= 100) { result.append("--init-gain must be a finite number in (0, 100] (got \(initGain))") }
        if encoderDownsamplings < 0 || encoderDownsamplings > 4 { result.append("encoder downsamplings must be in 0...4") }
        for index in downsampleAt where index < 0 || index >= modules {
            result.append("downsampling module index \(index) is outside 0..<\(modules)")
        }
        if classes < 2 { result.append("classes must be at least 2") }
        return result
    }
}
