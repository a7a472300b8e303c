import ArgumentParser
import BLASNet
import BLASNetDistributed
import Foundation

/// One `blasnet train` run: data, model, optimizer and trainer built from ``RunSettings``,
/// and the files it keeps in its output directory. In an MPI job every process builds
/// the same run on its shard of each batch; rank 0 alone writes the files.
final class TrainingRun {
    private(set) var settings: RunSettings
    let trainer: Trainer
    let testLoader: DataLoader
    let numClasses: Int
    let inChannels: Int
    let classNames: [String]
    let outputDirectory: URL
    /// The processes of a data-parallel job, or nil for a run in one process.
    let processes: MPIProcessGroup?
    private let syncBatchNorm: Bool
    private var history: [EpochSummary] = []
    private var bestAccuracy = -1.0

    /// The files a run keeps in its output directory.
    enum File: String, CaseIterable {
        case last = "last.safetensors", best = "best.safetensors", metrics = "metrics.csv", curves = "curves.svg"
    }

    /// `file` of the run in `directory`.
    static func path(_ file: File, in directory: String) -> String {
        URL(fileURLWithPath: directory).appendingPathComponent(file.rawValue).path
    }

    private func path(_ file: File) -> String { outputDirectory.appendingPathComponent(file.rawValue).path }

    /// `syncBatchNorm` makes every BatchNorm of a data-parallel run normalize with the
    /// statistics of the global batch.
    init(settings: RunSettings, dataDirectory: String?, out: String, processes: MPIProcessGroup? = nil,
         syncBatchNorm: Bool = false) throws {
        self.processes = processes
        self.syncBatchNorm = syncBatchNorm
        // Before the data loads: a bad --out should not cost the wait for a dataset.
        outputDirectory = processes?.isRoot == false ? URL(fileURLWithPath: out) : try OutputDirectory.prepare(out)
        let shard = processes.map { Shard(index: $0.rank, count: $0.size) } ?? .whole
        var settings = settings
        let directory = dataDirectory.map { URL(fileURLWithPath: $0) }
        var trainSet = try ImageDataset.load(settings.dataset, split: .train, directory: directory)
        var testSet = try ImageDataset.load(settings.dataset, split: .test, directory: directory)
        if let classes = settings.classes {
            (trainSet, testSet) = (try trainSet.selecting(classes: classes), try testSet.selecting(classes: classes))
        }
        if settings.mean.isEmpty {
            (settings.mean, settings.std) = try trainSet.channelStatistics()
        }
        numClasses = trainSet.numClasses
        inChannels = trainSet.channels
        classNames = trainSet.classNames
        let model = try ResNet(settings.arch, numClasses: numClasses, inChannels: inChannels, stem: settings.stem,
                               width: settings.width, norm: settings.norm, seed: settings.seed)
        let trainLoader = try DataLoader(
            dataset: trainSet, batchSize: settings.batchSize, shuffle: true, seed: settings.seed,
            mean: settings.mean, std: settings.std,
            augmentation: Augmentation(cropPadding: settings.cropPadding, horizontalFlip: settings.flip,
                                       erasing: settings.randomErasing ?? 0), dropLast: true,
            shard: shard)
        testLoader = try DataLoader(dataset: testSet, batchSize: 500, shuffle: false, seed: 0, mean: settings.mean, std: settings.std,
                                    shard: shard)
        let parameters = model.parameters()
        let optimizer: any Optimizer = switch settings.optimizer {
        case "adamw": try AdamW(parameters, learningRate: settings.learningRate, weightDecay: settings.weightDecay)
        default: try SGD(parameters, learningRate: settings.learningRate, momentum: 0.9,
                         weightDecay: settings.weightDecay, nesterov: true)
        }
        let steps = trainLoader.batchesPerEpoch
        // Named by flag here: the schedule would only say its step counts are out of range.
        guard steps > 0 else {
            throw ValidationError("--batch-size \(settings.batchSize) is more than the \(trainSet.count) training images (an incomplete batch is dropped)")
        }
        guard Int(settings.warmupEpochs * Double(steps)) < settings.epochs * steps else {
            throw ValidationError("--warmup \(settings.warmupEpochs) epochs must end before the run's \(settings.epochs)")
        }
        let schedule = try LearningRateSchedule(
            kind: LearningRateSchedule.Kind(parsing: settings.schedule), baseLR: settings.learningRate,
            totalSteps: settings.epochs * steps, warmupSteps: Int(settings.warmupEpochs * Double(steps)))
        trainer = Trainer(model: model, optimizer: optimizer, schedule: schedule,
                          loss: try settings.makeLoss(), trainLoader: trainLoader)
        if let processes {
            trainer.dataParallel = MPIDataParallel(group: processes)
            if syncBatchNorm { for case let norm as BatchNorm in model.modules { norm.synchronization = processes } }
        }
        self.settings = settings
    }

