import Foundation

/// Where a training run is, reported after every optimizer step.
public struct StepReport: Sendable {
    /// Epoch being trained (0-based) and the step within it (1-based, so `step == stepsPerEpoch` ends it).
    public let epoch: Int
    public let step: Int
    public let stepsPerEpoch: Int
    /// Loss and accuracy averaged over the epoch's batches so far.
    public let runningLoss: Double
    public let runningAccuracy: Double
    /// Images per second over the epoch so far, and seconds since it began.
    public let imagesPerSecond: Double
    public let elapsedSeconds: Double
    /// Learning rate the step used.
    public let learningRate: Float
    /// Where a non-finite value first appeared, when the step was skipped for one.
    public let nonFinite: String?
}

/// One epoch's figures: training loss and accuracy over its batches, test loss and accuracy after it.
public struct EpochSummary: Codable, Sendable, Equatable {
    public var epoch: Int
    public var trainLoss: Double
    public var trainAccuracy: Double
    public var testLoss: Double
    public var testAccuracy: Double
    public var seconds: Double
    public var learningRate: Float
    /// Resident memory of the process at the end of the epoch, if measured.
    public var residentBytes: Int?

    /// One epoch's figures, as ``Trainer`` and `blasnet train` record them.
    public init(epoch: Int, trainLoss: Double, trainAccuracy: Double, testLoss: Double, testAccuracy: Double,
                seconds: Double, learningRate: Float, residentBytes: Int? = nil) {
        (self.epoch, self.trainLoss, self.trainAccuracy, self.testLoss, self.testAccuracy) =
            (epoch, trainLoss, trainAccuracy, testLoss, testAccuracy)
        (self.seconds, self.learningRate, self.residentBytes) = (seconds, learningRate, residentBytes)
    }
}

/// Loss, accuracy and confusion matrix of a model on a dataset.
public struct Evaluation: Sendable {
    public let loss: Double
    /// Fraction of images classified correctly.
    public let accuracy: Double
    /// `confusion[true][predicted]` counts.
    public let confusion: [[Int]]

    /// Fraction correct among the images of each true class (NaN for a class with no images).
    public var perClassAccuracy: [Double] {
        confusion.enumerated().map { c, row in
            let total = row.reduce(0, +)
            return total > 0 ? Double(row[c]) / Double(total) : .nan
        }
    }
}

/// Sums of an epoch in progress, which a run stopped inside an epoch saves so that the
/// resumed epoch ends with the figures an uninterrupted one would have.
public struct EpochProgress: Codable, Sendable, Equatable {
    /// Batches consumed, and among them those skipped for non-finite values.
    public var steps = 0
    public var skipped = 0
    public var lossSum = 0.0
    public var correct = 0
    public var seen = 0
    public var seconds = 0.0

    /// The start of an epoch: no step taken yet.
    public init() {}

    /// Mean of the batch losses, over the batches not skipped.
    public var meanLoss: Double { lossSum / Double(max(steps - skipped, 1)) }
    /// Fraction of the images of the batches not skipped that were classified correctly.
    public var accuracy: Double { Double(correct) / Double(max(seen, 1)) }
}

/// The training loop: batches from a ``DataLoader`` through a model, a loss, backward,
/// and an optimizer step at the learning rate the schedule gives for that step.
///
/// Everything that decides the next step — weights, optimizer state, the completed
/// epochs and the progress inside the current one — is checkpointable
/// (``TrainingCheckpoint``), and batch order and augmentation are functions of the
/// loader's seed and the epoch, so a resumed run continues exactly.
///
/// A step whose loss or gradients are not finite never reaches the weights: training
/// stops with ``BLASNetError/nonFinite(epoch:step:location:)``, naming the first layer
/// where such a value appeared, or with ``skipNonFinite`` the step is skipped and counted.
public final class Trainer {
    public let model: any Module
    public let optimizer: any Optimizer
    public let schedule: LearningRateSchedule
    public let loss: any Loss
    public let trainLoader: DataLoader
    /// Epochs completed so far; ``trainEpoch(onStep:)`` trains epoch `completedEpochs`.
    public var completedEpochs = 0
    /// How far epoch `completedEpochs` has gone: empty unless a run stopped inside it.
    public var epochProgress = EpochProgress()
    /// Checked after every step; true ends ``trainEpoch(onStep:)`` there, leaving
    /// ``epochProgress`` to continue from (for example on Ctrl-C).
    public var shouldStop: () -> Bool = { false }
    /// Skip steps with a non-finite loss or gradient (no update; batch statistics put back)
    /// instead of throwing.
    public var skipNonFinite = false
    /// Steps skipped for non-finite values since the run began.
    public var skippedSteps = 0
    /// Data-parallel training: this process's loader yields its shard of each batch, and
    /// gradients and step figures are combined across the processes. Nil: one process.
    public var dataParallel: (any DataParallel)?
    private let buffers: [Buffer]

