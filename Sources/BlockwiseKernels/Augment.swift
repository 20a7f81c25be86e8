/// Data augmentation of input images, as the authors' code does it for every data set: a random
/// crop with `crop` pixels of zero padding (the image shifted by dy, dx in [-crop, crop], the
/// uncovered border zero) and a random horizontal flip, drawn per sample.
public struct Augmentation: Codable, Equatable, Sendable, CustomStringConvertible {
    /// Padding of the random crop, pixels (0: no crop).
    public var crop: Int
    public var flip: Bool

    public init(crop: Int = 0, flip: Bool = false) { self.crop = crop; self.flip = flip }

    /// "crop=4,flip", "crop=4", "flip"; `none` is nil. Malformed lists are refused naming the
    /// option: an empty or unknown word, a word given twice, spaces, a sign on the number.
    public static func parse(_ text: String, option: String = "--augment") throws -> Augmentation? {
        let words = text.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        if words == ["none"] { return nil }
        var result = Augmentation()
        guard text != "" else { throw AugmentationError(message: "\(option) needs crop=N, flip or none") }
        var seen: Set<String> = []
        for word in words {
            if word.isEmpty {
                throw AugmentationError(message: "\(option) '\(text)' has an empty word: separate crop=N and flip by one comma (e.g. crop=4,flip)")
            }
            let name = word.hasPrefix("crop=") ? "crop" : word
            if !seen.insert(name).inserted {
                throw AugmentationError(message: "\(option) '\(text)' gives \(name) twice: give it once (e.g. crop=4,flip)")
            }
            if word == "flip" { result.flip = true; continue }
            if word.hasPrefix("crop=") {
                let digits = word.dropFirst(5)
                guard !digits.isEmpty, digits.allSatisfy(\.isASCII), digits.allSatisfy(\.isNumber), let pixels = Int(digits), pixels >= 1 else {
                    throw AugmentationError(message: "\(option): crop=N takes a whole number of pixels >= 1 (got '\(word)')")
                }
                result.crop = pixels
                continue
            }
            if word == "none" {
                throw AugmentationError(message: "\(option): none stands alone (got '\(text)'); use crop=N, flip or none")
            }
            throw AugmentationError(message: "\(option): unknown word '\(word)'; use crop=N, flip (e.g. crop=4,flip) or none")
        }
        return result
    }

    /// Problems for images of `height` x `width`: a crop must leave part of the image.
    public func problems(height: Int, width: Int) -> [String] {
        let limit = min(height, width) / 2 - 1
        return crop > limit ? ["--augment crop=\(crop) would shift the \(height)x\(width) images by half their size or more: use crop=1...\(limit)"] : []
    }

    public var description: String { ([crop > 0 ? "crop=\(crop)" : nil, flip ? "flip" : nil] as [String?]).compactMap { $0 }.joined(separator: ",") }

    /// Augments `batch` images [N, C, H, W] in place, drawing each sample's shift and flip from
    /// `generator` in sample order (so a resumed epoch draws the same). No scratch memory: the
    /// shift copies rows and columns in the order that reads each value before it is overwritten.
    public func apply(_ images: UnsafeMutablePointer<Float>, batch: Int, channels: Int, height: Int, width: Int,
                      generator: inout SeededGenerator) {
        let plane = height * width
        for n in 0..<batch {
            let span = UInt64(2 * crop + 1)
            let dy = crop > 0 ? Int(generator.next() % span) - crop : 0
            let dx = crop > 0 ? Int(generator.next() % span) - crop : 0
            let mirror = flip && generator.next() & 1 == 1
            for c in 0..<channels {
                let p = images + (n * channels + c) * plane
                if dy != 0 || dx != 0 { shift(p, height: height, width: width, dy: dy, dx: dx) }
                if mirror {
                    for y in 0..<height {
                        let row = p + y * width
                        var (i, j) = (0, width - 1)
                        while i < j { let t = row[i]; row[i] = row[j]; row[j] = t; i += 1; j -= 1 }
                    }
                }
            }
        }
        KernelCounters.work += KernelWork.augment(values: batch * channels * plane, flip: flip)
    }

    /// out(y, x) = in(y + dy, x + dx), zero outside.
    private func shift(_ p: UnsafeMutablePointer<Float>, height: Int, width: Int, dy: Int, dx: Int) {
        for i in 0..<height {
            let y = dy >= 0 ? i : height - 1 - i, sy = y + dy
            for j in 0..<width {
                let x = dx >= 0 ? j : width - 1 - j, sx = x + dx
                p[y * width + x] = sy >= 0 && sy < height && sx >= 0 && sx < width ? p[sy * width + sx] : 0
            }
        }
    }
}

public struct AugmentationError: Error, CustomStringConvertible {
    public var message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}

extension KernelWork {
    /// The augmentation pass over `values` image values (read and written; the flip pass counted
    /// for every sample when flips are drawn).
    public static func augment(values: Int, flip: Bool) -> OperationWork { elementwise(values: (flip ? 4 : 2) * values) }
}
