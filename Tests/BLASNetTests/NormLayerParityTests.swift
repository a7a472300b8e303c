import Foundation
import Testing
@testable import BLASNet

/// InstanceNorm2d and LayerNorm against torch.nn's `InstanceNorm2d(C, affine=True,
/// track_running_stats=True)` and `LayerNorm(F)` on the fixture written by
/// `scripts/make-norm-fixtures`, with the bounds of ``PyTorchParityTests``. The fixture
/// holds PyTorch's layouts, `[N, C, H, W]` and `[N, F]`; ours are `[C, N, H, W]` and
/// `[F, N]`, one ``Tensor/swappingFirstAxes()`` away.
struct NormLayerParityTests {
    typealias Fixture = PyTorchParityTests.Fixture
    static let outputFloor = PyTorchParityTests.outputFloor, gradientFloor = PyTorchParityTests.gradientFloor

    /// One training step (output, input gradient, γ and β gradients, running statistics),
    /// a second step's output and statistics, then inference with those statistics and its
    /// gradients.
    @Test func instanceNorm2dMatchesPyTorch() throws {
        let fixture = try Fixture("norm_layers")
        func channelMajor(_ key: String) throws -> Tensor { try fixture.reference(key).swappingFirstAxes() }
        let input = try channelMajor("instance.input.0"), dy = try channelMajor("instance.dy")
        let norm = try InstanceNorm2d(input.shape[0], affine: true, trackRunningStats: true)
        let weight = try #require(norm.weight), bias = try #require(norm.bias)
        let runningMean = try #require(norm.runningMean), runningVar = try #require(norm.runningVar)
        weight.value = try fixture.reference("instance.weight")
        bias.value = try fixture.reference("instance.bias")
        runningMean.value = try fixture.reference("instance.running_mean")
        runningVar.value = try fixture.reference("instance.running_var")

        func step(_ mode: String) throws {
            norm.zeroGrad()
            try fixture.expectClose(try norm.forward(input).swappingFirstAxes(), "instance.\(mode).output", floor: Self.outputFloor)
            try fixture.expectClose(try norm.backward(dy).swappingFirstAxes(), "instance.\(mode).grad.input", floor: Self.gradientFloor)
            try fixture.expectClose(try weight.requiredGrad(), "instance.\(mode).grad.weight", floor: Self.gradientFloor)
            try fixture.expectClose(try bias.requiredGrad(), "instance.\(mode).grad.bias", floor: Self.gradientFloor)
        }
        func expectStatistics(after k: Int) throws {
            try fixture.expectClose(runningMean.value, "instance.train.running_mean.\(k)", floor: Self.outputFloor)
            try fixture.expectClose(runningVar.value, "instance.train.running_var.\(k)", floor: Self.outputFloor)
        }

        norm.train()
        try step("train")
        try expectStatistics(after: 1)
        let second = try norm.forward(try channelMajor("instance.input.1"))
        try fixture.expectClose(second.swappingFirstAxes(), "instance.train.output.2", floor: Self.outputFloor)
        try expectStatistics(after: 2)
        let counted = try #require(fixture.file["instance.train.num_batches_tracked"]).integers()
        #expect(try #require(norm.numBatchesTracked).value.scalars.map { Int64($0) } == counted)

        norm.eval()
        try step("eval")
        try expectStatistics(after: 2)
    }

    @Test func layerNormMatchesPyTorch() throws {
        let fixture = try Fixture("norm_layers")
        let input = try fixture.reference("layer.input").swappingFirstAxes()
        let norm = try LayerNorm(normalizedShape: input.shape[0])
        let weight = try #require(norm.weight), bias = try #require(norm.bias)
        weight.value = try fixture.reference("layer.weight")
        bias.value = try fixture.reference("layer.bias")

        norm.zeroGrad()
        try fixture.expectClose(try norm.forward(input).swappingFirstAxes(), "layer.output", floor: Self.outputFloor)
        let dx = try norm.backward(try fixture.reference("layer.dy").swappingFirstAxes())
        try fixture.expectClose(dx.swappingFirstAxes(), "layer.grad.input", floor: Self.gradientFloor)
        try fixture.expectClose(try weight.requiredGrad(), "layer.grad.weight", floor: Self.gradientFloor)
        try fixture.expectClose(try bias.requiredGrad(), "layer.grad.bias", floor: Self.gradientFloor)
    }
}
