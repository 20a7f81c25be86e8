import Foundation

/// Fashion-MNIST (Xiao et al. 2017): 60000 train / 10000 test grayscale 28x28 images, 10 classes,
/// read from the IDX files Debian's `dataset-fashion-mnist` installs.
public enum FashionMNIST {
    public static let defaultDirectory = "/usr/share/datasets/fashion-mnist"
    public static let classNames = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    /// Mean and standard deviation of the training pixels in [0, 1] (computed from the
    /// 60000 training images; the test split uses the same figures).
    public static let pixelMean: Float = 0.2860
    public static let pixelStd: Float = 0.3530
    /// Rows and columns of every image: the model's input shape.
    public static let imageShape = [28, 28]
    /// Samples per split of the released data set (what `plan` plans for without reading it).
    public static let splitSizes = (train: 60000, test: 10000)

    /// Loads both splits from `directory` (files `train-images-idx3-ubyte[.gz]`, ...).
    public static func load(directory: String = defaultDirectory) throws -> (train: Dataset, test: Dataset) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw DataError.directoryMissing(path: directory)
        }
        let train = try loadSplit(directory: directory, prefix: "train", name: "fashion-mnist-train")
        let test = try loadSplit(directory: directory, prefix: "t10k", name: "fashion-mnist-test")
        return (train, test)
    }

    /// Loads one split ("train" or "t10k") and checks that images and labels agree.
    public static func loadSplit(directory: String, prefix: String, name: String) throws -> Dataset {
        let imagesPath = try locate(directory, "\(prefix)-images-idx3-ubyte")
        let labelsPath = try locate(directory, "\(prefix)-labels-idx1-ubyte")
        let images = try IDXReader.read(imagesPath, expectedDimensions: 3)
        guard Array(images.dimensions[1...]) == imageShape else {
            throw DataError.shapeMismatch(path: imagesPath, found: Array(images.dimensions[1...]), expected: imageShape,
                                          reason: "Fashion-MNIST images are \(imageShape[0])x\(imageShape[1]), and both splits must agree")
        }
        let labels = try IDXReader.read(labelsPath, expectedDimensions: 1)
        guard images.dimensions[0] == labels.dimensions[0] else {
            throw DataError.countMismatch(imagesPath: imagesPath, images: images.dimensions[0],
                                          labelsPath: labelsPath, labels: labels.dimensions[0])
        }
        let labelValues = labels.bytes.map { Int32($0) }
        if let bad = labelValues.firstIndex(where: { $0 > 9 }) {
            throw DataError.badLabel(path: labelsPath, index: bad, label: Int(labelValues[bad]))
        }
        return Dataset(name: name, images: images.bytes, labels: labelValues, channels: 1,
                       height: images.dimensions[1], width: images.dimensions[2], classes: 10,
                       mean: pixelMean, std: pixelStd)
    }

    /// The path of `base` or `base.gz` in `directory`.
    static func locate(_ directory: String, _ base: String) throws -> String {
        let plain = (directory as NSString).appendingPathComponent(base)
        if FileManager.default.fileExists(atPath: plain) { return plain }
        let gz = plain + ".gz"
        if FileManager.default.fileExists(atPath: gz) { return gz }
        throw DataError.fileMissing(path: gz)
    }
}
