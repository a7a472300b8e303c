import Foundation

/// The binary versions of CIFAR-10 and CIFAR-100: files of fixed-size records, each the
/// label bytes then a 32×32 colour image, channel-major (1024 red, 1024 green, 1024 blue
/// bytes; rows top to bottom), which is already the `[C, H, W]` layout of a dataset.
enum CIFAR {
    static let channels = 3, height = 32, width = 32
    static let imageBytes = channels * height * width

    static let cifar10ClassNames = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

    /// CIFAR has no Debian package and no standard place on disk.
    static let hint = "download the binary version from https://www.cs.toronto.edu/~kriz/cifar.html and pass --data DIR"

    /// How one of the two datasets lays out its files and records.
    struct Layout {
        /// The directory the distributed archive unpacks to.
        let subdirectory: String
        let trainFiles: [String], testFiles: [String]
        /// CIFAR-10 records carry one label byte; CIFAR-100's a coarse then a fine label.
        /// The last one is the label used: CIFAR-100's 100 fine classes.
        let labelBytes: Int
        let classes: Int

        func files(_ split: Split) -> [String] { split == .train ? trainFiles : testFiles }
        var recordBytes: Int { labelBytes + imageBytes }
    }

    static let cifar10 = Layout(subdirectory: "cifar-10-batches-bin", trainFiles: (1...5).map { "data_batch_\($0).bin" },
                                testFiles: ["test_batch.bin"], labelBytes: 1, classes: 10)
    static let cifar100 = Layout(subdirectory: "cifar-100-binary", trainFiles: ["train.bin"], testFiles: ["test.bin"],
                                 labelBytes: 2, classes: 100)

    /// The layout of `name`; throws for a dataset that is not CIFAR.
    static func layout(_ name: DatasetName) throws -> Layout {
        switch name {
        case .cifar10: cifar10
        case .cifar100: cifar100
        case .fashionMNIST, .mnist: throw BLASNetError.invalidArgument("\(name.displayName) is not a CIFAR dataset")
        }
    }

    static func load(_ name: DatasetName, split: Split, directory: URL?) throws -> ImageDataset {
        let layout = try layout(name)
        let files = layout.files(split)
        func missing(_ lookedFor: String) -> BLASNetError {
            .datasetMissing(dataset: name.displayName, lookedFor: lookedFor, hint: hint)
        }
        guard let directory else { throw missing("\(files[0]), but no directory was given (CIFAR has no default location)") }
        // The files may sit in the given directory or in the one the archive unpacks to inside it.
        let nested = directory.appendingPathComponent(layout.subdirectory)
        guard let base = [directory, nested].first(where: { exists($0.appendingPathComponent(files[0])) }) else {
            throw missing("\(files[0]) in \(directory.path) and \(nested.path)")
        }
        var pixels: [UInt8] = [], labels: [Int] = []
        for file in files {
            let url = base.appendingPathComponent(file)
            guard exists(url) else { throw missing("\(file) in \(base.path)") }
            try readRecords(fileContents(url.path), path: url.path, layout: layout, pixels: &pixels, labels: &labels)
        }
        let classNames = name == .cifar10 ? cifar10ClassNames : try fineLabelNames(in: base, classes: layout.classes)
        return try ImageDataset(pixels: pixels, labels: labels, channels: channels, height: height, width: width,
                                classNames: classNames)
    }

    /// Appends the records of a batch file's bytes `data` to `pixels` and `labels`;
    /// `path` names the file in errors.
    static func readRecords(_ data: Data, path: String, layout: Layout, pixels: inout [UInt8], labels: inout [Int]) throws {
        let record = layout.recordBytes
        guard !data.isEmpty, data.count % record == 0 else {
            throw BLASNetError.malformedFile(
                path: path, reason: "file is \(data.count) bytes, not a whole number of \(record)-byte records (\(layout.labelBytes == 1 ? "1 label byte" : "\(layout.labelBytes) label bytes") + \(imageBytes) pixels)")
        }
        let records = data.count / record
        pixels.reserveCapacity(pixels.count + records * imageBytes)
        labels.reserveCapacity(labels.count + records)
        try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            for r in 0..<records {
                let start = r * record
                let label = Int(raw[start + layout.labelBytes - 1])
                guard label < layout.classes else {
                    throw BLASNetError.malformedFile(path: path, reason: "label \(label) of record \(r) is not below the \(layout.classes) classes")
                }
                labels.append(label)
                pixels.append(contentsOf: UnsafeRawBufferPointer(rebasing: raw[(start + layout.labelBytes)..<(start + record)]))
            }
        }
    }

    /// CIFAR-100's class names from `fine_label_names.txt` beside the batches (one per
    /// line, in label order), or the labels' numbers when that file is absent.
    static func fineLabelNames(in directory: URL, classes: Int) throws -> [String] {
        let url = directory.appendingPathComponent("fine_label_names.txt")
        guard exists(url) else { return (0..<classes).map(String.init) }
        let text: String
        do {
            text = try String(contentsOf: url, encoding: .utf8)
        } catch {
            throw BLASNetError.io("cannot read \(url.path): \((error as NSError).localizedDescription)")
        }
        let names = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard names.count == classes else {
            throw BLASNetError.malformedFile(path: url.path, reason: "\(names.count) class names, expected \(classes)")
        }
        return names
    }

    private static func exists(_ url: URL) -> Bool { FileManager.default.fileExists(atPath: url.path) }
}

extension ImageDataset {
    /// The images of one CIFAR-10 or CIFAR-100 binary batch held in memory (the bytes of
    /// a file such as `data_batch_1.bin` or `test.bin`), checked as
    /// ``load(_:split:directory:)`` checks batch files. CIFAR-10's classes carry their
    /// names, CIFAR-100's their numbers; `path` only names the data in errors.
    public init(cifarBatch data: Data, of dataset: DatasetName, path: String = "CIFAR data") throws {
        let layout = try CIFAR.layout(dataset)
        var pixels: [UInt8] = [], labels: [Int] = []
        try CIFAR.readRecords(data, path: path, layout: layout, pixels: &pixels, labels: &labels)
        try self.init(pixels: pixels, labels: labels, channels: CIFAR.channels, height: CIFAR.height, width: CIFAR.width,
                      classNames: dataset == .cifar10 ? CIFAR.cifar10ClassNames : (0..<layout.classes).map(String.init))
    }
}
