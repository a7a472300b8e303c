import Foundation
import Testing
@testable import BLASNet

/// Freezing for fine-tuning: frozen parameters and running statistics do not move,
/// the backward pass does not enter the frozen layers, and the head can be replaced.
struct FreezingTests {
    static func model() throws -> ResNet {
        try ResNet(.seresnet8, numClasses: 5, inChannels: 1, stem: .cifar, width: 8, seed: 4)
    }

    static func batch(_ seed: UInt64) throws -> (Tensor, [Int]) {
        var rng = SeededGenerator(seed: seed)
        let x = Tensor.normal(shape: [6, 1, 10, 10], std: 1, using: &rng)
        return (x, (0..<6).map { $0 % 5 })
    }

    static func state(_ modules: [any Module]) -> [[Float]] {
        modules.flatMap { m in m.namedParameters().map(\.parameter.value.scalars) + m.namedBuffers().map(\.buffer.value.scalars) }
    }

    @Test func frozenLayersKeepWeightsAndStatisticsAndAreSkippedByBackward() throws {
        let net = try Self.model()
        let frozen: [any Module] = [net.conv1, net.bn1, net.stages[0]]
        frozen.forEach { $0.freeze() }
        net.train()
        let before = Self.state(frozen)
        let trainableBefore = Self.state([net.stages[2], net.fc])
        let sgd = try SGD(net.parameters(), learningRate: 0.1, momentum: 0.9, weightDecay: 1e-3)
        let profiler = Profiler(net)
        try profiler.run {
            for step in 0..<3 {
                let (x, y) = try Self.batch(UInt64(step))
                let (_, gradient) = try CrossEntropyLoss()(try net.forward(x), targets: y)
                net.zeroGrad()
                _ = try net.backward(gradient)
                sgd.step()
            }
        }
        #expect(Self.state(frozen) == before, "frozen parameters or running statistics changed")
        #expect(Self.state([net.stages[2], net.fc]) != trainableBefore)
        for (name, p) in net.namedParameters() where name.hasPrefix("layer1.") || name.hasPrefix("conv1") || name.hasPrefix("bn1") {
            #expect(!p.requiresGrad)
            #expect(p.grad == nil, "\(name) got a gradient")
        }
        let backwardSeconds = Dictionary(profiler.layers.map { ($0.name, $0.backwardSeconds) }, uniquingKeysWith: +)
        for name in ["conv1", "bn1", "layer1.0.conv1", "layer1.0.bn1", "layer1.0.conv2", "layer1.0.se"] {
            #expect(backwardSeconds[name] == 0, "backward entered \(name)")
        }
        #expect((backwardSeconds["layer2.0.conv1"] ?? 0) > 0)
        #expect((net.bn1 as? BatchNorm)?.training == false, "a frozen BatchNorm stays in inference mode under train()")

        net.unfreeze()
        net.train()
        #expect(net.namedParameters().allSatisfy { $0.parameter.requiresGrad })
        #expect((net.bn1 as? BatchNorm)?.training == true)
    }

    /// Unfrozen, a normalization is back in the mode its model was last put in, with no
    /// `train()` or `eval()` in between.
    @Test func unfreezingReturnsNormalizationsToTheModelsMode() throws {
        let norms: [any RunningStatistics] = [try BatchNorm(4), try InstanceNorm2d(4, trackRunningStats: true)]
        for norm in norms {
            func training() -> Bool { (norm as? BatchNorm)?.training ?? (norm as! InstanceNorm2d).training }
            norm.train()
            norm.freeze()
            #expect(!training())
            norm.unfreeze()
            #expect(training(), "\(type(of: norm)) stayed in inference mode after unfreeze() in a training model")
            norm.freeze()
            norm.eval()
            norm.unfreeze()
            #expect(!training(), "\(type(of: norm)) went to training after unfreeze() in a model in eval mode")
        }
    }

