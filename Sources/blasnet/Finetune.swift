import ArgumentParser
import BLASNet
import Foundation

/// Fine-tunes pretrained weights on a (usually small) labelled dataset in one of the
/// notes' four regimes, or measures the data and picks the regime itself.
struct Finetune: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fine-tune pretrained weights: --strategy head|partial:K|full|scratch|auto.",
        discussion: """
            head: new classifier fitted in closed form (ridge least squares, LAPACKE) on the frozen \
            features pooled over a 2×2 grid (--head-grid), optionally polished by --epochs of SGD. partial:K: stem and first K stages \
            frozen; or name what to freeze with --strategy partial --freeze conv1,bn1,layer1 (state_dict \
            prefixes, down to single blocks such as layer2.0). full: everything trained at --lr (default 0.01). scratch: the weights are \
            ignored. auto: measures images per class and the BatchNorm shift of the new data from \
            the pretrained statistics, then picks one and says why. Frozen BatchNorms keep their \
            running statistics.
            """
    )

    @Option(help: "Pretrained weights (.safetensors): a `blasnet train` checkpoint or a state_dict.")
    var weights: String

    @Option(help: "head, partial:K, partial (with --freeze), full, scratch or auto.")
    var strategy = "auto"

    @Option(help: "With --strategy partial: the layers to freeze, as comma-separated state_dict prefixes (conv1,bn1,layer1,layer2.0).")
    var freeze: String?

    @OptionGroup var shape: RecordedModelOptions
    @OptionGroup var normalization: InputNormalizationOptions

    @Option(help: "Dataset to fine-tune on.")
    var dataset: DatasetName = .fashionMNIST

    @Option(help: "Directory holding the dataset's files.")
    var data: String?

    @Option(help: "Only these classes, relabelled in the order given: a list (5,6,7) or a range (5-9).",
            transform: ClassList.init(parsing:))
    var classes: ClassList?

    @Option(parsing: .unconditional, help: "Images per class taken from the training split (default: all).")
    var perClass: Int?

    @Option(parsing: .unconditional, help: "SGD epochs (for head: polishing after the closed-form fit; default 0 for head, otherwise enough for 200 steps, at least 10).")
    var epochs: Int?

    @Option(parsing: .unconditional, help: "Peak learning rate (default: 0.01 for head and full, 0.05 for partial, 0.1 for scratch).")
    var lr: Float?

    @Option(parsing: .unconditional, help: "Images per step.")
    var batchSize = 64

    @Option(parsing: .unconditional, help: "Random crop after zero padding by this many pixels while SGD trains (0: off); the closed-form head fit sees the images unaugmented.")
    var cropPadding = 0

    @Option(help: "Random horizontal flips while SGD trains: true or false; the closed-form head fit sees the images unaugmented.")
    var flip = true

    @Option(parsing: .unconditional, help: "The new head's pooling grid: fc reads each channel's mean over a G×G grid of the last feature map (default: 2 for head, whose frozen features lose where things are under a global average, unless that map is 1×1; 1 otherwise).")
    var headGrid: Int?

    @Option(parsing: .unconditional, help: "Ridge λ of the closed-form head, relative to the mean squared feature norm (default: chosen by generalized cross-validation).")
    var ridge: Double?

    @Option(parsing: .unconditional, help: "Seed for sampling, the new head, batch order.")
    var seed: UInt64 = 0

    @OptionGroup var compute: ComputeOptions

    @Option(help: "Where to write finetuned.safetensors (created if needed).")
    var out = "runs/finetune"

    @Flag(help: "Replace a finetuned.safetensors already in --out.")
    var overwrite = false

    func validate() throws {
        _ = try requestedStrategy()
        if let classes, classes.values.count < 2 {
            throw ValidationError("--classes needs at least two classes to tell apart, got \(classes.values)")
        }
        // λ = 0 leaves the normal equations singular whenever features outnumber images.
        if let ridge, !(ridge > 0 && ridge.isFinite) { throw ValidationError("--ridge must be positive and finite, got \(ridge)") }
        if let lr, !(lr > 0 && lr.isFinite) { throw ValidationError("--lr must be positive and finite, got \(lr)") }
        if cropPadding < 0 { throw ValidationError("--crop-padding must be non-negative, got \(cropPadding)") }
        if let perClass, perClass <= 0 { throw ValidationError("--per-class must be positive, got \(perClass)") }
        if let epochs, !(0...1_000_000).contains(epochs) { throw ValidationError("--epochs must be in 0...1000000, got \(epochs)") }
        guard batchSize >= 2 else { throw ValidationError("--batch-size must be at least 2, got \(batchSize)") }
        if let headGrid { try ModelOptions.check(headGrid: headGrid) }
        try OutputDirectory.checkNothingReplaced(URL(fileURLWithPath: out).appendingPathComponent("finetuned.safetensors").path,
                                                 overwrite: overwrite,
                                                 otherwise: "it holds an earlier fine-tuned model")
    }

    func run() throws {
        try OutputDirectory.removingIfLeftEmpty(out, fineTune)
    }

    private func fineTune() throws {
        compute.apply()
        let outputDirectory = try OutputDirectory.prepare(out)
        let file = try SafeTensorsFile(contentsOf: weights)
        let meta = file.metadata
        let (arch, width, stem, norm, recordedGrid) = try shape.resolve(file, path: weights)
        // Before the data loads: the architecture alone says whether the stages exist.
        let requested = try requestedStrategy()
        if case let .partial(stages)? = requested, stages > arch.depths.count {
            throw ValidationError("--strategy partial:\(stages): \(arch) has \(arch.depths.count) stages")
        }
        let directory = data.map { URL(fileURLWithPath: $0) }
        var trainSet = try ImageDataset.load(dataset, split: .train, directory: directory)
        var testSet = try ImageDataset.load(dataset, split: .test, directory: directory)
        if let classes {
            (trainSet, testSet) = (try trainSet.selecting(classes: classes.values), try testSet.selecting(classes: classes.values))
        }
        if let perClass { trainSet = try trainSet.sampling(perClass: perClass, seed: seed) }
        // The pretrained network's input normalization, when the flags give it or the checkpoint records it.
        let (mean, std) = try normalization.resolve(channels: trainSet.channels, metadata: meta, path: weights) { try trainSet.channelStatistics() }

        var pretrainedClasses = trainSet.numClasses
        if let fcShape = file["fc.weight"]?.shape {
            guard fcShape.count == 2, (1...ModelOptions.maximumClasses).contains(fcShape[0]) else {
                throw BLASNetError.malformedFile(path: weights, reason: "its fc.weight has shape \(fcShape)")
            }
            pretrainedClasses = fcShape[0]
        }
        let model = try ResNet(arch, numClasses: pretrainedClasses, inChannels: trainSet.channels,
                               stem: stem, width: width, norm: norm,
                               headGrid: recordedGrid, seed: seed)
        // Before the auto strategy's probe, which runs the model.
        compute.configure(model)
        let adapted = try file.withoutOptimizerState.adaptingInputChannels(to: trainSet.channels)
        if let given = file["conv1.weight"]?.shape, given.count == 4, given[1] != trainSet.channels {
            // As timm, only RGB weights adapt (and to one channel, any of at most three).
            guard adapted["conv1.weight"]?.shape != given else {
                throw ValidationError("\(weights): conv1.weight takes \(given[1]) input channels and the \(dataset.rawValue) images have \(trainSet.channels); only RGB weights adapt to other channel counts")
            }
            print("conv1.weight adapted from \(given[1]) to \(trainSet.channels) input channels, as timm's adapt_input_conv")
        }
        let report = try model.loadStateDict(adapted, strict: false)
        if requested != .scratch { try RecordedModelOptions.checkUsable(model, from: weights) }
        let missing = report.missingKeys.filter { !$0.hasSuffix("num_batches_tracked") }
        // Only the head is replaced: a backbone the file does not hold (another model, keys
        // under a prefix) would be fine-tuned from random weights without a word.
        let backboneMissing = missing.filter { !$0.hasPrefix("fc.") }
        if requested != .scratch && !backboneMissing.isEmpty {
            func some(_ keys: [String]) -> String { keys.prefix(3).joined(separator: ", ") + (keys.count > 3 ? ", …" : "") }
            throw BLASNetError.invalidArgument("""
                \(weights) does not hold this model's backbone: \(backboneMissing.count) keys missing (\(some(backboneMissing)))\
                \(report.unexpectedKeys.isEmpty ? "" : ", \(report.unexpectedKeys.count) not the model's (\(some(report.unexpectedKeys)))"); \
                check --arch and --width, or pass --strategy scratch to train without the weights
                """)
        }
        print("loaded \(weights): missing keys \(missing.isEmpty ? "none" : missing.joined(separator: ", ")); "
              + "unexpected keys \(report.unexpectedKeys.isEmpty ? "none" : report.unexpectedKeys.joined(separator: ", "))")

        let loader = try DataLoader(dataset: trainSet, batchSize: min(batchSize, trainSet.count), shuffle: true, seed: seed,
                                    mean: mean, std: std, augmentation: Augmentation(cropPadding: cropPadding, horizontalFlip: flip), dropLast: true)
        let chosen = try requested ?? autoStrategy(model, trainSet, mean: mean, std: std)
        // A new task has a new label set, whatever its size: the classifier starts afresh.
        let side = try lastFeatureMapSide(model, trainSet)
        // Past the map's side, adaptive pooling repeats its values: more features (for the
        // closed-form head, normal equations of their count squared) and nothing new.
        if let headGrid, headGrid > side {
            throw ValidationError("--head-grid \(headGrid): the last feature map is \(side)×\(side) on \(trainSet.height)×\(trainSet.width) images, so a grid larger than \(side) only repeats its values")
        }
        let grid = headGrid ?? (chosen == .head ? min(2, side) : 1)
        try model.replaceHead(numClasses: trainSet.numClasses, grid: grid, seed: seed)
        print("fc re-initialized for the \(trainSet.numClasses) new classes, pooled over a \(grid)×\(grid) grid "
              + "(the weights' head had \(pretrainedClasses) classes)")
        let net = chosen == .scratch
            ? try ResNet(arch, numClasses: trainSet.numClasses, inChannels: trainSet.channels, stem: model.stem,
                         width: model.width, norm: model.normalization, headGrid: grid, seed: seed)
            : model
        try chosen.apply(to: net)
        compute.configure(net)
        let trainable = net.namedParameters().filter(\.parameter.requiresGrad).count
        print("strategy \(chosen): \(trainable) of \(net.namedParameters().count) parameter tensors train, \(trainSet.count) images")

        // What a frozen part holds, to show afterwards that fine-tuning left it bit for bit.
        func frozenState() -> [[Float]] {
            net.modules.filter { !$0.isTrainable && !$0.namedParameters().isEmpty && $0.children.isEmpty }
                .flatMap { $0.namedParameters().map(\.parameter.value.scalars) + $0.namedBuffers().map(\.buffer.value.scalars) }
        }
        let frozenBefore = frozenState()
        let start = DispatchTime.now().uptimeNanoseconds
        // Every regime but scratch starts from the closed-form head on the pretrained
        // features, so SGD does not first drag the network around a random classifier.
        if chosen != .scratch {
            let fitLoader = try DataLoader(dataset: trainSet, batchSize: 256, shuffle: false, seed: 0, mean: mean, std: std)
            let used = try RidgeHead.fit(net, on: fitLoader, ridge: ridge)
            print(String(format: "closed-form head fit: ridge λ %g (%@), %.3f s", used,
                         ridge == nil ? "chosen by generalized cross-validation" : "given",
                         Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9))
        }
        let epochs = self.epochs ?? (chosen == .head ? 0 : max(10, (200 + loader.batchesPerEpoch - 1) / loader.batchesPerEpoch))
        if epochs > 0 {
            let rate = lr ?? Self.defaultRate(chosen)
            let optimizer = try SGD(net.parameters(), learningRate: rate, momentum: 0.9,
                                    weightDecay: 5e-4, nesterov: true)
            let schedule = try LearningRateSchedule(kind: .cosine(), baseLR: rate, totalSteps: epochs * loader.batchesPerEpoch)
            let trainer = Trainer(model: net, optimizer: optimizer, schedule: schedule, loss: try CrossEntropyLoss(),
                                  trainLoader: loader)
            for epoch in 1...epochs {
                let (loss, accuracy, seconds) = try trainer.trainEpoch()
                print(String(format: "epoch %d/%d  train loss %.4f acc %.2f%%  %.1f s", epoch, epochs, loss, accuracy * 100, seconds))
            }
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        if !frozenBefore.isEmpty {
            guard frozenState() == frozenBefore else {
                throw BLASNetError.invalidArgument("fine-tuning changed frozen parameters or running statistics; nothing was written")
            }
            print("frozen parameters and running statistics (\(frozenBefore.count) tensors) unchanged: yes")
        }
        let testLoader = try DataLoader(dataset: testSet, batchSize: 500, shuffle: false, seed: 0, mean: mean, std: std)
        let result = try Trainer.evaluate(net, on: testLoader, numClasses: testSet.numClasses)
        print(String(format: "%@: test accuracy %.2f%% on %d images (%d classes); fine-tuning took %.1f s",
                     chosen.description, result.accuracy * 100, testSet.count, testSet.numClasses, seconds))

        // The model as built, whether its shape came from the input file or from flags: eval
        // rebuilds it from these (a stem it had to guess would load and evaluate wrongly).
        var metadata = ["arch": net.architecture.rawValue, "width": String(net.width), "stem": net.stem.rawValue,
                        "in_chans": String(net.inChannels)]
        metadata["norm"] = net.normalization.description
        metadata["head_grid"] = String(net.headGrid)
        metadata["dataset"] = dataset.rawValue
        metadata["classes"] = classesMetadata(classes?.values)
        metadata["num_classes"] = String(testSet.numClasses)
        metadata["mean"] = mean.map { "\($0)" }.joined(separator: ",")
        metadata["std"] = std.map { "\($0)" }.joined(separator: ",")
        metadata["strategy"] = chosen.description
        metadata["test_accuracy"] = String(result.accuracy)
        try SafeTensorsFile(tensors: net.stateDict(), metadata: metadata)
            .write(to: outputDirectory.appendingPathComponent("finetuned.safetensors").path)
    }

    /// The shorter side of `model`'s last feature map on `data`'s images: a 2×2 head grid
    /// over a map of one position would only repeat its features.
    private func lastFeatureMapSide(_ model: ResNet, _ data: ImageDataset) throws -> Int {
        // Traced with a global-average head, which any map allows (the weights' grid need not divide it).
        try model.replaceHead(numClasses: data.numClasses, grid: 1, seed: seed)
        let lastStage = "layer\(model.stages.count)"
        return try model.receptiveFields(inputSize: (data.height, data.width)).last { $0.name.hasPrefix(lastStage) }
            .map { min($0.field.height.outputSize, $0.field.width.outputSize) } ?? 2
    }

    /// The regime the flags ask for, or nil for `auto`.
    private func requestedStrategy() throws -> FineTuningStrategy? {
        switch (strategy, freeze) {
        case ("auto", nil): return nil
        case let ("partial", names?):
            // Names only: "partial:" + names would read `--freeze 2` as a count of stages.
            let layers = names.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            guard !layers.contains(where: \.isEmpty) else {
                throw ValidationError("--freeze takes comma-separated state_dict prefixes (conv1,bn1,layer1), got '\(names)'")
            }
            if let head = FineTuningStrategy.frozenHead(layers) {
                throw ValidationError("--freeze \(head): the new classifier always trains; freeze the layers before it")
            }
            return .freezing(layers: layers)
        case ("partial", nil): throw ValidationError("--strategy partial needs a stage count (partial:K) or --freeze NAME,…")
        case (_, _?): throw ValidationError("--freeze goes with --strategy partial, not \(strategy)")
        default:
            do { return try FineTuningStrategy(parsing: strategy) } catch {
                throw ValidationError("--strategy '\(strategy)': expected head, partial:K, partial with --freeze, full, scratch or auto")
            }
        }
    }

    /// Measures both axes of the notes' table on the new data and picks the regime.
    private func autoStrategy(_ model: ResNet, _ trainSet: ImageDataset, mean: [Float], std: [Float]) throws -> FineTuningStrategy {
        guard model.normalization == .batch else {
            throw ValidationError("--strategy auto measures similarity against BatchNorm running statistics, which a model "
                                  + "with \(model.normalization) norm layers does not have; pick --strategy head, partial:K, full or scratch")
        }
        let probe = try DataLoader(dataset: trainSet, batchSize: min(256, trainSet.count), shuffle: true, seed: seed,
                                   mean: mean, std: std)
        guard let batch = probe.batches(epoch: 0).first(where: { _ in true }) else {
            throw BLASNetError.invalidArgument("no images to measure")
        }
        let shift = try DomainShift.batchNormShift(model, images: batch.images)
        let perClass = Double(trainSet.count) / Double(trainSet.numClasses)
        let (chosen, reason) = FineTuningStrategy.choose(samplesPerClass: perClass, shift: shift, stages: model.stages.count)
        print("auto: " + reason)
        return chosen
    }

    private static func defaultRate(_ strategy: FineTuningStrategy) -> Float {
        switch strategy {
        case .head, .full: 0.01
        case .partial, .freezing: 0.05
        case .scratch: 0.1
        }
    }
}
