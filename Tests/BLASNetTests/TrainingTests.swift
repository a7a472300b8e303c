import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing
@testable import BLASNet

/// The training loop end to end on small synthetic data: it learns, it is deterministic,
/// and a checkpointed run resumes onto exactly the weights of an uninterrupted one.
struct TrainingTests {
    /// `count` random 1×8×8 images with random labels among `classes`.
    static func noiseDataset(count: Int, classes: Int = 4, seed: UInt64 = 1) throws -> ImageDataset {
        var rng = SeededGenerator(seed: seed)
        return try ImageDataset(pixels: (0..<(count * 64)).map { _ in UInt8.random(in: 0...255, using: &rng) },
                                labels: (0..<count).map { _ in Int.random(in: 0..<classes, using: &rng) },
                                channels: 1, height: 8, width: 8, classNames: (0..<classes).map(String.init))
    }

    static func trainer(_ data: ImageDataset, epochs: Int, batchSize: Int = 16, augment: Bool = true,
                        optimizer: String = "sgd") throws -> Trainer {
        let model = try ResNet(.resnet8, numClasses: data.numClasses, inChannels: 1, stem: .cifar, width: 4, seed: 3)
        let loader = try DataLoader(dataset: data, batchSize: batchSize, shuffle: true, seed: 7, mean: [0.5], std: [0.25],
                                    augmentation: augment ? Augmentation(cropPadding: 1, horizontalFlip: true) : .none,
                                    dropLast: true)
        let parameters = model.parameters()
        let opt: any Optimizer = optimizer == "adamw"
            ? try AdamW(parameters, learningRate: 0.01, weightDecay: 1e-4)
            : try SGD(parameters, learningRate: 0.05, momentum: 0.9, weightDecay: 5e-4, nesterov: true)
        let schedule = try LearningRateSchedule(kind: .cosine(minimum: 0), baseLR: opt.learningRate,
                                                totalSteps: epochs * loader.batchesPerEpoch, warmupSteps: 2)
        return Trainer(model: model, optimizer: opt, schedule: schedule, loss: try CrossEntropyLoss(labelSmoothing: 0.1),
                       trainLoader: loader)
    }

    static func weights(_ trainer: Trainer) -> [String: [Float]] {
        Dictionary(uniqueKeysWithValues: trainer.model.stateDict().map { ($0.name, $0.tensor.floats().scalars) })
    }

    /// Step counts a damaged or hand-set position would overflow, and a loader with no
    /// batch, are errors that say so (the first trapped; the second blamed the batch size of a resume).
    @Test func unrunnableEpochsAreRefused() throws {
        let trainer = try Self.trainer(try Self.noiseDataset(count: 64), epochs: 1)
        trainer.completedEpochs = Int.max / 2
        let overflow = #expect(throws: BLASNetError.self) { try trainer.trainEpoch() }
        #expect(overflow.map { "\($0)" }?.contains("overflow the step count") == true)
        let loader = try DataLoader(dataset: try Self.noiseDataset(count: 8), batchSize: 16, shuffle: true, seed: 7, mean: [0.5],
                                    std: [0.25], dropLast: true)
        let empty = Trainer(model: trainer.model, optimizer: trainer.optimizer, schedule: trainer.schedule, loss: try CrossEntropyLoss(),
                            trainLoader: loader)
        let none = #expect(throws: BLASNetError.self) { try empty.trainEpoch() }
        #expect(none.map { "\($0)" }?.contains("the training loader has no batches: 8 images, batches of 16 with the incomplete one dropped") == true)
    }

