import BLASNet
import Foundation

/// One `blasnet train` run: data, model, optimizer and trainer built from ``RunSettings``,
/// and the files it keeps in its output directory.
final class TrainingRun {
    private(set) var settings: RunSettings
    let trainer: Trainer
    let testLoader: DataLoader
    let numClasses: Int
    let inChannels: Int
    let classNames: [String]
    let outputDirectory: URL
    private var history: [EpochSummary] = []
    private var bestAccuracy = -1.0

    init(settings: RunSettings, dataDirectory: String?, out: String) throws {
        var settings = settings
        let directory = dataDirectory.map { URL(fileURLWithPath: $0) }
        var trainSet = try ImageDataset.load(settings.dataset, split: .train, directory: directory)
        var testSet = try ImageDataset.load(settings.dataset, split: .test, directory: directory)
        if let classes = settings.classes {
            (trainSet, testSet) = (try trainSet.selecting(classes: classes), try testSet.selecting(classes: classes))
        }
        if settings.mean.isEmpty {
            (settings.mean, settings.std) = trainSet.channelStatistics()
        }
        numClasses = trainSet.numClasses
        inChannels = trainSet.channels
        classNames = trainSet.classNames
        let model = try ResNet(settings.arch, numClasses: numClasses, inChannels: inChannels, stem: settings.stem,
                               width: settings.width, norm: settings.norm, seed: settings.seed)
        let trainLoader = try DataLoader(
            dataset: trainSet, batchSize: settings.batchSize, shuffle: true, seed: settings.seed,
            mean: settings.mean, std: settings.std,
            augmentation: Augmentation(cropPadding: settings.cropPadding, horizontalFlip: settings.flip), dropLast: true)
        testLoader = try DataLoader(dataset: testSet, batchSize: 500, shuffle: false, seed: 0, mean: settings.mean, std: settings.std)
        let parameters = model.namedParameters().map(\.parameter)
        let optimizer: any Optimizer = switch settings.optimizer {
        case "adamw": try AdamW(parameters, learningRate: settings.learningRate, weightDecay: settings.weightDecay)
        default: try SGD(parameters, learningRate: settings.learningRate, momentum: 0.9,
                         weightDecay: settings.weightDecay, nesterov: true)
        }
        let steps = trainLoader.batchesPerEpoch
        let schedule = try LearningRateSchedule(
            kind: LearningRateSchedule.Kind(parsing: settings.schedule), baseLR: settings.learningRate,
            totalSteps: settings.epochs * steps, warmupSteps: Int(settings.warmupEpochs * Double(steps)))
        trainer = Trainer(model: model, optimizer: optimizer, schedule: schedule,
                          loss: try settings.makeLoss(), trainLoader: trainLoader)
        self.settings = settings
        outputDirectory = URL(fileURLWithPath: out)
        do {
            try FileManager.default.createDirectory(at: outputDirectory, withIntermediateDirectories: true)
        } catch {
            throw BLASNetError.io("cannot create output directory \(out): \(error.localizedDescription)")
        }
    }

    /// Continues from a checkpoint: weights, optimizer state, epochs done, history so far.
    func restore(_ checkpoint: TrainingCheckpoint) throws {
        try checkpoint.restore(into: trainer)
        history = checkpoint.history ?? []
        bestAccuracy = history.map(\.testAccuracy).max() ?? -1
    }

    /// Trains the remaining epochs, evaluating and checkpointing after each.
    func train() throws {
        let model = trainer.model as! ResNet
        let parameterCount = model.namedParameters().reduce(0) { $0 + $1.parameter.value.count }
        ProgressLine.write("""
            \(settings.arch.rawValue) width \(settings.width), \(settings.stem.rawValue) stem, \(settings.norm) norm, \(parameterCount) parameters; \
            \(settings.dataset.rawValue) \(trainer.trainLoader.dataset.count) train / \(testLoader.dataset.count) test images; \
            \(settings.loss.rawValue) loss, \(settings.optimizer) lr \(settings.learningRate) \(settings.schedule), batch \(settings.batchSize), \
            \(BLAS.threads) OpenBLAS threads

            """)
        if trainer.completedEpochs >= settings.epochs {
            ProgressLine.write("already trained \(trainer.completedEpochs) of \(settings.epochs) epochs; pass a larger --epochs to go on\n")
        }
        let progress = ProgressLine(interactive: isatty(STDOUT_FILENO) != 0)
        while trainer.completedEpochs < settings.epochs {
            let epoch = trainer.completedEpochs + 1
            let (trainLoss, trainAccuracy, seconds) = try trainer.trainEpoch { report in
                progress.update(epoch: epoch, of: settings.epochs, report)
            }
            let evaluation = try Trainer.evaluate(model, on: testLoader, numClasses: numClasses)
            let summary = EpochSummary(epoch: epoch, trainLoss: trainLoss, trainAccuracy: trainAccuracy,
                                       testLoss: evaluation.loss, testAccuracy: evaluation.accuracy, seconds: seconds,
                                       learningRate: trainer.optimizer.learningRate)
            history.append(summary)
            progress.finish(summary, of: settings.epochs, imagesPerSecond: Double(trainer.trainLoader.batchesPerEpoch * settings.batchSize) / seconds)
            try saveEpoch(isBest: evaluation.accuracy > bestAccuracy)
            bestAccuracy = max(bestAccuracy, evaluation.accuracy)
        }
        if let best = history.max(by: { $0.testAccuracy < $1.testAccuracy }) {
            let total = history.reduce(0) { $0 + $1.seconds }
            ProgressLine.write(String(format: "best test accuracy %.2f%% (epoch %d); %.1f s of training; files in %@\n",
                                      best.testAccuracy * 100, best.epoch, total, outputDirectory.path))
        }
    }

    private func saveEpoch(isBest: Bool) throws {
        let checkpoint = try TrainingCheckpoint(
            trainer: trainer, history: history,
            settings: settings.metadata(numClasses: numClasses, inChannels: inChannels, classNames: classNames))
        try checkpoint.write(to: outputDirectory.appendingPathComponent("last.safetensors").path)
        if isBest { try checkpoint.write(to: outputDirectory.appendingPathComponent("best.safetensors").path) }
        try AtomicFile.write(Data(TrainingCurves.csv(history).utf8), to: outputDirectory.appendingPathComponent("metrics.csv").path)
        let title = "\(settings.arch.rawValue) on \(settings.dataset.rawValue)"
        try AtomicFile.write(Data(TrainingCurves.svg(history, title: title).utf8),
                             to: outputDirectory.appendingPathComponent("curves.svg").path)
    }
}
