import BlockwiseData

/// The real Fashion-MNIST subsets the store tests train on (300 training, 200 test images, seed
/// 2), loaded once per process.
enum TestData {
    nonisolated(unsafe) static var cached: (train: Dataset, test: Dataset)?

    static func fashion() throws -> (train: Dataset, test: Dataset) {
        if let cached { return cached }
        let (train, test) = try FashionMNIST.load()
        let data = (try train.balancedSubset(size: .count(300), seed: 2), try test.balancedSubset(size: .count(200), seed: 2))
        cached = data
        return data
    }
}