    @Test func tinyModelOverfitsSixtyFourImages() throws {
        let data = try Self.noiseDataset(count: 64)
        let trainer = try Self.trainer(data, epochs: 60, batchSize: 64, augment: false, optimizer: "adamw")
        var first = 0.0, last = 0.0
        for epoch in 0..<60 {
            let (loss, _, _) = try trainer.trainEpoch()
            if epoch == 0 { first = loss }
            last = loss
        }
        // Random labels on noise: only memorization brings the loss down (smoothing 0.1 floors it near 0.2).
        #expect(first > 1.2)
        #expect(last < 0.45, "loss \(first) -> \(last) after 60 full-batch steps")
        let evaluation = try Trainer.evaluate(trainer.model, on: DataLoader(dataset: data, batchSize: 64, shuffle: false, seed: 0,
                                                                            mean: [0.5], std: [0.25]), numClasses: 4)
        #expect(evaluation.accuracy > 0.95)
        #expect(evaluation.confusion.flatMap { $0 }.reduce(0, +) == 64)
        // A confusion matrix narrower than the model's outputs is refused, not indexed past.
        #expect(throws: BLASNetError.self) {
            try Trainer.evaluate(trainer.model, on: DataLoader(dataset: data, batchSize: 64, shuffle: false, seed: 0,
                                                               mean: [0.5], std: [0.25]), numClasses: 3)
        }
    }

    @Test func sameSeedGivesSameWeights() throws {
        let data = try Self.noiseDataset(count: 96)
        let a = try Self.trainer(data, epochs: 2), b = try Self.trainer(data, epochs: 2)
        for trainer in [a, b] {
            for _ in 0..<2 { _ = try trainer.trainEpoch() }
        }
        #expect(Self.weights(a) == Self.weights(b))
    }

    @Test(arguments: ["sgd", "adamw"])
    func checkpointResumeEqualsUninterruptedRun(_ optimizer: String) throws {
        let data = try Self.noiseDataset(count: 96)
        let uninterrupted = try Self.trainer(data, epochs: 3, optimizer: optimizer)
        for _ in 0..<3 { _ = try uninterrupted.trainEpoch() }

        let first = try Self.trainer(data, epochs: 3, optimizer: optimizer)
        _ = try first.trainEpoch()
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("resume-\(optimizer)-\(getpid()).safetensors").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try TrainingCheckpoint(trainer: first, history: [], settings: ["note": "test"]).write(to: path)

        let resumed = try Self.trainer(data, epochs: 3, optimizer: optimizer)
        let checkpoint = try TrainingCheckpoint(contentsOf: path)
        #expect(checkpoint.completedEpochs == 1)
        #expect(checkpoint.metadata["note"] == "test")
        try checkpoint.restore(into: resumed)
        #expect(resumed.completedEpochs == 1)
        for _ in 0..<2 { _ = try resumed.trainEpoch() }
        #expect(Self.weights(resumed) == Self.weights(uninterrupted))
        #expect(resumed.optimizer.stepCount == uninterrupted.optimizer.stepCount)
    }

    /// A model of one's own whose output is not `[N, K]` logits is refused by name, not
    /// indexed past its shape.
    @Test func evaluateRefusesOutputsThatAreNotLogits() throws {
        final class Scores: Module {
            func forward(_ x: Tensor) throws -> Tensor { Tensor(shape: [x.shape[0]]) }
            func backward(_ dy: Tensor) throws -> Tensor { dy }
        }
        let dataset = try ImageDataset(pixels: [UInt8](repeating: 0, count: 8), labels: [0, 1], channels: 1, height: 2,
                                       width: 2, classNames: ["a", "b"])
        let loader = try DataLoader(dataset: dataset, batchSize: 2, shuffle: false, seed: 0, mean: [0], std: [1])
        #expect(throws: BLASNetError.self) { try Trainer.evaluate(Scores(), on: loader, numClasses: 2) }
        #expect(throws: BLASNetError.self) { try CrossEntropyLoss()(Tensor(shape: [0, 2]), targets: []) }
    }

    @Test func aFileThatIsNotACheckpointIsRejected() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("plain-\(getpid()).safetensors").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try SafeTensorsFile(tensors: [("w", SafeTensor(Tensor(shape: [2])))]).write(to: path)
        #expect(throws: BLASNetError.self) { try TrainingCheckpoint(contentsOf: path) }
    }

    @Test func metricsAndCurves() throws {
        let history = (1...3).map {
            EpochSummary(epoch: $0, trainLoss: 1 / Double($0), trainAccuracy: 0.5 + 0.1 * Double($0),
                         testLoss: 1.2 / Double($0), testAccuracy: 0.45 + 0.1 * Double($0), seconds: 2.5, learningRate: 0.1)
        }
        let csv = TrainingCurves.csv(history).split(separator: "\n")
        #expect(csv.count == 4)
        #expect(csv[0].hasPrefix("epoch,train_loss,train_accuracy,test_loss,test_accuracy,seconds"))
        #expect(csv[2].hasPrefix("2,0.5,0.7,0.6,0.65"))
        let svg = TrainingCurves.svg(history, title: "a <test> & run")
        #expect(svg.components(separatedBy: "<polyline").count - 1 == 4)
        #expect(svg.contains("a &lt;test&gt; &amp; run"))
        #expect(XMLParser(data: Data(svg.utf8)).parse(), "the chart must be well-formed XML")
        let perfect = history.map { var e = $0; (e.trainAccuracy, e.testAccuracy) = (1, 1); return e }
        #expect(!TrainingCurves.svg(perfect, title: "all correct").contains("nan"), "an empty accuracy range")
    }
}