    @Test func replacedHeadIsNewAndTrainable() throws {
        let net = try Self.model()
        net.freeze()
        try net.replaceHead(numClasses: 3, seed: 9)
        #expect(net.fc.weight.value.shape == [3, net.fc.inFeatures])
        #expect(net.numClasses == 3)
        let trainable = net.namedParameters().filter(\.parameter.requiresGrad).map(\.name)
        #expect(trainable == ["fc.weight", "fc.bias"])
        let (x, _) = try Self.batch(1)
        net.train()
        let logits = try net.forward(x)
        #expect(logits.shape == [6, 3])
        let (_, gradient) = try CrossEntropyLoss()(logits, targets: [0, 1, 2, 0, 1, 2])
        _ = try net.backward(gradient)
        #expect(try net.fc.weight.requiredGrad().scalars.contains { $0 != 0 })

        // A head over a 2×2 grid reads four means per channel, in torch.flatten's order.
        let channels = net.fc.inFeatures
        try net.replaceHead(numClasses: 4, grid: 2, seed: 9)
        #expect(net.headGrid == 2 && net.fc.weight.value.shape == [4, 4 * channels])
        // Each channel's four quadrant means average to its global mean: a 16×16 input
        // leaves a 4×4 map, so the bins are equal.
        var rng = SeededGenerator(seed: 5)
        let even = Tensor.normal(shape: [6, 1, 16, 16], std: 1, using: &rng)
        net.eval()
        let features = try net.features(even)
        #expect(features.shape == [6, 4 * channels])
        try net.replaceHead(numClasses: 4, grid: 1, seed: 9)
        let global = try net.features(even)
        for n in 0..<6 {
            for c in 0..<channels {
                let quadrants = (0..<4).map { features.scalars[n * 4 * channels + c * 4 + $0] }
                #expect(abs(quadrants.reduce(0, +) / 4 - global.scalars[n * channels + c]) < 1e-5)
            }
        }
        #expect(try net.forward(x).shape == [6, 4])
    }

    @Test func layersFrozenByNameStopBackwardInsideAStageAndKeepTheOtherGradients() throws {
        // Two blocks per stage, so freezing layer2.0 freezes half a stage.
        func model() throws -> ResNet { try ResNet(Architecture(rawValue: "seresnet14")!, numClasses: 5, inChannels: 1, stem: .cifar, width: 8, seed: 4) }
        let (x, y) = try Self.batch(3)
        func gradients(_ net: ResNet) throws -> [String: [Float]] {
            net.train()
            let (_, gradient) = try CrossEntropyLoss()(try net.forward(x), targets: y)
            net.zeroGrad()
            _ = try net.backward(gradient)
            return Dictionary(uniqueKeysWithValues: net.namedParameters().compactMap { p in p.parameter.grad.map { (p.name, $0.scalars) } })
        }
        let frozenPrefixes = ["conv1.", "bn1.", "layer1.", "layer2.0."]
        let reference = try model()
        try reference.freeze(layers: ["conv1", "bn1", "layer1", "layer2.0"])
        for (_, p) in reference.namedParameters() { p.requiresGrad = true }  // full backward, same statistics
        let all = try gradients(reference)

        let net = try model()
        try net.freeze(layers: ["conv1", "bn1", "layer1", "layer2.0"])
        let profiler = Profiler(net)
        let trained = try profiler.run { try gradients(net) }
        for (name, p) in net.namedParameters() {
            let frozen = frozenPrefixes.contains { name.hasPrefix($0) }
            #expect(p.requiresGrad == !frozen, "\(name)")
            if frozen {
                #expect(trained[name] == nil, "\(name) got a gradient")
            } else {
                #expect(trained[name] == all[name], "\(name): stopping early changed a trained gradient")
            }
        }
        let backwardSeconds = Dictionary(profiler.layers.map { ($0.name, $0.backwardSeconds) }, uniquingKeysWith: +)
        for name in ["layer1.1.conv2", "layer2.0.conv1", "layer2.0.conv2", "layer2.0.downsample.0"] {
            #expect(backwardSeconds[name] == 0, "backward entered the frozen \(name)")
        }
        #expect((backwardSeconds["layer2.1.conv1"] ?? 0) > 0)

        let untouched = try model()
        #expect(throws: BLASNetError.self) { try untouched.freeze(layers: ["layer1", "layer9"]) }
        #expect(untouched.namedParameters().allSatisfy { $0.parameter.requiresGrad }, "a failed freeze froze something")
        #expect(untouched.module(at: "layer2.1.conv1") === untouched.stages[1].layers[1].module(at: "conv1"))
        // The head is fitted afresh for the new classes: a strategy may not freeze it.
        for names in [["conv1", "fc"], ["fc.weight"]] {
            #expect(throws: BLASNetError.self, "\(names)") { try FineTuningStrategy.freezing(layers: names).apply(to: untouched) }
        }
    }

    @Test func strategiesParseAndPrintTheSameWay() throws {
        for text in ["head", "full", "scratch", "partial:2", "partial:conv1,bn1,layer1,layer2.0"] {
            #expect(try FineTuningStrategy(parsing: text).description == text)
        }
        #expect(try FineTuningStrategy(parsing: "partial:layer1") == .freezing(layers: ["layer1"]))
        for bad in ["partial", "partial:", "partial:-1", "partial:layer1,,layer2", "half"] {
            #expect(throws: BLASNetError.self, "\(bad)") { try FineTuningStrategy(parsing: bad) }
        }
    }
}
