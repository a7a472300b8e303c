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
        let sgd = try SGD(net.namedParameters().map(\.parameter), learningRate: 0.1, momentum: 0.9, weightDecay: 1e-3)
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
            #expect(p.grad.scalars.allSatisfy { $0 == 0 }, "\(name) got a gradient")
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
        #expect(net.fc.weight.grad.scalars.contains { $0 != 0 })
    }
}
