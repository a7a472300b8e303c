import Foundation

/// The image-classification datasets BLASNet reads from their standard files.
public enum DatasetName: String, CaseIterable, Sendable {
    case fashionMNIST = "fashion-mnist", mnist, cifar10, cifar100

    /// The dataset's usual written name, for messages.
    public var displayName: String {
        switch self {
        case .fashionMNIST: "Fashion-MNIST"
        case .mnist: "MNIST"
        case .cifar10: "CIFAR-10"
        case .cifar100: "CIFAR-100"
        }
    }
}

/// Which part of a dataset: the training images or the held-out test images.
public enum Split: String, Sendable {
    case train, test
}

/// An in-memory labelled image dataset: uint8 pixels `[N, C, H, W]`, labels in
/// `0..<classNames.count`.
public struct ImageDataset: Sendable {
    /// All images, `[count, channels, height, width]` row-major.
    public let pixels: [UInt8]
    /// The class of each image, in `0..<numClasses`.
    public let labels: [Int]
    public let count: Int, channels: Int, height: Int, width: Int
    /// Name of each class, indexed by label.
    public let classNames: [String]

    public var numClasses: Int { classNames.count }

    /// A dataset over `pixels` (`[labels.count, channels, height, width]`); throws if
    /// the sizes disagree or a label is not below `classNames.count`.
    public init(pixels: [UInt8], labels: [Int], channels: Int, height: Int, width: Int, classNames: [String]) throws {
        guard channels > 0, height > 0, width > 0 else {
            throw BLASNetError.invalidArgument("image dataset: images of \(channels)×\(height)×\(width) have no pixels")
        }
        guard !classNames.isEmpty else { throw BLASNetError.invalidArgument("image dataset: no classes") }
        let needed = Tensor.elementCount([labels.count, channels, height, width])
        guard needed == pixels.count else {
            throw BLASNetError.invalidArgument(
                "image dataset: \(labels.count) images of \(channels)×\(height)×\(width) need \(needed.map(String.init) ?? "more than \(Int.max)") pixels, got \(pixels.count)")
        }
        if let i = labels.firstIndex(where: { !(0..<classNames.count).contains($0) }) {
            throw BLASNetError.invalidArgument("image dataset: label \(labels[i]) of image \(i) is not in 0..<\(classNames.count)")
        }
        self.pixels = pixels
        self.labels = labels
        self.count = labels.count
        self.channels = channels
        self.height = height
        self.width = width
        self.classNames = classNames
    }

    /// The images at `indices`, in that order (repeats allowed).
    public func subset(_ indices: [Int]) -> ImageDataset {
        let size = channels * height * width
        var out = [UInt8](repeating: 0, count: indices.count * size)
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for (k, i) in indices.enumerated() {
                    precondition(i >= 0 && i < count, "subset index \(i) out of range for \(count) images")
                    (dst.baseAddress! + k * size).update(from: src.baseAddress! + i * size, count: size)
                }
            }
        }
        // Sizes and labels come from a validated dataset.
        return try! ImageDataset(pixels: out, labels: indices.map { labels[$0] }, channels: channels, height: height,
                                 width: width, classNames: classNames)
    }

    /// Per-channel mean and standard deviation of the pixels in [0, 1] units: the
    /// normalization constants, when computed on a training split. The deviation is
    /// the population one (over all pixels of the channel), as the published constants are.
    /// Throws for a dataset without images.
    public func channelStatistics() throws -> (mean: [Float], std: [Float]) {
        guard count > 0 else { throw BLASNetError.invalidArgument("channel statistics of a dataset without images") }
        // Integer sums are exact at any dataset size; only the final division rounds.
        var sums = [UInt64](repeating: 0, count: channels), squares = [UInt64](repeating: 0, count: channels)
        pixels.withUnsafeBufferPointer { p in
            Kernels.channelSums(p.baseAddress!, images: count, channels: channels, planeSize: height * width,
                                sums: &sums, squares: &squares)
        }
        let n = Double(count * height * width)
        var mean: [Float] = [], std: [Float] = []
        for c in 0..<channels {
            let m = Double(sums[c]) / n, meanSquare = Double(squares[c]) / n
            mean.append(Float(m / 255))
            std.append(Float(max(meanSquare - m * m, 0).squareRoot() / 255))
        }
        return (mean, std)
    }
}

extension ImageDataset {
    /// Loads `split` of dataset `name` from `directory`, or from the dataset's default
    /// location when there is one (Fashion-MNIST: `/usr/share/datasets/fashion-mnist`,
    /// Debian package `dataset-fashion-mnist`; MNIST: `/usr/share/datasets/mnist`).
    ///
    /// Throws ``BLASNetError/datasetMissing(dataset:lookedFor:hint:)`` saying what was
    /// looked for where and how to get it, and ``BLASNetError/malformedFile(path:reason:)``
    /// for damaged files.
    public static func load(_ name: DatasetName, split: Split, directory: URL? = nil) throws -> ImageDataset {
        switch name {
        case .fashionMNIST, .mnist: try MNISTLayout.load(name, split: split, directory: directory)
        case .cifar10, .cifar100: try CIFAR.load(name, split: split, directory: directory)
        }
    }
}