    /// Trains `model` on `trainLoader`'s batches: each step sets the optimizer's rate from
    /// `schedule`, runs forward, `loss`, backward and the optimizer.
    public init(model: any Module, optimizer: any Optimizer, schedule: LearningRateSchedule,
                loss: any Loss, trainLoader: DataLoader) {
        self.model = model
        self.optimizer = optimizer
        self.schedule = schedule
        self.loss = loss
        self.trainLoader = trainLoader
        buffers = model.namedBuffers().map(\.buffer)
    }

    /// Whether the last ``trainEpoch(onStep:)`` stopped before the end of its epoch.
    public var isInsideEpoch: Bool { epochProgress.steps > 0 }

    /// Trains the rest of epoch `completedEpochs` (all of it unless a run stopped inside
    /// it); returns the epoch's mean loss, accuracy and wall time so far.
    public func trainEpoch(onStep: (StepReport) -> Void = { _ in }) throws -> (loss: Double, accuracy: Double, seconds: Double) {
        let epoch = completedEpochs
        let stepsPerEpoch = trainLoader.batchesPerEpoch
        let start = DispatchTime.now().uptimeNanoseconds
        var progress = epochProgress
        guard progress.steps >= 0, completedEpochs >= 0 else {
            throw BLASNetError.invalidArgument("epoch progress \(progress.steps) or completed epochs \(completedEpochs) is negative")
        }
        guard stepsPerEpoch > 0 else {
            throw BLASNetError.invalidArgument("the training loader has no batches: \(trainLoader.dataset.count) images, batches of \(trainLoader.batchSize)\(trainLoader.dropLast ? " with the incomplete one dropped" : "")")
        }
        // Every step's index in the run, which the schedule reads, must be countable.
        guard epoch.multipliedReportingOverflow(by: stepsPerEpoch + 1).overflow == false else {
            throw BLASNetError.invalidArgument("completed epochs \(completedEpochs) × \(stepsPerEpoch) steps an epoch overflow the step count")
        }
        guard progress.steps < stepsPerEpoch else {
            throw BLASNetError.invalidArgument(
                "epoch \(epoch + 1) stopped after step \(progress.steps), but an epoch now has \(stepsPerEpoch) steps; resume with the batch size it ran with")
        }
        let earlier = progress.seconds
        model.train()
        for batch in trainLoader.batches(epoch: epoch, startingAt: progress.steps) {
            let globalStep = epoch * stepsPerEpoch + progress.steps
            let learningRate = schedule.learningRate(at: globalStep)
            optimizer.learningRate = learningRate
            let statistics = skipNonFinite ? buffers.map(\.value) : []
            let logits = try model.forward(batch.images)
            let (value, gradient) = try loss(logits, targets: batch.labels)
            model.zeroGrad()
            if let dataParallel {
                try dataParallel.averageGradients(of: model) { _ = try model.backward(gradient) }
            } else {
                _ = try model.backward(gradient)
            }
            FaultInjection.inStep(globalStep + 1)
            // The step's figures over all processes, so that all of them decide alike.
            var figures = [Double(value) * Double(batch.labels.count), Double(try Self.correctCount(logits, batch.labels)),
                           Double(batch.labels.count), shouldStop() ? 1 : 0]
            try dataParallel?.sum(&figures)
            let stepLoss = figures[0] / figures[2]
            progress.steps += 1
            var nonFinite: String?
            if stepLoss.isFinite, optimizer.parameters.allSatisfy({ !$0.requiresGrad || $0.grad?.isFinite != false }) {
                optimizer.step()
                progress.lossSum += stepLoss
                progress.correct += Int(figures[1])
                progress.seen += Int(figures[2])
            } else {
                let location = NonFiniteTrace.locate(model: model, loss: loss, images: batch.images, labels: batch.labels)
                guard skipNonFinite else {
                    throw BLASNetError.nonFinite(epoch: epoch + 1, step: progress.steps, location: location)
                }
                for (buffer, saved) in zip(buffers, statistics) { buffer.value = saved }
                skippedSteps += 1
                progress.skipped += 1
                nonFinite = location
            }
            progress.seconds = earlier + Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            epochProgress = progress
            onStep(StepReport(epoch: epoch, step: progress.steps, stepsPerEpoch: stepsPerEpoch,
                              runningLoss: progress.meanLoss, runningAccuracy: progress.accuracy,
                              imagesPerSecond: Double(progress.seen) / progress.seconds,
                              elapsedSeconds: progress.seconds, learningRate: learningRate, nonFinite: nonFinite))
            if progress.steps < stepsPerEpoch, figures[3] > 0 { break }
        }
        if progress.steps == stepsPerEpoch {
            completedEpochs += 1
            epochProgress = EpochProgress()
        }
        return (progress.meanLoss, progress.accuracy, progress.seconds)
    }

