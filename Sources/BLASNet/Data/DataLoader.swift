import Foundation

/// Random changes to training images, drawn anew for every sample in every epoch.
public struct Augmentation: Sendable, Equatable {
    /// Pixels of zero padding added on every side before cropping a random window of
    /// the original size (the standard CIFAR augmentation uses 4); 0 turns cropping off.
    public var cropPadding: Int
    /// Mirror left–right with probability ½.
    public var horizontalFlip: Bool
    /// Probability of random erasing (Zhong et al. 2020) as torchvision's `RandomErasing`
    /// does it by default: a rectangle of 2–33% of the image, aspect ratio 0.3–3.3
    /// (log-uniform), set to 0 after normalization (the dataset mean); 0 turns it off.
    public var erasing: Double

    /// No augmentation: images as they are (evaluation).
    public static let none = Augmentation()

    /// The augmentations to apply; the defaults apply none.
    public init(cropPadding: Int = 0, horizontalFlip: Bool = false, erasing: Double = 0) {
        self.cropPadding = cropPadding
        self.horizontalFlip = horizontalFlip
        self.erasing = erasing
    }
}

/// The part of an image that random erasing blanks: rows `y..<y + height`, columns `x..<x + width`.
public struct ErasedRectangle: Sendable, Equatable {
    public let y: Int, x: Int, height: Int, width: Int
}

/// A batch ready for a model.
public struct Batch: Sendable {
    /// The images, `[B, C, H, W]`, normalized Float32.
    public let images: Tensor
    /// The class of each image.
    public let labels: [Int]
    /// The dataset index of each image.
    public let indices: [Int]
}

/// This process's part of every batch in data-parallel training: slice `index` of
/// `count` near-equal slices of each batch's images.
public struct Shard: Sendable, Equatable {
    /// Which slice this process takes.
    public let index: Int
    /// How many slices each batch is cut into.
    public let count: Int
    /// The whole batch: one process.
    public static let whole = Shard(index: 0, count: 1)

    /// Slice `index` of `count` (a process's rank and the job's size); ``DataLoader`` checks
    /// that `0 ≤ index < count`.
    public init(index: Int, count: Int) {
        (self.index, self.count) = (index, count)
    }
}

/// Cuts an ``ImageDataset`` into normalized batches, shuffled and augmented if asked,
/// one epoch at a time, prepared on a background thread while the model trains.
///
/// Every random choice is a function of `(seed, epoch, sample index)` alone: an epoch
/// replays identically after a resume, whatever batch it resumes at and whatever the
/// threads do.
public final class DataLoader: Sendable {
    public let dataset: ImageDataset
    public let batchSize: Int
    public let shuffle: Bool
    public let seed: UInt64
    public let augmentation: Augmentation
    /// Whether a last batch smaller than `batchSize` is left out.
    public let dropLast: Bool
    /// How many prepared batches may wait for the consumer.
    public let prefetch: Int
    /// The part of each batch this loader yields (data-parallel training); batch order and
    /// augmentation are the whole batch's, so the shards of all processes make it up.
    public let shard: Shard
    /// `(p / 255 − mean[c]) / std[c]` for every channel `c` and pixel value `p`, at
    /// `c·256 + p`: one lookup per pixel, rounded exactly as the formula is.
    private let normalization: [Float]

    /// A loader normalizing channel `c` as `(pixel / 255 − mean[c]) / std[c]`; throws
    /// unless `mean` and `std` have one finite value per channel (`std` positive), the
    /// batch size and `prefetch` are positive, the crop padding is not negative, and
    /// with `dropLast` (training) the shards split every batch evenly.
    public init(dataset: ImageDataset, batchSize: Int, shuffle: Bool, seed: UInt64, mean: [Float], std: [Float],
                augmentation: Augmentation = .none, dropLast: Bool = false, prefetch: Int = 2, shard: Shard = .whole) throws {
        guard batchSize > 0 else { throw BLASNetError.invalidArgument("data loader: batch size \(batchSize) is not positive") }
        guard shard.count > 0, (0..<shard.count).contains(shard.index) else {
            throw BLASNetError.invalidArgument("data loader: shard \(shard.index) of \(shard.count) does not exist")
        }
        // Equal shards weigh every image alike when the processes average their gradients.
        guard !dropLast || batchSize % shard.count == 0 else {
            throw BLASNetError.invalidArgument("data loader: a batch of \(batchSize) does not split evenly over \(shard.count) processes")
        }
        guard prefetch > 0 else { throw BLASNetError.invalidArgument("data loader: prefetch \(prefetch) is not positive") }
        // Past the image's size a crop can hold no image at all, and 2·padding + 1 stays far from overflow.
        guard (0...max(dataset.height, dataset.width)).contains(augmentation.cropPadding) else {
            throw BLASNetError.invalidArgument(
                "data loader: crop padding \(augmentation.cropPadding) is not in 0...\(max(dataset.height, dataset.width)), the images' size")
        }
        guard (0...1).contains(augmentation.erasing) else {
            throw BLASNetError.invalidArgument("data loader: random-erasing probability \(augmentation.erasing) is not in 0...1")
        }
        let c = dataset.channels
        guard mean.count == c, std.count == c, mean.allSatisfy(\.isFinite), std.allSatisfy({ $0.isFinite && $0 > 0 }) else {
            throw BLASNetError.invalidArgument(
                "data loader: need a finite mean and a positive finite std for each of the \(c) channels, got mean \(mean), std \(std)")
        }
        self.dataset = dataset
        self.batchSize = batchSize
        self.shuffle = shuffle
        self.seed = seed
        self.augmentation = augmentation
        self.dropLast = dropLast
        self.prefetch = prefetch
        self.shard = shard
        normalization = (0..<c).flatMap { c in (0..<256).map { p in (Float(p) / 255 - mean[c]) / std[c] } }
    }

