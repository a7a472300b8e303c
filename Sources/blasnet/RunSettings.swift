import ArgumentParser
import BLASNet
import Foundation

/// Everything that defines a training run, kept in its checkpoints so `--resume` and
/// `eval` rebuild the same model, data pipeline and schedule.
struct RunSettings: Codable, Equatable {
    var archName: String
    var width: Int
    var stemName: String
    var datasetName: String
    var epochs: Int
    var batchSize: Int
    var learningRate: Float
    var optimizer: String
    var schedule: String
    var warmupEpochs: Double
    var weightDecay: Float
    var labelSmoothing: Float
    var cropPadding: Int
    var flip: Bool
    var seed: UInt64
    /// Train and test on these classes only, relabelled in this order (nil: all).
    var classes: [Int]?
    /// Absent from checkpoints written before these settings existed: batch norm, cross-entropy.
    var normName: String?
    var lossName: String?
    var focalGamma: Float?
    var focalAlpha: [Float]?
    /// Random-erasing probability (absent: 0, as before the option existed).
    var randomErasing: Double?
    /// Filled in from the training split when the run starts.
    var mean: [Float] = []
    var std: [Float] = []

    var arch: Architecture {
        get { Architecture(rawValue: archName)! }
        set { archName = newValue.rawValue }
    }
    var stem: Stem {
        get { Stem(rawValue: stemName)! }
        set { stemName = newValue.rawValue }
    }
    var dataset: DatasetName {
        get { DatasetName(rawValue: datasetName)! }
        set { datasetName = newValue.rawValue }
    }
    var norm: Normalization {
        get { normName.flatMap { try? Normalization(parsing: $0) } ?? .batch }
        set { normName = newValue.description }
    }
    var loss: LossOptions.Name {
        get { lossName.flatMap(LossOptions.Name.init(rawValue:)) ?? .crossEntropy }
        set { lossName = newValue.rawValue }
    }

    func makeLoss() throws -> any Loss {
        try LossOptions.make(loss, focalGamma: focalGamma, focalAlpha: focalAlpha, labelSmoothing: labelSmoothing)
    }

    /// `quick`: the default run, about 92% on Fashion-MNIST in under five minutes on two
    /// cores: a width-32 SE-ResNet-8 whose first stage runs at half resolution, five epochs
    /// of one-cycle SGD, flips only (random crops slow a run this short down).
    /// `long`: the same family at full resolution, with random crops, for thirty epochs:
    /// 94.2% measured (about 1.5 h on two quiet cores).
    init(preset: Train.Preset) {
        switch preset {
        case .quick:
            (stemName, epochs, cropPadding) = (Stem.strided.rawValue, 5, 0)
        case .long:
            (stemName, epochs, cropPadding) = (Stem.cifar.rawValue, 30, 2)
        }
        (archName, width) = ("seresnet8", 32)
        datasetName = DatasetName.fashionMNIST.rawValue
        batchSize = 128
        learningRate = 0.1
        optimizer = "sgd"
        schedule = "onecycle"
        warmupEpochs = 0
        weightDecay = 5e-4
        labelSmoothing = 0.1
        flip = true
        seed = 0
    }

    /// AdamW's learning rate and weight decay when the flags give none: torch.optim.AdamW's defaults.
    static let adamW: (learningRate: Float, weightDecay: Float) = (1e-3, 1e-2)

    /// The settings saved in a checkpoint's metadata.
    init(checkpoint: TrainingCheckpoint, path: String) throws {
        guard let json = checkpoint.metadata["settings"],
              var settings = try? JSONDecoder().decode(RunSettings.self, from: Data(json.utf8)),
              Architecture(rawValue: settings.archName) != nil, Stem(rawValue: settings.stemName) != nil,
              DatasetName(rawValue: settings.datasetName) != nil,
              settings.normName.map({ (try? Normalization(parsing: $0)) != nil }) ?? true,
              settings.lossName.map({ LossOptions.Name(rawValue: $0) != nil }) ?? true
        else {
            throw BLASNetError.invalidArgument("checkpoint has no readable run settings (was it written by `blasnet train`?)")
        }
        // Focal runs recorded only the flags given until α's default went from 0.25 to 1.
        if settings.loss == .focal && settings.focalAlpha == nil { settings.focalAlpha = [0.25] }
        do { try settings.validate() } catch let error as ValidationError {
            throw BLASNetError.malformedFile(path: path, reason: "its run settings are out of range: \(error.message)")
        }
        self = settings
    }