    private var isRoot: Bool { processes?.isRoot ?? true }

    /// Makes every process start from rank 0's weights, optimizer state and progress
    /// (fresh or resumed), as the ranks could differ in what they found on disk.
    func synchronizeWithRoot() throws {
        guard let processes else { return }
        let state = try isRoot ? TrainingCheckpoint(trainer: trainer, history: history, settings: [:]).serialized() : nil
        try restore(TrainingCheckpoint(data: processes.broadcast(state), path: "rank 0's training state"))
    }

    /// Continues from a checkpoint: weights, optimizer state, epochs done, history so far.
    func restore(_ checkpoint: TrainingCheckpoint) throws {
        // A count no --threads accepts (a damaged record) says nothing about the run: no advice.
        if let recorded = checkpoint.metadata["threads"].flatMap({ Int($0) }), recorded > 0, recorded != BLAS.threads {
            ProgressLine.write("""
                note: the run so far split its sgemms over \(recorded) threads and goes on over \(BLAS.threads): \
                from here it differs in the last bits from a run that did not stop (--threads \(recorded) keeps it exact)

                """)
        }
        try checkpoint.restore(into: trainer)
        history = checkpoint.history ?? []
        bestAccuracy = history.map(\.testAccuracy).max() ?? -1
    }

    /// Removes the files of an earlier run in the output directory (`--overwrite`), so that
    /// none of them sits beside this run's as if it were this run's.
    func removeEarlierRun() throws {
        guard isRoot else { return }
        for file in File.allCases where unlink(path(file)) != 0 && errno != ENOENT {
            throw BLASNetError.io("cannot remove \(path(file)) of the earlier run: \(String(cString: strerror(errno)))")
        }
    }

    /// Copies the `best.safetensors` of the run in `directory`, which this one continues:
    /// later epochs replace it only if they do better, as in that run's own directory.
    func adoptBest(from directory: String) throws {
        let source = URL(fileURLWithPath: Self.path(.best, in: directory))
        guard isRoot, FileManager.default.fileExists(atPath: source.path) else { return }
        let data: Data
        do { data = try Data(contentsOf: source) } catch { throw BLASNetError.io("cannot read \(source.path): \(error.localizedDescription)") }
        try AtomicFile.write(data, to: path(.best))
    }

    /// Trains the remaining epochs, evaluating and checkpointing after each.
    func train() throws {
        let model = trainer.model as! ResNet
        let parameterCount = model.namedParameters().reduce(0) { $0 + $1.parameter.value.count }
        ProgressLine.write("""
            \(settings.arch.rawValue) width \(settings.width), \(settings.stem.rawValue) stem, \(settings.norm) norm, \(parameterCount) parameters; \
            \(settings.dataset.rawValue) \(trainer.trainLoader.dataset.count) train / \(testLoader.dataset.count) test images; \
            \(settings.loss.rawValue) loss, \(settings.optimizer) lr \(settings.learningRate) \(settings.schedule), batch \(settings.batchSize), \
            \(BLAS.threads) threads\(processes.map { " in each of \($0.size) MPI processes" } ?? "")

            """)
        if trainer.completedEpochs >= settings.epochs {
            ProgressLine.write("already trained \(trainer.completedEpochs) of \(settings.epochs) epochs; pass a larger --epochs to go on\n")
            // Continued into a new directory, the run still leaves its checkpoint there, to be resumed from in turn.
            if !FileManager.default.fileExists(atPath: path(.last)) { try saveEpoch(isBest: false) }
        }
        let progress = ProgressLine(interactive: isatty(STDOUT_FILENO) != 0)
        trainer.shouldStop = { Interruption.received != nil }
        while trainer.completedEpochs < settings.epochs {
            let epoch = trainer.completedEpochs + 1
            let skippedBefore = trainer.skippedSteps
            let (trainLoss, trainAccuracy, seconds) = try trainStopping(epoch: epoch) { report in
                if let location = report.nonFinite {
                    progress.skipped(epoch: epoch, report, location: location)
                } else {
                    progress.update(epoch: epoch, of: settings.epochs, report)
                }
            }
            if trainer.isInsideEpoch {
                try saveInterrupted(epoch: epoch)
            }
            if !syncBatchNorm { try (trainer.dataParallel as? MPIDataParallel)?.broadcastBuffers(of: model) }
            let evaluation = try Trainer.evaluate(model, on: testLoader, numClasses: numClasses, combinedBy: processes)
            let summary = EpochSummary(epoch: epoch, trainLoss: trainLoss, trainAccuracy: trainAccuracy,
                                       testLoss: evaluation.loss, testAccuracy: evaluation.accuracy, seconds: seconds,
                                       learningRate: trainer.optimizer.learningRate, residentBytes: ResidentMemory.currentBytes)
            history.append(summary)
            progress.finish(summary, of: settings.epochs, imagesPerSecond: Double(trainer.trainLoader.batchesPerEpoch * settings.batchSize) / seconds)
            if trainer.skippedSteps > skippedBefore {
                ProgressLine.write("skipped \(trainer.skippedSteps - skippedBefore) steps with non-finite values this epoch, \(trainer.skippedSteps) in all\n")
            }
            try saveEpoch(isBest: evaluation.accuracy > bestAccuracy)
            bestAccuracy = max(bestAccuracy, evaluation.accuracy)
            if trainer.completedEpochs < settings.epochs, try interruptedAnywhere() { try saveInterrupted(epoch: epoch + 1) }
        }
        if let best = history.max(by: { $0.testAccuracy < $1.testAccuracy }) {
            let total = history.reduce(0) { $0 + $1.seconds }
            ProgressLine.write(String(format: "best test accuracy %.2f%% (epoch %d); %.1f s of training; files in %@\n",
                                      best.testAccuracy * 100, best.epoch, total, outputDirectory.path))
        }
    }