    public var batchesPerEpoch: Int {
        dataset.count / batchSize + (!dropLast && dataset.count % batchSize > 0 ? 1 : 0)
    }

    /// The dataset indices of epoch `epoch` (0-based) in the order its batches take them.
    public func order(epoch: Int) -> [Int] {
        var order = Array(0..<dataset.count)
        guard shuffle else { return order }
        var rng = SeededGenerator(seed: Self.mix(seed, UInt64(epoch)))
        order.seededShuffle(using: &rng)
        return order
    }

    /// The batches of epoch `epoch` (0-based) from batch `batch` on, in order.
    ///
    /// The order and every augmentation draw are functions of (seed, epoch, sample
    /// index) only, so an epoch replays identically after a resume and regardless of
    /// threads. Batches are prepared on a background thread, at most ``prefetch`` ahead,
    /// so the training step does not wait for them.
    public func batches(epoch: Int, startingAt batch: Int = 0) -> BatchSequence {
        precondition(epoch >= 0, "epoch \(epoch) is negative")
        precondition(batch >= 0 && batch <= batchesPerEpoch, "batch \(batch) is outside the epoch's \(batchesPerEpoch) batches")
        return BatchSequence(loader: self, epoch: epoch, batches: batch..<batchesPerEpoch)
    }

    /// This loader's shard of batch number `b` of an epoch whose sample order is `order`.
    func makeBatch(_ b: Int, epoch: Int, order: [Int]) -> Batch {
        let batch = order[(b * batchSize)..<min((b + 1) * batchSize, order.count)]
        // Shard i starts at ⌊count·i / shards⌋, in double width: any valid shard, however many.
        func start(_ i: Int) -> Int { shard.count.dividingFullWidth(batch.count.multipliedFullWidth(by: i)).quotient }
        let indices = Array(batch.dropFirst(start(shard.index)).prefix(start(shard.index + 1) - start(shard.index)))
        let (c, h, w) = (dataset.channels, dataset.height, dataset.width)
        let size = c * h * w
        var images = Tensor(uninitializedShape: [indices.count, c, h, w])
        images.withUnsafeMutablePointer { out in
            dataset.pixels.withUnsafeBufferPointer { pixels in
                normalization.withUnsafeBufferPointer { table in
                    for (k, i) in indices.enumerated() {
                        let draw = augmentationDraw(epoch: epoch, index: i)
                        Kernels.normalizeImage(pixels.baseAddress! + i * size, out + k * size, table: table.baseAddress!,
                                               channels: c, height: h, width: w,
                                               shiftY: draw.shiftY, shiftX: draw.shiftX, flip: draw.flip)
                        if let erase = draw.erase { Kernels.erase(out + k * size, channels: c, height: h, width: w, erase) }
                    }
                }
            }
        }
        return Batch(images: images, labels: indices.map { dataset.labels[$0] }, indices: indices)
    }

    /// Where sample `index` is cropped from in epoch `epoch` (the source pixel of output
    /// pixel `(y, x)` is `(y + shiftY, x + shiftX)`), whether it is then mirrored, and
    /// what random erasing blanks afterwards.
    func augmentationDraw(epoch: Int, index: Int) -> (shiftY: Int, shiftX: Int, flip: Bool, erase: ErasedRectangle?) {
        let padding = augmentation.cropPadding
        guard padding > 0 || augmentation.horizontalFlip || augmentation.erasing > 0 else { return (0, 0, false, nil) }
        var rng = SeededGenerator(seed: Self.mix(Self.mix(seed, UInt64(epoch)), UInt64(index)))
        var shiftY = 0, shiftX = 0
        if padding > 0 {
            shiftY = rng.below(2 * padding + 1) - padding
            shiftX = rng.below(2 * padding + 1) - padding
        }
        let flip = augmentation.horizontalFlip && rng.next() >> 63 == 1
        return (shiftY, shiftX, flip, augmentation.erasing > 0 ? erasedRectangle(using: &rng) : nil)
    }

    /// torchvision's `RandomErasing.get_params` with its default scale and ratio: up to
    /// ten tries for a rectangle that fits, else nothing is erased.
    private func erasedRectangle(using rng: inout SeededGenerator) -> ErasedRectangle? {
        func unit() -> Double { Double(rng.next() >> 11) * 0x1p-53 }
        guard unit() < augmentation.erasing else { return nil }
        let (height, width) = (dataset.height, dataset.width)
        let (scale, logRatio) = ((0.02, 0.33), (log(0.3), log(3.3)))
        for _ in 0..<10 {
            let area = Double(height * width) * (scale.0 + unit() * (scale.1 - scale.0))
            let aspect = exp(logRatio.0 + unit() * (logRatio.1 - logRatio.0))
            // Python's round: halves to even.
            let h = Int((area * aspect).squareRoot().rounded(.toNearestOrEven))
            let w = Int((area / aspect).squareRoot().rounded(.toNearestOrEven))
            guard h < height, w < width else { continue }
            return ErasedRectangle(y: rng.below(height - h + 1), x: rng.below(width - w + 1),
                                   height: h, width: w)
        }
        return nil
    }

    /// A seed that depends on both values: one SplitMix64 step from their combination.
    static func mix(_ a: UInt64, _ b: UInt64) -> UInt64 {
        var rng = SeededGenerator(seed: a ^ (b &* 0xD1B5_4A32_D192_ED03))
        return rng.next()
    }
}
