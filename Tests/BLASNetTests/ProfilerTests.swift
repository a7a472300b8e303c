import Foundation
import Testing
@testable import BLASNet

/// The profiler records each layer's sgemms as the step issued them, so that
/// `blasnet bench` replays them with the step's schedule.
struct ProfilerTests {
    @Test func sgemmsAreRecordedAsTheStepSchedulesThem() throws {
        let net = try ResNet(.resnet8, numClasses: 3, inChannels: 2, stem: .cifar, width: 8, seed: 2)
        net.setConvolutionAlgorithm(.winograd)
        net.train()
        var rng = SeededGenerator(seed: 5)
        let x = Tensor.normal(shape: [4, 2, 10, 10], std: 1, using: &rng)
        let profiler = Profiler(net)
        try profiler.run {
            let (_, gradient) = try CrossEntropyLoss()(try net.forward(x), targets: [0, 1, 2, 0])
            _ = try net.backward(gradient)
        }
        let layers = Dictionary(uniqueKeysWithValues: profiler.layers.map { ($0.name, $0.gemms) })
        typealias Shape = Profiler.GEMMShape
        // The stem by Winograd: 16 independent sgemms over 4 images × 5×5 tiles, forward
        // (kernels · inputs) and for the weight gradient (output gradients · inputsᵀ); the
        // network's input needs no gradient.
        #expect(layers["conv1"] == [
            .init(shape: Shape(transA: false, transB: false, m: 8, n: 100, k: 2, lda: 2, ldb: 100, ldc: 100, beta: 0), count: 16),
            .init(shape: Shape(transA: false, transB: true, m: 8, n: 2, k: 100, lda: 100, ldb: 100, ldc: 2, beta: 0), count: 16),
        ])
        // A stride-2 3×3 convolution by im2col: one sgemm each for the output, the weight
        // gradient (added to the gradient so far) and the column gradient, which BLASNet
        // splits over the workers itself.
        #expect(layers["layer2.0.conv1"] == [
            .init(shape: Shape(transA: false, transB: false, m: 16, n: 100, k: 72, lda: 72, ldb: 100, ldc: 100, beta: 0), count: 1),
            .init(shape: Shape(transA: false, transB: true, m: 16, n: 72, k: 100, lda: 100, ldb: 100, ldc: 72, beta: 1), count: 1),
            .init(shape: Shape(transA: true, transB: false, m: 72, n: 100, k: 16, lda: 72, ldb: 100, ldc: 100, beta: 0), count: 1),
        ])
        let call = try #require(layers["conv1"]?.first)
        #expect(call.flops == 16 * 2 * 8 * 100 * 2)
        // The replay runs one step's calls per layer; these records hold one step.
        let replay = GEMMReplay(profiler.layers, steps: 1)
        #expect(replay.calls.map(\.count) == profiler.layers.map(\.gemms.count))
        let seconds = replay.run()
        #expect(seconds.count == profiler.layers.count)
        #expect(zip(seconds, replay.calls).allSatisfy { $1.isEmpty ? $0 == 0 : $0 > 0 && $0 < 1 })
        #expect(GEMMReplay(profiler.layers, steps: 2).calls.map(\.count) == profiler.layers.map { $0.gemms.count / 2 })
    }

    /// Blocks and stages are records too, holding only their own code's time (a residual
    /// block's addition and ReLU), so that the records add up to the step once.
    @Test func containersKeepOnlyTheirOwnTime() throws {
        let net = try ResNet(.resnet8, numClasses: 3, inChannels: 2, stem: .cifar, width: 8, seed: 3)
        net.train()
        var rng = SeededGenerator(seed: 6)
        let x = Tensor.normal(shape: [4, 2, 12, 12], std: 1, using: &rng)
        let profiler = Profiler(net)
        let start = DispatchTime.now().uptimeNanoseconds
        try profiler.run {
            for _ in 0..<3 {
                let (_, gradient) = try CrossEntropyLoss()(try net.forward(x), targets: [0, 1, 2, 0])
                _ = try net.backward(gradient)
            }
        }
        let wall = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        let records = Dictionary(uniqueKeysWithValues: profiler.layers.map { ($0.name, $0) })
        #expect(Set(profiler.layers.filter(\.isContainer).map(\.name)) == ["layer1", "layer1.0", "layer2", "layer2.0",
                                                                           "layer2.0.downsample", "layer3", "layer3.0",
                                                                           "layer3.0.downsample"])
        let block = try #require(records["layer1.0"])
        #expect(block.forwardSeconds > 0 && block.backwardSeconds > 0 && block.gemms.isEmpty)
        // Counting a container's layers in its own time would add each layer two or three times over.
        let total = profiler.layers.reduce(0) { $0 + $1.forwardSeconds + $1.backwardSeconds }
        #expect(total <= wall)
        #expect(block.forwardSeconds + block.backwardSeconds < ["conv1", "bn1", "conv2", "bn2"].reduce(0) {
            $0 + records["layer1.0." + $1]!.forwardSeconds + records["layer1.0." + $1]!.backwardSeconds
        })
    }
}
