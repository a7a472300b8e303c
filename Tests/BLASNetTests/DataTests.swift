import Foundation
import Testing
@testable import BLASNet

/// The data layer on the fixtures of `scripts/make-data-fixtures`, whose contents are
/// given by formulas repeated here, and on damaged copies written to a temporary directory.
struct DataTests {
    // MARK: Fixtures (formulas of scripts/make_data_fixtures.py)

    static let fixtures = Bundle.module.url(forResource: "data", withExtension: nil, subdirectory: "Fixtures")!
    static let mnist = fixtures.appendingPathComponent("mnist")

    /// Pixel (r, c) of IDX fixture image i.
    static func idxPixel(_ i: Int, _ r: Int, _ c: Int) -> UInt8 { UInt8((i * 31 + r * 7 + c * 3) % 256) }
    /// Pixel (ch, y, x) of CIFAR fixture record k.
    static func cifarPixel(_ k: Int, _ ch: Int, _ y: Int, _ x: Int) -> UInt8 { UInt8((k * 17 + ch * 50 + y * 5 + x * 3) % 256) }

    static func idxImages(_ images: Range<Int>) -> [UInt8] {
        images.flatMap { i in (0..<28).flatMap { r in (0..<28).map { c in idxPixel(i, r, c) } } }
    }

    static func cifarImages(_ records: [Int]) -> [UInt8] {
        records.flatMap { k in (0..<3).flatMap { ch in (0..<32).flatMap { y in (0..<32).map { x in cifarPixel(k, ch, y, x) } } } }
    }

    /// A fresh directory, removed when the test's `TemporaryDirectory` goes away.
    final class TemporaryDirectory {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("blasnet-data-\(UUID().uuidString)")

        init() throws { try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true) }

        deinit { try? FileManager.default.removeItem(at: url) }

