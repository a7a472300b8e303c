import Foundation

/// The MNIST family's files: an IDX image file and an IDX label file per split, raw or
/// gzip-compressed, with the names MNIST gave them and Fashion-MNIST kept.
enum MNISTLayout {
    static let fashionClassNames = [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ]
    static let digitClassNames = (0..<10).map(String.init)

    static func defaultDirectory(_ name: DatasetName) -> URL {
        URL(fileURLWithPath: name == .fashionMNIST ? "/usr/share/datasets/fashion-mnist" : "/usr/share/datasets/mnist")
    }

    /// How to get the files, for the message when they are missing.
    static func installHint(_ name: DatasetName) -> String {
        name == .fashionMNIST
            ? "install it with `sudo apt-get install dataset-fashion-mnist`, or pass --data DIR holding its IDX files"
            : "pass --data DIR holding MNIST's IDX files (train-images-idx3-ubyte.gz and the like)"
    }

    static func load(_ name: DatasetName, split: Split, directory: URL?) throws -> ImageDataset {
        let directory = directory ?? defaultDirectory(name)
        let prefix = split == .train ? "train" : "t10k"
        let imagesPath = try locate("\(prefix)-images-idx3-ubyte", in: directory, for: name)
        let labelsPath = try locate("\(prefix)-labels-idx1-ubyte", in: directory, for: name)
        let classNames = name == .fashionMNIST ? fashionClassNames : digitClassNames
        let images = try IDX.readImages(path: imagesPath)
        let labels = try IDX.readLabels(path: labelsPath, classes: classNames.count)
        guard labels.count == images.count else {
            throw BLASNetError.malformedFile(path: labelsPath, reason: "\(labels.count) labels for the \(images.count) images of \(imagesPath)")
        }
        return try ImageDataset(pixels: images.pixels, labels: labels, channels: 1, height: images.height, width: images.width,
                                classNames: classNames)
    }

    /// The path of `file` or `file.gz` in `directory` (the uncompressed one first: it
    /// reads faster).
    private static func locate(_ file: String, in directory: URL, for name: DatasetName) throws -> String {
        for candidate in [file, file + ".gz"] {
            let path = directory.appendingPathComponent(candidate).path
            if FileManager.default.fileExists(atPath: path) { return path }
        }
        throw BLASNetError.datasetMissing(dataset: name.displayName, lookedFor: "\(file)(.gz) in \(directory.path)",
                                          hint: installHint(name))
    }
}
