import BlockwiseKernels
import Foundation

/// An image classification split held as bytes: images [N, C, H, W] as UInt8, labels 0..<classes.
/// Converted to normalised Float32 one batch at a time (``Dataset/fillBatch``).
public struct Dataset: Sendable {
    public var name: String
    public var images: [UInt8]
    public var labels: [Int32]
    public var channels: Int
    public var height: Int
    public var width: Int
    public var classes: Int
    /// Normalisation applied when converting to Float: `(pixel / 255 - mean) / std`.
    public var mean: Float
    public var std: Float

    public init(name: String, images: [UInt8], labels: [Int32], channels: Int, height: Int, width: Int,
                classes: Int, mean: Float, std: Float) {
        precondition(images.count == labels.count * channels * height * width)
        self.name = name; self.images = images; self.labels = labels
        self.channels = channels; self.height = height; self.width = width
        self.classes = classes; self.mean = mean; self.std = std
    }

    public var count: Int { labels.count }
    public var sampleSize: Int { channels * height * width }
    public var sampleShape: [Int] { [channels, height, width] }

    /// Writes samples `indices` as normalised floats into `images` ([indices.count, C, H, W])
    /// and their labels into `labels`.
    public func fillBatch(indices: ArraySlice<Int>, images destination: UnsafeMutablePointer<Float>,
                          labels labelDestination: UnsafeMutablePointer<Int32>) {
        let size = sampleSize
        let scale = 1 / (255 * std), shift = -mean / std
        images.withUnsafeBufferPointer { source in
            for (row, index) in indices.enumerated() {
                let from = source.baseAddress! + index * size
                let to = destination + row * size
                for i in 0..<size { to[i] = Float(from[i]) * scale + shift }
                labelDestination[row] = labels[index]
            }
        }
    }

    /// The samples at `indices`, in that order.
    public func subset(_ indices: [Int], name: String? = nil) -> Dataset {
        var subsetImages = [UInt8]()
        subsetImages.reserveCapacity(indices.count * sampleSize)
        for index in indices {
            subsetImages.append(contentsOf: images[(index * sampleSize)..<((index + 1) * sampleSize)])
        }
        return Dataset(name: name ?? self.name, images: subsetImages, labels: indices.map { labels[$0] },
                       channels: channels, height: height, width: width, classes: classes, mean: mean, std: std)
    }

    /// Samples per class.
    public var classCounts: [Int] {
        var counts = [Int](repeating: 0, count: classes)
        for label in labels { counts[Int(label)] += 1 }
        return counts
    }
}

/// How many training samples to use: a count ("600") or a percentage ("1%").
public enum SubsetSize: Equatable, Sendable, CustomStringConvertible {
    case all
    case count(Int)
    case fraction(Double)

    /// Parses "600", "1%", "0.5%", "100%" or "all"; `option` names the flag in errors.
    public init(parsing text: String, option: String = "--train-size") throws {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if trimmed.lowercased() == "all" { self = .all; return }
        if trimmed.hasSuffix("%") {
            guard let percent = Double(trimmed.dropLast()), percent > 0, percent <= 100 else {
                throw DataError.badSubset("\(option) '\(text)': a percentage must be in (0%, 100%], e.g. 1% or 10%.")
            }
            self = percent == 100 ? .all : .fraction(percent / 100)
            return
        }
        guard let count = Int(trimmed), count > 0 else {
            throw DataError.badSubset("\(option) '\(text)': expected a positive sample count (600), a percentage (1%) or 'all'.")
        }
        self = .count(count)
    }

    /// Resolves to a sample count out of `total` (a count above `total` is clamped; see
    /// ``resolve(total:option:split:)`` for the checked form).
    public func resolve(total: Int) -> Int {
        switch self {
        case .all: return total
        case .count(let n): return min(n, total)
        case .fraction(let f): return max(1, Int((f * Double(total)).rounded()))
        }
    }

    /// Resolves to a sample count out of `total`, refusing a count larger than the split holds.
    /// - Throws: ``DataError/badSubset`` naming `option` and `split`.
    public func resolve(total: Int, option: String, split: String) throws -> Int {
        if case .count(let n) = self, n > total {
            throw DataError.badSubset("\(option) \(n): \(split) holds only \(total) samples; ask for at most \(total), a percentage or 'all'.")
        }
        return resolve(total: total)
    }

    public var description: String {
        switch self {
        case .all: return "all"
        case .count(let n): return "\(n)"
        case .fraction(let f): return "\(f * 100)%"
        }
    }
}

extension Dataset {
    /// A class-balanced subset of `size` samples chosen by `seed`: each class contributes
    /// `size / classes` samples (the remainder goes to the lowest class indices, one each),
    /// drawn at random within the class; the result is ordered by original index.
    /// - Throws: ``DataError/badSubset`` if a class has too few samples.
    /// - option: the flag that asked for `size`, named in errors.
    public func balancedSubset(size: SubsetSize, seed: UInt64, option: String = "--train-size") throws -> Dataset {
        let total = try size.resolve(total: count, option: option, split: "'\(name)'")
        if total >= count { return self }
        return subset(try balancedIndices(total: total, seed: seed), name: "\(name)[\(total)]")
    }

    /// The sorted indices of a class-balanced draw of `total` samples by `seed`.
    func balancedIndices(total: Int, seed: UInt64) throws -> [Int] {
        var byClass = [[Int]](repeating: [], count: classes)
        for (index, label) in labels.enumerated() { byClass[Int(label)].append(index) }
        var generator = SeededGenerator.stream(seed: seed, "subset")
        var chosen: [Int] = []
        for c in 0..<classes {
            let want = total / classes + (c < total % classes ? 1 : 0)
            guard byClass[c].count >= want else {
                throw DataError.badSubset("a class-balanced subset of \(total) samples of '\(name)': class \(c) has only \(byClass[c].count) samples, \(want) needed; ask for fewer.")
            }
            var members = byClass[c]
            members.seededShuffle(using: &generator)
            chosen.append(contentsOf: members.prefix(want))
        }
        return chosen.sorted()
    }

    /// Splits into (rest, held out) with `heldOut` samples class-balanced by seed
    /// (for validation splits carved from a training subset).
    public func split(heldOut: Int, seed: UInt64) throws -> (train: Dataset, validation: Dataset) {
        let held = try balancedIndices(total: heldOut, seed: seed ^ 0x5A5A)
        let chosen = Set(held)
        let rest = (0..<count).filter { !chosen.contains($0) }
        return (subset(rest, name: name + "-train"), subset(held, name: "\(name)[\(heldOut)]"))
    }

}