    /// Cross-entropy loss (without label smoothing, whatever the training loss), accuracy and
    /// confusion matrix in inference mode; with `combinedBy`, of the shards of all processes together.
    ///
    /// Leaves `model` in inference mode, as `model.eval()` would; call `train()` before training on.
    public static func evaluate(_ model: any Module, on loader: DataLoader, numClasses: Int,
                                combinedBy processes: (any CrossProcessSum)? = nil) throws -> Evaluation {
        guard numClasses > 0 else { throw BLASNetError.invalidArgument("evaluate: numClasses must be positive, got \(numClasses)") }
        model.eval()
        var confusion = [[Int]](repeating: [Int](repeating: 0, count: numClasses), count: numClasses)
        var (lossSum, seen) = (0.0, 0)
        for batch in loader.batches(epoch: 0) where !batch.labels.isEmpty {
            let logits = try withoutGradients { try model.forward(batch.images) }
            guard logits.shape.count == 2 else {
                throw BLASNetError.shapeMismatch(layer: "evaluate", expected: "logits [N, K]", got: logits.shape)
            }
            guard logits.shape[1] <= numClasses else {
                throw BLASNetError.invalidArgument("evaluate: the model has \(logits.shape[1]) outputs, more than numClasses \(numClasses)")
            }
            let (value, _) = try CrossEntropyLoss()(logits, targets: batch.labels)
            lossSum += Double(value) * Double(batch.labels.count)
            seen += batch.labels.count
            for (label, predicted) in zip(batch.labels, try predictions(logits)) { confusion[label][predicted] += 1 }
        }
        if let processes {
            var totals = [lossSum, Double(seen)] + confusion.flatMap { $0.map(Double.init) }
            try processes.sum(&totals)
            (lossSum, seen) = (totals[0], Int(totals[1]))
            confusion = (0..<numClasses).map { c in totals[(2 + c * numClasses)...].prefix(numClasses).map { Int($0) } }
        }
        let correct = (0..<numClasses).reduce(0) { $0 + confusion[$1][$1] }
        return Evaluation(loss: lossSum / Double(max(seen, 1)), accuracy: Double(correct) / Double(max(seen, 1)),
                          confusion: confusion)
    }

    /// The arg-max class of each row of `logits: [N, K]`.
    public static func predictions(_ logits: Tensor) throws -> [Int] {
        guard logits.shape.count == 2 else {
            throw BLASNetError.shapeMismatch(layer: "predictions", expected: "logits [N, K]", got: logits.shape)
        }
        let (n, k) = (logits.shape[0], logits.shape[1])
        return logits.withUnsafePointer { p in
            (0..<n).map { i in
                let row = UnsafeBufferPointer(start: p + i * k, count: k)
                return row.indices.max { row[$0] < row[$1] } ?? 0
            }
        }
    }

    private static func correctCount(_ logits: Tensor, _ labels: [Int]) throws -> Int {
        zip(try predictions(logits), labels).reduce(0) { $0 + ($1.0 == $1.1 ? 1 : 0) }
    }
}
