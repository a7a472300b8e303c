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

    public init(epoch: Int, trainLoss: Double, trainAccuracy: Double, testLoss: Double, testAccuracy: Double,
                seconds: Double, learningRate: Float) {
        (self.epoch, self.trainLoss, self.trainAccuracy, self.testLoss, self.testAccuracy) =
            (epoch, trainLoss, trainAccuracy, testLoss, testAccuracy)
        (self.seconds, self.learningRate) = (seconds, learningRate)
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

/// The training loop: batches from a ``DataLoader`` through a model, a loss, backward,
/// and an optimizer step at the learning rate the schedule gives for that step.
///
/// Everything that decides the next step — weights, optimizer state, the completed
/// epochs — is checkpointable (``TrainingCheckpoint``), and batch order and augmentation
/// are functions of the loader's seed and the epoch, so a resumed run continues exactly.
public final class Trainer {
    public let model: any Module
    public let optimizer: any Optimizer
    public let schedule: LearningRateSchedule
    public let loss: any Loss
    public let trainLoader: DataLoader
    /// Epochs completed so far; ``trainEpoch(onStep:)`` trains epoch `completedEpochs`.
    public var completedEpochs = 0

    public init(model: any Module, optimizer: any Optimizer, schedule: LearningRateSchedule,
                loss: any Loss, trainLoader: DataLoader) {
        self.model = model
        self.optimizer = optimizer
        self.schedule = schedule
        self.loss = loss
        self.trainLoader = trainLoader
    }

    /// Trains one epoch; returns its mean loss, accuracy and wall time.
    public func trainEpoch(onStep: (StepReport) -> Void = { _ in }) throws -> (loss: Double, accuracy: Double, seconds: Double) {
        let epoch = completedEpochs
        let stepsPerEpoch = trainLoader.batchesPerEpoch
        let start = DispatchTime.now().uptimeNanoseconds
        var (lossSum, correct, seen, step) = (0.0, 0, 0, 0)
        model.train()
        for batch in trainLoader.batches(epoch: epoch) {
            let learningRate = schedule.learningRate(at: epoch * stepsPerEpoch + step)
            optimizer.learningRate = learningRate
            let logits = try model.forward(batch.images)
            let (value, gradient) = try loss(logits, targets: batch.labels)
            model.zeroGrad()
            _ = try model.backward(gradient)
            optimizer.step()
            step += 1
            lossSum += Double(value)
            correct += Self.correctCount(logits, batch.labels)
            seen += batch.labels.count
            let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            onStep(StepReport(epoch: epoch, step: step, stepsPerEpoch: stepsPerEpoch, runningLoss: lossSum / Double(step),
                              runningAccuracy: Double(correct) / Double(seen), imagesPerSecond: Double(seen) / elapsed,
                              elapsedSeconds: elapsed, learningRate: learningRate))
        }
        completedEpochs += 1
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return (lossSum / Double(max(step, 1)), Double(correct) / Double(max(seen, 1)), seconds)
    }

    /// Cross-entropy loss (without label smoothing, whatever the training loss), accuracy and
    /// confusion matrix in inference mode.
    public static func evaluate(_ model: any Module, on loader: DataLoader, numClasses: Int) throws -> Evaluation {
        model.eval()
        var confusion = [[Int]](repeating: [Int](repeating: 0, count: numClasses), count: numClasses)
        var (lossSum, seen) = (0.0, 0)
        for batch in loader.batches(epoch: 0) {
            let logits = try model.forward(batch.images)
            let (value, _) = try CrossEntropyLoss()(logits, targets: batch.labels)
            lossSum += Double(value) * Double(batch.labels.count)
            seen += batch.labels.count
            for (label, predicted) in zip(batch.labels, predictions(logits)) { confusion[label][predicted] += 1 }
        }
        let correct = (0..<numClasses).reduce(0) { $0 + confusion[$1][$1] }
        return Evaluation(loss: lossSum / Double(max(seen, 1)), accuracy: Double(correct) / Double(max(seen, 1)),
                          confusion: confusion)
    }

    /// The arg-max class of each row of `logits: [N, K]`.
    public static func predictions(_ logits: Tensor) -> [Int] {
        let (n, k) = (logits.shape[0], logits.shape[1])
        return logits.withUnsafePointer { p in
            (0..<n).map { i in
                let row = UnsafeBufferPointer(start: p + i * k, count: k)
                return row.indices.max { row[$0] < row[$1] } ?? 0
            }
        }
    }

    private static func correctCount(_ logits: Tensor, _ labels: [Int]) -> Int {
        zip(predictions(logits), labels).reduce(0) { $0 + ($1.0 == $1.1 ? 1 : 0) }
    }
}