/// Non-finite steps: located by layer, and either fatal or skipped without a trace in the model.
struct NonFiniteTests {
    @Test func aNaNWeightIsReportedAtTheFirstLayerItReaches() throws {
        let trainer = try TrainingTests.trainer(TrainingTests.noiseDataset(count: 48), epochs: 1)
        let weight = trainer.model.namedParameters().first { $0.name == "layer2.0.conv1.weight" }!.parameter
        weight.value[0] = .nan
        let before = TrainingTests.weights(trainer)
        #expect(throws: BLASNetError.nonFinite(epoch: 1, step: 1, location: "layer2.0.conv1 (forward output)")) {
            try trainer.trainEpoch()
        }
        // Nothing was applied: the optimizer never stepped.
        #expect(trainer.optimizer.stepCount == 0)
        #expect(TrainingTests.weights(trainer).filter { !$0.key.contains("running") && !$0.key.contains("num_batches") }
            .allSatisfy { $0.key == "layer2.0.conv1.weight" || before[$0.key]! == $0.value })
    }

    /// With synchronized BatchNorm every process must make the same sums in the same order:
    /// the replay that locates a non-finite value makes all of a whole step's.
    @Test func locatingMakesEveryCollectiveCallOfAStep() throws {
        final class CountingSum: CrossProcessSum {
            var calls = 0
            func sum(_ values: inout [Double]) throws { calls += 1 }
        }
        let trainer = try TrainingTests.trainer(TrainingTests.noiseDataset(count: 48), epochs: 1)
        let counter = CountingSum()
        for case let norm as BatchNorm in trainer.model.modules { norm.synchronization = counter }
        let batch = try #require(trainer.trainLoader.batches(epoch: 0).first { _ in true })
        func locate() -> String {
            NonFiniteTrace.locate(model: trainer.model, loss: trainer.loss, images: batch.images, labels: batch.labels)
        }
        #expect(locate() == "nowhere when the step was replayed")
        let stepCalls = counter.calls
        #expect(stepCalls > 0)
        counter.calls = 0
        trainer.model.namedParameters().first { $0.name == "layer2.0.conv1.weight" }!.parameter.value[0] = .nan
        #expect(locate() == "layer2.0.conv1 (forward output)")
        #expect(counter.calls == stepCalls, "a process that stops its replay early leaves the others waiting")
    }

    @Test func skippedStepsLeaveWeightsAndStatisticsAsTheyWere() throws {
        let trainer = try TrainingTests.trainer(TrainingTests.noiseDataset(count: 48), epochs: 1)
        trainer.skipNonFinite = true
        let weight = trainer.model.namedParameters().first { $0.name == "layer1.0.bn2.bias" }!.parameter
        weight.value[0] = .infinity
        let before = TrainingTests.weights(trainer)
        var locations: [String] = []
        _ = try trainer.trainEpoch { if let location = $0.nonFinite { locations.append(location) } }
        #expect(trainer.skippedSteps == 3)
        #expect(locations == Array(repeating: "layer1.0.bn2 (forward output)", count: 3))
        #expect(trainer.optimizer.stepCount == 0)
        // Running statistics included: the skipped forward passes were undone.
        let after = TrainingTests.weights(trainer)
        let changed = before.keys.filter { before[$0] != after[$0] }
        #expect(changed.isEmpty, "changed: \(changed.sorted())")
        #expect(trainer.completedEpochs == 1)
    }
}