        /// Writes `bytes` to `name` and returns its path.
        func write(_ name: String, _ bytes: [UInt8]) throws -> String {
            let file = url.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data(bytes).write(to: file)
            return file.path
        }
    }

    static func bytes(_ url: URL) throws -> [UInt8] { try [UInt8](Data(contentsOf: url)) }

    /// Expects `body` to throw `malformedFile` for `path`, with `path` in the message.
    static func expectMalformed(_ path: String, _ what: String, sourceLocation: SourceLocation = #_sourceLocation,
                                _ body: () throws -> Void) {
        let error = #expect(throws: BLASNetError.self, "\(what)", sourceLocation: sourceLocation) { try body() }
        guard let error else { return }
        guard case let .malformedFile(errorPath, _) = error else {
            Issue.record("\(what): expected malformedFile, got \(error)", sourceLocation: sourceLocation)
            return
        }
        #expect(errorPath == path, "\(what): \(error)", sourceLocation: sourceLocation)
        #expect(error.description.contains(path), "\(what): \(error)", sourceLocation: sourceLocation)
    }

    // MARK: IDX

    @Test func idxRawAndGzipHoldTheKnownContents() throws {
        let raw = try IDX.readImages(path: Self.mnist.appendingPathComponent("train-images-idx3-ubyte").path)
        let gz = try IDX.readImages(path: Self.mnist.appendingPathComponent("train-images-idx3-ubyte.gz").path)
        #expect(raw.count == 20 && raw.height == 28 && raw.width == 28)
        #expect(raw.pixels == Self.idxImages(0..<20))
        #expect(gz.count == raw.count && gz.height == raw.height && gz.width == raw.width && gz.pixels == raw.pixels)
        let labels = (0..<20).map { $0 % 10 }
        #expect(try IDX.readLabels(path: Self.mnist.appendingPathComponent("train-labels-idx1-ubyte").path, classes: 10) == labels)
        #expect(try IDX.readLabels(path: Self.mnist.appendingPathComponent("train-labels-idx1-ubyte.gz").path, classes: 10) == labels)
    }

    @Test func gzipIsRecognizedByContentNotName() throws {
        let dir = try TemporaryDirectory()
        let gzipBytes = try Self.bytes(Self.mnist.appendingPathComponent("train-images-idx3-ubyte.gz"))
        let rawBytes = try Self.bytes(Self.mnist.appendingPathComponent("train-images-idx3-ubyte"))
        #expect(gzipBytes.prefix(2) == [0x1F, 0x8B])
        let unnamed = try dir.write("compressed-idx3-ubyte", gzipBytes)
        let misnamed = try dir.write("raw-idx3-ubyte.gz", rawBytes)
        #expect(try IDX.readImages(path: unnamed).pixels == Self.idxImages(0..<20))
        #expect(try IDX.readImages(path: misnamed).pixels == Self.idxImages(0..<20))
    }

    /// Damaged IDX files: (name, bytes, read as images or as labels).
    static func malformedIDX() throws -> [(String, [UInt8], images: Bool)] {
        let images = try bytes(mnist.appendingPathComponent("train-images-idx3-ubyte"))
        let gzip = try bytes(mnist.appendingPathComponent("train-images-idx3-ubyte.gz"))
        let labels = try bytes(mnist.appendingPathComponent("train-labels-idx1-ubyte"))
        let gzipLabels = try bytes(mnist.appendingPathComponent("train-labels-idx1-ubyte.gz"))
        let gzipTestLabels = try bytes(mnist.appendingPathComponent("t10k-labels-idx1-ubyte.gz"))
        func header(_ magic: UInt32, _ dims: [UInt32]) -> [UInt8] {
            ([magic] + dims).flatMap { v in [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: v >> $0) } }
        }
        var badMagic = images, floats = images, corrupt = gzip, badChecksum = gzip, badLabel = labels
        badMagic.replaceSubrange(0..<4, with: [0x12, 0x34, 0x56, 0x78])
        floats[2] = 0x0D
        corrupt[corrupt.count / 2] ^= 0xFF
        badChecksum[badChecksum.count - 8] ^= 0xFF  // the trailer: CRC-32, then length
        badLabel[badLabel.count - 1] = 10
        let pixels = Array(images[16...])
        return [
            ("empty", [], true),
            ("short header", Array(images.prefix(10)), true),
            ("bad magic", badMagic, true),
            ("float32 elements", floats, true),
            ("labels read as images", labels, true),
            ("images read as labels", images, false),
            ("truncated", Array(images.dropLast(100)), true),
            ("header only", Array(images.prefix(16)), true),
            ("trailing bytes", images + [0], true),
            ("dimensions overflow", header(0x0803, [0xFFFF_FFFF, 0xFFFF_FFFF, 0xFFFF_FFFF]) + pixels, true),
            ("dimensions too large", header(0x0803, [0x7FFF_FFFF, 28, 28]) + pixels, true),
            ("zero width", header(0x0803, [20, 28, 0]), true),
            ("truncated gzip", Array(gzip.prefix(gzip.count / 2)), true),
            ("gzip without trailer", Array(gzip.dropLast(4)), true),
            ("corrupt gzip", corrupt, true),
            ("gzip checksum mismatch", badChecksum, true),
            ("label out of range", badLabel, false),
            ("labels truncated", Array(labels.dropLast(1)), false),
            ("second gzip member after the labels", gzipLabels + gzipTestLabels, false),
            ("bytes after the gzip data", gzipLabels + [0, 1], false),
        ]
    }

    @Test(arguments: try malformedIDX().map(\.0))
    func rejectsMalformedIDX(_ name: String) throws {
        let (_, bytes, images) = try #require(try Self.malformedIDX().first { $0.0 == name })
        let dir = try TemporaryDirectory()
        let path = try dir.write(name.replacingOccurrences(of: " ", with: "-") + "-idx-ubyte", bytes)
        Self.expectMalformed(path, name) {
            if images { _ = try IDX.readImages(path: path) } else { _ = try IDX.readLabels(path: path, classes: 10) }
        }
    }

    @Test func labelCountMustMatchImageCount() throws {
        let dir = try TemporaryDirectory()
        let labels = try Self.bytes(Self.mnist.appendingPathComponent("train-labels-idx1-ubyte"))
        var fewer = Array(labels.dropLast(1))
        fewer[7] = 19  // count 19, big-endian in bytes 4..<8
        _ = try dir.write("train-images-idx3-ubyte", try Self.bytes(Self.mnist.appendingPathComponent("train-images-idx3-ubyte")))
        let path = try dir.write("train-labels-idx1-ubyte", fewer)
        Self.expectMalformed(path, "19 labels for 20 images") { _ = try ImageDataset.load(.mnist, split: .train, directory: dir.url) }
    }

    /// A gzip member of no data: header, an empty final deflate block, CRC-32 and length 0.
    static let emptyGzipMember: [UInt8] = [0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0]

    @Test func idxFromMemoryReadsAsFromFiles() throws {
        let raw = try Data(contentsOf: Self.mnist.appendingPathComponent("train-images-idx3-ubyte"))
        let gzip = try Data(contentsOf: Self.mnist.appendingPathComponent("train-images-idx3-ubyte.gz"))
        #expect(try IDX.readImages(data: raw).pixels == Self.idxImages(0..<20))
        #expect(try IDX.readImages(data: gzip).pixels == Self.idxImages(0..<20))
        // Members one after another read as their concatenation, as gunzip reads them.
        let labels = try Self.bytes(Self.mnist.appendingPathComponent("train-labels-idx1-ubyte.gz"))
        let expected = (0..<20).map { $0 % 10 }
        #expect(try IDX.readLabels(data: Data(labels + Self.emptyGzipMember), classes: 10) == expected)
        #expect(try IDX.readLabels(data: Data(Self.emptyGzipMember + labels), classes: 10) == expected)
        Self.expectMalformed("labels in memory", "labels read as images") {
            _ = try IDX.readImages(data: Data(labels), path: "labels in memory")
        }
    }

    @Test func cifarBatchFromMemoryReadsAsLoaded() throws {
        let directory = Self.fixtures.appendingPathComponent("cifar-10-batches-bin")
        let loaded = try ImageDataset.load(.cifar10, split: .test, directory: directory)
        let batch = try ImageDataset(cifarBatch: Data(contentsOf: directory.appendingPathComponent("test_batch.bin")), of: .cifar10)
        #expect(batch.pixels == loaded.pixels && batch.labels == loaded.labels && batch.classNames == loaded.classNames)
        let cifar100 = try ImageDataset(cifarBatch: Data(contentsOf: Self.fixtures.appendingPathComponent("cifar100/test.bin")),
                                        of: .cifar100)
        #expect(cifar100.labels == (200..<203).map { ($0 * 7) % 100 } && cifar100.classNames == (0..<100).map(String.init))
        Self.expectMalformed("one byte", "a byte is no record") { _ = try ImageDataset(cifarBatch: Data([0]), of: .cifar10, path: "one byte") }
        #expect(throws: BLASNetError.invalidArgument("MNIST is not a CIFAR dataset")) {
            try ImageDataset(cifarBatch: Data(), of: .mnist)
        }
    }

    // MARK: Datasets

    @Test func loadsMNISTLayoutRawAndCompressed() throws {
        let train = try ImageDataset.load(.mnist, split: .train, directory: Self.mnist)
        #expect(train.count == 20 && train.channels == 1 && train.height == 28 && train.width == 28)
        #expect(train.pixels == Self.idxImages(0..<20))
        #expect(train.labels == (0..<20).map { $0 % 10 })
        #expect(train.classNames == (0..<10).map(String.init))
        // The test split is there only gzip-compressed.
        let test = try ImageDataset.load(.fashionMNIST, split: .test, directory: Self.mnist)
        #expect(test.count == 10)
        #expect(test.pixels == Self.idxImages(20..<30))
        #expect(test.labels == (20..<30).map { $0 % 10 })
        #expect(test.classNames == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"])
    }

    @Test func loadsCIFAR10FromTheArchiveDirectoryOrDirectly() throws {
        let train = try ImageDataset.load(.cifar10, split: .train, directory: Self.fixtures)
        #expect(train.count == 10 && train.channels == 3 && train.height == 32 && train.width == 32)
        #expect(train.labels == (0..<10).map { ($0 * 3 + 1) % 10 })
        #expect(train.pixels == Self.cifarImages(Array(0..<10)))
        #expect(train.classNames == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"])
        let test = try ImageDataset.load(.cifar10, split: .test, directory: Self.fixtures.appendingPathComponent("cifar-10-batches-bin"))
        #expect(test.labels == (100..<103).map { ($0 * 3 + 1) % 10 })
        #expect(test.pixels == Self.cifarImages(Array(100..<103)))
    }

    @Test func loadsCIFAR100FineLabelsAndNames() throws {
        let dir = Self.fixtures.appendingPathComponent("cifar100")
        let train = try ImageDataset.load(.cifar100, split: .train, directory: dir)
        #expect(train.count == 8 && train.numClasses == 100)
        #expect(train.labels == (0..<8).map { ($0 * 7) % 100 })
        #expect(train.pixels == Self.cifarImages(Array(0..<8)))
        #expect(train.classNames.first == "class_00" && train.classNames.last == "class_99")
        let test = try ImageDataset.load(.cifar100, split: .test, directory: dir)
        #expect(test.labels == (200..<203).map { ($0 * 7) % 100 })

        // Without fine_label_names.txt the classes are numbered; in the archive's directory name too.
        let temp = try TemporaryDirectory()
        _ = try temp.write("cifar-100-binary/test.bin", try Self.bytes(dir.appendingPathComponent("test.bin")))
        let numbered = try ImageDataset.load(.cifar100, split: .test, directory: temp.url)
        #expect(numbered.classNames == (0..<100).map(String.init))
        #expect(numbered.pixels == test.pixels)
    }

    @Test func rejectsMalformedCIFAR() throws {
        let temp = try TemporaryDirectory()
        let record10 = [UInt8(3)] + Self.cifarImages([0]), record100 = [UInt8(1), 2] + Self.cifarImages([0])
        let cases: [(String, DatasetName, String, [UInt8])] = [
            ("empty", .cifar10, "test_batch.bin", []),
            ("partial record", .cifar10, "test_batch.bin", record10 + record10.prefix(100)),
            ("CIFAR-100 record read as CIFAR-10", .cifar10, "test_batch.bin", record100 + record100),
            ("label out of range", .cifar10, "test_batch.bin", record10 + [10] + record10.dropFirst()),
            ("fine label out of range", .cifar100, "test.bin", record100 + [1, 100] + record100.dropFirst(2)),
        ]
        for (index, (name, dataset, file, bytes)) in cases.enumerated() {
            let path = try temp.write("\(index)/\(file)", bytes)
            Self.expectMalformed(path, name) {
                _ = try ImageDataset.load(dataset, split: .test, directory: temp.url.appendingPathComponent("\(index)"))
            }
        }
        _ = try temp.write("names/test.bin", record100)
        let names = try temp.write("names/fine_label_names.txt", Array("apple\npear\n".utf8))
        Self.expectMalformed(names, "two class names") {
            _ = try ImageDataset.load(.cifar100, split: .test, directory: temp.url.appendingPathComponent("names"))
        }
    }

    @Test func missingDatasetSaysWhereAndHow() throws {
        let nowhere = URL(fileURLWithPath: "/nonexistent/blasnet-data")
        func message(_ name: DatasetName, _ directory: URL?) -> String {
            let error = #expect(throws: BLASNetError.self) { try ImageDataset.load(name, split: .train, directory: directory) }
            guard case .datasetMissing = error else {
                Issue.record("expected datasetMissing, got \(String(describing: error))")
                return ""
            }
            return error?.description ?? ""
        }
        let fashion = message(.fashionMNIST, nowhere)
        #expect(fashion.contains("train-images-idx3-ubyte") && fashion.contains(nowhere.path), "\(fashion)")
        #expect(fashion.contains("sudo apt-get install dataset-fashion-mnist"), "\(fashion)")
        #expect(message(.mnist, nowhere).contains("--data"))
        let cifar = message(.cifar10, nil)
        #expect(cifar.contains("https://www.cs.toronto.edu/~kriz/cifar.html") && cifar.contains("--data"), "\(cifar)")
        #expect(message(.cifar100, nowhere).contains("cifar-100-binary"))

        // A batch missing from an otherwise present CIFAR-10 is named.
        let temp = try TemporaryDirectory()
        for b in [1, 2, 4, 5] {
            _ = try temp.write("data_batch_\(b).bin", [UInt8(0)] + Self.cifarImages([0]))
        }
        #expect(message(.cifar10, temp.url).contains("data_batch_3.bin"))
    }

    @Test func datasetValidatesSubsetsAndMeasures() throws {
        #expect(throws: BLASNetError.self) { try ImageDataset(pixels: [1, 2, 3], labels: [0, 1], channels: 1, height: 1, width: 2, classNames: ["a", "b"]) }
        #expect(throws: BLASNetError.self) { try ImageDataset(pixels: [1, 2], labels: [0, 2], channels: 1, height: 1, width: 1, classNames: ["a", "b"]) }
        #expect(throws: BLASNetError.self) { try ImageDataset(pixels: [], labels: [], channels: 1, height: 1, width: 1, classNames: []) }

        // Two 2-channel 1×2 images.
        let ds = try ImageDataset(pixels: [0, 255, 51, 51, 255, 255, 102, 153], labels: [1, 0], channels: 2, height: 1, width: 2,
                                  classNames: ["a", "b"])
        let sub = ds.subset([1, 1, 0])
        #expect(sub.count == 3 && sub.labels == [0, 0, 1])
        #expect(sub.pixels == [255, 255, 102, 153, 255, 255, 102, 153, 0, 255, 51, 51])
        let stats = try ds.channelStatistics()
        // Channel 0: 0, 255, 255, 255 → mean 0.75, std √(0.75 − 0.5625); channel 1: 51, 51, 102, 153.
        #expect(abs(stats.mean[0] - 0.75) < 1e-7 && abs(stats.std[0] - Float(0.1875.squareRoot())) < 1e-7)
        let m1 = (51.0 + 51 + 102 + 153) / 4 / 255
        let s1 = ([51.0, 51, 102, 153].map { pow($0 / 255 - m1, 2) }.reduce(0, +) / 4).squareRoot()
        #expect(abs(Double(stats.mean[1]) - m1) < 1e-7 && abs(Double(stats.std[1]) - s1) < 1e-7)
        #expect(throws: BLASNetError.self) { try ds.subset([]).channelStatistics() }
    }

    @Test func seededShuffleIsFisherYatesOverSplitMix64() {
        // From an independent Python SplitMix64 and Fisher–Yates (j = ⌊draw·(i + 1) / 2⁶⁴⌋, i from
        // the end): seeded runs and resumes depend on this order never changing.
        for (seed, expected) in [(UInt64(42), [8, 3, 6, 5, 4, 0, 9, 2, 1, 7]), (0, [4, 9, 2, 5, 1, 7, 6, 0, 3, 8])] {
            var rng = SeededGenerator(seed: seed), order = Array(0..<10)
            order.seededShuffle(using: &rng)
            #expect(order == expected)
        }
    }

    @Test func samplingPerClassTakesThatManyOfEveryClass() throws {
        // Labels 0, 1, 2 with 5, 4 and 3 one-pixel images; each pixel is its index.
        let labels = [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 0]
        let ds = try ImageDataset(pixels: (0..<12).map(UInt8.init), labels: labels, channels: 1, height: 1, width: 1,
                                  classNames: ["a", "b", "c"])
        let sample = try ds.sampling(perClass: 3, seed: 5)
        #expect(sample.count == 9)
        #expect((0..<3).map { c in sample.labels.filter { $0 == c }.count } == [3, 3, 3])
        // Whole images with their labels, in dataset order, none twice.
        #expect(sample.pixels == sample.pixels.sorted() && Set(sample.pixels).count == 9)
        #expect(zip(sample.pixels, sample.labels).allSatisfy { labels[Int($0)] == $1 })
        #expect(try ds.sampling(perClass: 3, seed: 5).pixels == sample.pixels)
        // Class a has two images left out of five: some seed leaves out others.
        #expect(try (6..<20).contains { try ds.sampling(perClass: 3, seed: $0).pixels != sample.pixels })
        let short = #expect(throws: BLASNetError.self) { try ds.sampling(perClass: 4, seed: 1) }
        #expect(short.map { "\($0)" }?.contains("class c has 3 images, fewer than 4") == true)
    }

    // MARK: DataLoader

    static let mean: [Float] = [0.25], std: [Float] = [0.5]
    static func mnistTrain() throws -> ImageDataset { try ImageDataset.load(.mnist, split: .train, directory: mnist) }

    /// `(pixel / 255 − mean) / std` of dataset image `i`, cropped and mirrored the long
    /// way: pad with zeros, take the window at the crop offset, reverse the columns.
    static func expectedImage(_ ds: ImageDataset, _ i: Int, shiftY: Int, shiftX: Int, flip: Bool, padding: Int,
                              mean: [Float], std: [Float]) -> [Float] {
        let (h, w) = (ds.height, ds.width)
        var out: [Float] = []
        for c in 0..<ds.channels {
            var padded = [[UInt8]](repeating: [UInt8](repeating: 0, count: w + 2 * padding), count: h + 2 * padding)
            for y in 0..<h { for x in 0..<w { padded[y + padding][x + padding] = ds.pixels[((i * ds.channels + c) * h + y) * w + x] } }
            let top = padding + shiftY, left = padding + shiftX
            for y in 0..<h {
                var row = Array(padded[top + y][left..<(left + w)])
                if flip { row.reverse() }
                out += row.map { (Float($0) / 255 - mean[c]) / std[c] }
            }
        }
        return out
    }

    static func allIndices(_ loader: DataLoader, epoch: Int) -> [Int] { loader.batches(epoch: epoch).flatMap(\.indices) }

    @Test func everyIndexOncePerEpochInASeededOrder() throws {
        let ds = try Self.mnistTrain()
        let loader = try DataLoader(dataset: ds, batchSize: 6, shuffle: true, seed: 7, mean: Self.mean, std: Self.std)
        let same = try DataLoader(dataset: ds, batchSize: 6, shuffle: true, seed: 7, mean: Self.mean, std: Self.std, prefetch: 5)
        let other = try DataLoader(dataset: ds, batchSize: 6, shuffle: true, seed: 8, mean: Self.mean, std: Self.std)
        let epoch0 = Self.allIndices(loader, epoch: 0)
        #expect(epoch0.sorted() == Array(0..<20))
        #expect(epoch0 == loader.order(epoch: 0))
        #expect(epoch0 != Array(0..<20))
        #expect(Self.allIndices(same, epoch: 0) == epoch0)
        #expect(Self.allIndices(loader, epoch: 1) != epoch0)
        #expect(Self.allIndices(loader, epoch: 1).sorted() == Array(0..<20))
        #expect(Self.allIndices(other, epoch: 0) != epoch0)
        let ordered = try DataLoader(dataset: ds, batchSize: 6, shuffle: false, seed: 7, mean: Self.mean, std: Self.std)
        #expect(Self.allIndices(ordered, epoch: 3) == Array(0..<20))
    }

    @Test func batchCountsWithAndWithoutDropLast() throws {
        let ds = try Self.mnistTrain()
        let keep = try DataLoader(dataset: ds, batchSize: 8, shuffle: true, seed: 1, mean: Self.mean, std: Self.std)
        let drop = try DataLoader(dataset: ds, batchSize: 8, shuffle: true, seed: 1, mean: Self.mean, std: Self.std, dropLast: true)
        #expect(keep.batchesPerEpoch == 3 && drop.batchesPerEpoch == 2)
        #expect(keep.batches(epoch: 0).map(\.labels.count) == [8, 8, 4])
        #expect(drop.batches(epoch: 0).map(\.images.shape) == [[8, 1, 28, 28], [8, 1, 28, 28]])
        #expect(Array(drop.batches(epoch: 0).flatMap(\.indices)) == Array(keep.order(epoch: 0).prefix(16)))
    }

    @Test func normalizesExactly() throws {
        let ds = try Self.mnistTrain()
        let loader = try DataLoader(dataset: ds, batchSize: 7, shuffle: true, seed: 3, mean: Self.mean, std: Self.std)
        for batch in loader.batches(epoch: 0) {
            #expect(batch.labels == batch.indices.map { ds.labels[$0] })
            let expected = batch.indices.flatMap { i in
                Self.idxImages(i..<(i + 1)).map { (Float($0) / 255 - Self.mean[0]) / Self.std[0] }
            }
            #expect(batch.images.scalars == expected)
        }
    }

    @Test func cropAndFlipShiftAndMirrorTheImage() throws {
        let ds = try ImageDataset.load(.cifar10, split: .train, directory: Self.fixtures)
        let mean: [Float] = [0.4, 0.5, 0.6], std: [Float] = [0.2, 0.25, 0.3]
        let augmentation = Augmentation(cropPadding: 4, horizontalFlip: true)
        let loader = try DataLoader(dataset: ds, batchSize: 4, shuffle: true, seed: 11, mean: mean, std: std, augmentation: augmentation)
        var flips = Set<Bool>(), shifts = Set<Int>()
        for epoch in 0..<3 {
            for batch in loader.batches(epoch: epoch) {
                let size = 3 * 32 * 32
                for (k, i) in batch.indices.enumerated() {
                    let draw = loader.augmentationDraw(epoch: epoch, index: i)
                    #expect((-4...4).contains(draw.shiftY) && (-4...4).contains(draw.shiftX))
                    flips.insert(draw.flip)
                    shifts.formUnion([draw.shiftY, draw.shiftX])
                    let expected = Self.expectedImage(ds, i, shiftY: draw.shiftY, shiftX: draw.shiftX, flip: draw.flip, padding: 4,
                                                      mean: mean, std: std)
                    let got = Array(batch.images.scalars[(k * size)..<((k + 1) * size)])
                    #expect(got == expected, "epoch \(epoch) sample \(i) draw \(draw)")
                }
            }
        }
        #expect(flips == [false, true])
        #expect(shifts.count > 5, "crop offsets vary: \(shifts)")
        // The draws depend on (seed, epoch, index) only: another loader replays them.
        let again = try DataLoader(dataset: ds, batchSize: 3, shuffle: true, seed: 11, mean: mean, std: std,
                                   augmentation: augmentation, prefetch: 1)
        let a = loader.batches(epoch: 2).flatMap { $0.images.scalars }, b = again.batches(epoch: 2).flatMap { $0.images.scalars }
        #expect(a == b)
    }

    @Test func randomErasingBlanksARectangleOfTorchvisionsShape() throws {
        let ds = try ImageDataset.load(.cifar10, split: .train, directory: Self.fixtures)
        let mean: [Float] = [0.4, 0.5, 0.6], std: [Float] = [0.2, 0.25, 0.3]
        let (h, w, size) = (32, 32, 3 * 32 * 32)
        let plain = try DataLoader(dataset: ds, batchSize: 4, shuffle: false, seed: 5, mean: mean, std: std,
                                   augmentation: Augmentation(horizontalFlip: true))
        let erasing = try DataLoader(dataset: ds, batchSize: 4, shuffle: false, seed: 5, mean: mean, std: std,
                                     augmentation: Augmentation(horizontalFlip: true, erasing: 0.5))
        var erased = 0, draws = 0
        for epoch in 0..<40 {
            for (before, after) in zip(plain.batches(epoch: epoch), erasing.batches(epoch: epoch)) {
                for (k, i) in after.indices.enumerated() {
                    let draw = erasing.augmentationDraw(epoch: epoch, index: i)
                    // Erasing comes after the crop and flip, whose draws it leaves as they were.
                    #expect(draw.flip == plain.augmentationDraw(epoch: epoch, index: i).flip)
                    draws += 1
                    let got = after.images.scalars[(k * size)..<((k + 1) * size)]
                    var expected = Array(before.images.scalars[(k * size)..<((k + 1) * size)])
                    if let r = draw.erase {
                        erased += 1
                        let area = Double(r.height * r.width) / Double(h * w), aspect = Double(r.height) / Double(r.width)
                        #expect(r.y >= 0 && r.x >= 0 && r.y + r.height <= h && r.x + r.width <= w, "\(r)")
                        // Rounding each side moves the area and aspect a little off torchvision's ranges.
                        #expect(area > 0.01 && area < 0.38 && aspect > 0.2 && aspect < 5, "\(r)")
                        for c in 0..<3 { for y in r.y..<(r.y + r.height) { for x in r.x..<(r.x + r.width) { expected[(c * h + y) * w + x] = 0 } } }
                    }
                    #expect(Array(got) == expected, "epoch \(epoch) sample \(i) erase \(String(describing: draw.erase))")
                }
            }
        }
        #expect(abs(Double(erased) / Double(draws) - 0.5) < 0.1, "\(erased) of \(draws) erased at p = 0.5")
        #expect(throws: BLASNetError.self) {
            try DataLoader(dataset: ds, batchSize: 4, shuffle: false, seed: 5, mean: mean, std: std, augmentation: Augmentation(erasing: 1.5))
        }
    }

    @Test func normalizeImageKernelCropsAndMirrors() {
        // One 1×3×4 image, pixels 1…12; table maps pixel p to p (and padding 0 to 0).
        let src: [UInt8] = Array(1...12)
        let table = (0..<256).map(Float.init)
        var out = [Float](repeating: -1, count: 12)
        Kernels.normalizeImage(src, &out, table: table, channels: 1, height: 3, width: 4, shiftY: 1, shiftX: -1, flip: false)
        #expect(out == [0, 5, 6, 7, 0, 9, 10, 11, 0, 0, 0, 0])
        Kernels.normalizeImage(src, &out, table: table, channels: 1, height: 3, width: 4, shiftY: -1, shiftX: 2, flip: true)
        // Crop: rows (−1, 0, 1), columns (2, 3, 4, 5) → [0 0 0 0], [3 4 0 0], [7 8 0 0]; then mirrored.
        #expect(out == [0, 0, 0, 0, 0, 0, 4, 3, 0, 0, 8, 7])
        Kernels.normalizeImage(src, &out, table: table, channels: 1, height: 3, width: 4, shiftY: 0, shiftX: 0, flip: true)
        #expect(out == [4, 3, 2, 1, 8, 7, 6, 5, 12, 11, 10, 9])
        Kernels.normalizeImage(src, &out, table: table, channels: 1, height: 3, width: 4, shiftY: 0, shiftX: 9, flip: false)
        #expect(out == [Float](repeating: 0, count: 12))
    }

    @Test func startingAtResumesMidEpoch() throws {
        let ds = try Self.mnistTrain()
        let loader = try DataLoader(dataset: ds, batchSize: 3, shuffle: true, seed: 5, mean: Self.mean, std: Self.std,
                                    augmentation: Augmentation(cropPadding: 2, horizontalFlip: true))
        let full = Array(loader.batches(epoch: 4))
        let tail = Array(loader.batches(epoch: 4, startingAt: 5))
        #expect(full.count == 7 && tail.count == 2)
        #expect(tail.map(\.indices) == full.suffix(2).map(\.indices))
        #expect(tail.map(\.images) == full.suffix(2).map(\.images))
        #expect(Array(loader.batches(epoch: 4, startingAt: 7)).isEmpty)
    }

    @Test func shardsOfEveryBatchMakeUpTheWholeBatch() throws {
        let ds = try Self.mnistTrain()
        func loader(_ shard: Shard, dropLast: Bool) throws -> DataLoader {
            try DataLoader(dataset: ds, batchSize: 6, shuffle: true, seed: 9, mean: Self.mean, std: Self.std,
                           augmentation: Augmentation(cropPadding: 2, horizontalFlip: true), dropLast: dropLast, shard: shard)
        }
        for dropLast in [true, false] {
            let whole = Array(try loader(.whole, dropLast: dropLast).batches(epoch: 3))
            let shards = try (0..<3).map { Array(try loader(Shard(index: $0, count: 3), dropLast: dropLast).batches(epoch: 3)) }
            #expect(shards.allSatisfy { $0.count == whole.count })
            for (b, batch) in whole.enumerated() {
                #expect(shards.flatMap { $0[b].indices } == batch.indices)
                #expect(shards.flatMap { $0[b].images.scalars } == batch.images.scalars)
            }
        }
        // Training batches must split evenly, or the processes' gradients would weigh images unequally.
        #expect(throws: BLASNetError.self) { try loader(Shard(index: 0, count: 4), dropLast: true) }
        #expect(throws: BLASNetError.self) { try loader(Shard(index: 3, count: 3), dropLast: false) }
        // A valid shard of an absurd count: `count · index` used to overflow and trap.
        // Shard i starts at ⌊6·i / count⌋: this last one holds each batch's last image.
        let last = try loader(Shard(index: Int.max - 1, count: Int.max), dropLast: false).batches(epoch: 0).map(\.indices)
        #expect(try last == loader(.whole, dropLast: false).batches(epoch: 0).map { [$0.indices.last!] })
    }

    @Test func abandoningAnIteratorStopsItsThread() throws {
        let ds = try Self.mnistTrain()
        weak var released: DataLoader?
        do {
            let loader = try DataLoader(dataset: ds, batchSize: 1, shuffle: true, seed: 2, mean: Self.mean, std: Self.std, prefetch: 1)
            released = loader
            var iterator = loader.batches(epoch: 0).makeIterator()
            #expect(iterator.next()?.indices.count == 1)
            for _ in loader.batches(epoch: 1) { break }
            _ = loader.batches(epoch: 2).makeIterator()
        }
        // The producers hold the loader until they return; once every one has seen its
        // consumer go, the loader is freed.
        let deadline = Date().addingTimeInterval(20)
        while released != nil && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        #expect(released == nil, "a producer thread is still running")
    }

    @Test func loaderRejectsBadArguments() throws {
        let ds = try Self.mnistTrain()
        func make(batchSize: Int = 4, mean: [Float] = [0], std: [Float] = [1], augmentation: Augmentation = .none, prefetch: Int = 2) throws {
            _ = try DataLoader(dataset: ds, batchSize: batchSize, shuffle: false, seed: 0, mean: mean, std: std,
                               augmentation: augmentation, prefetch: prefetch)
        }
        #expect(throws: BLASNetError.self) { try make(batchSize: 0) }
        #expect(throws: BLASNetError.self) { try make(prefetch: 0) }
        #expect(throws: BLASNetError.self) { try make(mean: [0, 0], std: [1, 1]) }
        #expect(throws: BLASNetError.self) { try make(std: [0]) }
        #expect(throws: BLASNetError.self) { try make(mean: [.nan]) }
        #expect(throws: BLASNetError.self) { try make(augmentation: Augmentation(cropPadding: -1)) }
    }

    // MARK: The real Fashion-MNIST

    static let fashionMNISTInstalled = FileManager.default.fileExists(atPath: "/usr/share/datasets/fashion-mnist")

    @Test(.enabled(if: fashionMNISTInstalled, "needs the Debian package dataset-fashion-mnist"))
    func loadsInstalledFashionMNIST() throws {
        let train = try ImageDataset.load(.fashionMNIST, split: .train)
        let test = try ImageDataset.load(.fashionMNIST, split: .test)
        #expect(train.count == 60000 && test.count == 10000)
        #expect([train.channels, train.height, train.width] == [1, 28, 28] && [test.channels, test.height, test.width] == [1, 28, 28])
        #expect(train.numClasses == 10)
        // Fashion-MNIST is balanced: 6000 training and 1000 test images per class.
        #expect((0..<10).map { c in train.labels.count(where: { $0 == c }) } == Array(repeating: 6000, count: 10))
        #expect((0..<10).map { c in test.labels.count(where: { $0 == c }) } == Array(repeating: 1000, count: 10))
        // The published normalization constants.
        let stats = try train.channelStatistics()
        #expect(abs(stats.mean[0] - 0.2860) < 5e-4 && abs(stats.std[0] - 0.3530) < 5e-4, "\(stats)")
        let loader = try DataLoader(dataset: test, batchSize: 128, shuffle: true, seed: 0, mean: stats.mean, std: stats.std,
                                    augmentation: Augmentation(cropPadding: 2, horizontalFlip: true))
        #expect(loader.batches(epoch: 0).flatMap(\.indices).sorted() == Array(0..<10000))
    }
}