    /// Throws, naming the flag, when a setting is outside what a run can take. Flags and a
    /// resumed checkpoint's settings both pass through here, so neither can trap the run later.
    func validate() throws {
        func require(_ holds: Bool, _ message: @autoclosure () -> String) throws {
            if !holds { throw ValidationError(message()) }
        }
        try ModelOptions.check(width: width)
        // Checkpoints carry every epoch's summary in their header (about 180 bytes each), which
        // readers cap at 100 MB: a run of a million epochs would save one no one could resume.
        try require((1...100_000).contains(epochs), "--epochs must be in 1...100000, got \(epochs)")
        try require(batchSize >= 2, "--batch-size must be at least 2 (BatchNorm statistics), got \(batchSize)")
        try require(learningRate > 0 && learningRate.isFinite, "--lr must be positive and finite, got \(learningRate)")
        try require((0...100_000).contains(warmupEpochs), "--warmup must be in 0...100000 epochs, got \(warmupEpochs)")
        try require(weightDecay >= 0 && weightDecay.isFinite, "--weight-decay must be non-negative and finite, got \(weightDecay)")
        try require((0..<1).contains(labelSmoothing), "--label-smoothing must be in [0, 1), got \(labelSmoothing)")
        try require((classes?.count ?? 2) >= 2, "--classes needs at least two classes to tell apart, got \(classes ?? [])")
        try require(cropPadding >= 0, "--crop-padding must be non-negative, got \(cropPadding)")
        try require(randomErasing.map { (0...1).contains($0) } ?? true,
                    "--random-erasing is a probability in 0...1, got \(randomErasing ?? 0)")
        try require(Train.OptimizerName(rawValue: optimizer) != nil, "--optimizer must be sgd or adamw, got \(optimizer)")
        // PyTorch anneals toward an eta_min above the rate too, a rise no one asks for.
        if case let .cosine(minimum) = try LearningRateSchedule.Kind(parsing: schedule) {
            try require(minimum.isFinite && minimum >= 0, "--schedule cosine:minimum=\(minimum) must be finite and non-negative")
            try require(minimum <= learningRate, "--schedule cosine:minimum=\(minimum) is above the peak rate --lr \(learningRate)")
        }
    }

    /// The metadata keys a checkpoint carries: the settings as JSON, and the model's shape
    /// as separate keys that `eval` and other tools read without knowing the JSON.
    func metadata(numClasses: Int, inChannels: Int, classNames: [String]) throws -> [String: String] {
        [
            "settings": String(decoding: try JSONEncoder().encode(self), as: UTF8.self),
            "arch": archName, "width": String(width), "stem": stemName, "norm": norm.description, "in_chans": String(inChannels),
            "num_classes": String(numClasses), "dataset": datasetName, "classes": classesMetadata(classes),
            "mean": mean.map { "\($0)" }.joined(separator: ","), "std": std.map { "\($0)" }.joined(separator: ","),
            "class_names": String(decoding: try JSONEncoder().encode(classNames), as: UTF8.self),
            "rng": "batch order and augmentation are functions of seed \(seed) and the epoch",
            // Not a setting: a resume may take other cores, but its sums then round differently.
            "threads": String(BLAS.threads),
        ]
    }
}

/// The `classes` metadata key: the dataset's class indices the head's outputs stand for,
/// comma-separated ("" for all classes in order).
func classesMetadata(_ classes: [Int]?) -> String {
    classes.map { $0.map(String.init).joined(separator: ",") } ?? ""
}