    /// One epoch, with a non-finite stop reported against the checkpoint that is still good.
    private func trainStopping(epoch: Int, onStep: (StepReport) -> Void) throws -> (loss: Double, accuracy: Double, seconds: Double) {
        do {
            return try trainer.trainEpoch(onStep: onStep)
        } catch let error as BLASNetError {
            guard case .nonFinite = error else { throw error }
            let saved = history.last.map { "after epoch \($0.epoch)" } ?? "none yet"
            throw BLASNetError.io("\(error.description). Training stopped; the last checkpoint (\(saved)) is untouched in \(outputDirectory.path). --skip-nonfinite skips such steps instead; a lower --lr may avoid them")
        }
    }

    /// Whether this process or, under MPI, any other got SIGINT or SIGTERM. Every process
    /// asks at the same point, so that they stop together: one that got the signal after
    /// its epoch's last step must not leave the others waiting in the next epoch.
    private func interruptedAnywhere() throws -> Bool {
        var received = [Interruption.received != nil ? 1.0 : 0]
        try processes?.sum(&received)
        return received[0] > 0
    }

    /// After SIGINT or SIGTERM: saves where the run stands (inside `epoch` if it stopped
    /// there) and exits with the shell's code for that signal.
    private func saveInterrupted(epoch: Int) throws -> Never {
        try writeCheckpoint(best: false)
        // The other ranks wait for rank 0's file, then leave the job properly: mpirun kills
        // every process of a job one of whose processes exits without finalizing.
        if let processes {
            try processes.barrier()
            processes.finalize()
        }
        let place = trainer.isInsideEpoch
            ? "epoch \(epoch), step \(trainer.epochProgress.steps)/\(trainer.trainLoader.batchesPerEpoch)"
            : "the end of epoch \(epoch - 1)"
        ProgressLine.write("\ninterrupted at \(place); saved \(path(.last)); continue with: blasnet train --resume \(outputDirectory.path)\n")
        throw ExitCode(128 + (Interruption.received ?? SIGINT))
    }

    private func writeCheckpoint(best: Bool) throws {
        guard isRoot else { return }
        let checkpoint = try TrainingCheckpoint(
            trainer: trainer, history: history,
            settings: settings.metadata(numClasses: numClasses, inChannels: inChannels, classNames: classNames))
        // Best first: stopped between the two, the run resumes from the epoch before and
        // redoes this one. The other order left a last checkpoint that counted this epoch
        // as the best one already written, so best.safetensors never received it.
        if best { try checkpoint.write(to: path(.best)) }
        try checkpoint.write(to: path(.last))
    }

    private func saveEpoch(isBest: Bool) throws {
        try writeCheckpoint(best: isBest)
        guard isRoot else { return }
        try AtomicFile.write(Data(TrainingCurves.csv(history).utf8), to: path(.metrics))
        let title = "\(settings.arch.rawValue) on \(settings.dataset.rawValue)"
        try AtomicFile.write(Data(TrainingCurves.svg(history, title: title).utf8),
                             to: path(.curves))
    }
}
