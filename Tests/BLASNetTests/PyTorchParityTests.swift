import Foundation
import Testing
@testable import BLASNet

/// Parity with PyTorch (torchvision resnet18, timm seresnet18, and resnet18 with
/// GroupNorm(32, C), GroupNorm(1, C) and GroupNorm(C, C) in every norm slot; cifar stem,
/// odd 13×11 inputs) on fixtures written by `scripts/make-fixtures`. References are
/// PyTorch in float64; each float32 result of ours must be within a small factor of
/// PyTorch float32's own error on the same tensor, recorded in the fixture.
struct PyTorchParityTests {
    /// Our error may exceed PyTorch float32's by this factor…
    static let factor = 4.0
    /// …or stay under these floors (float32 rounding of a deep network's outputs and gradients).
    static let outputFloor = 1e-5, gradientFloor = 1e-4

    @Test func generatorMatchesPython() {
        // Printed by `python scripts/fixture_weights.py`.
        #expect(FixtureWeights.fnv1a64("conv1.weight") == 0x69a2_9a2c_ee47_d254)
        let w = FixtureWeights.tensor("conv1.weight", shape: [64, 3, 3, 3], scale: (6.0 / 27).squareRoot())
        #expect(w.scalars.prefix(4).map(\.bitPattern) == [0x3d2e_1166, 0x3e6c_b024, 0xbee6_4b5e, 0x3e64_08b0])
    }

    struct Fixture {
        let file: SafeTensorsFile
        let torchError: [String: Double]
        /// Seed of the fixture weights, chosen by make_fixtures.py so that no ReLU input of
        /// the reference lies within float32 rounding of zero.
        let seed: UInt64
        /// Elements make_fixtures.py sampled from each large gradient.
        let sampleCount: Int

        init(_ name: String) throws {
            let url = try #require(Bundle.module.url(forResource: name, withExtension: "safetensors", subdirectory: "Fixtures"))
            file = try SafeTensorsFile(contentsOf: url.path)
            let json = try #require(file.metadata["torch_f32_error"]?.data(using: .utf8))
            torchError = try #require(try JSONSerialization.jsonObject(with: json) as? [String: Double])
            seed = try #require(file.metadata["seed"].flatMap { UInt64($0) })
            sampleCount = file.metadata["sample_count"].flatMap { Int($0) } ?? 4096
        }

        /// The fixture of `arch` with `norm` in every norm slot.
        init(_ arch: Architecture, _ norm: Normalization) throws {
            try self.init("\(arch.rawValue)_cifar" + (norm == .batch ? "" : "_" + norm.description.replacingOccurrences(of: ":", with: "")))
        }

        /// make_fixtures.py's sampling stride for large gradients: never a multiple of 3, so
        /// the samples visit every tap of a 3×3 kernel.
        func sampleStride(_ count: Int) -> Int {
            var stride = count / sampleCount
            while stride % 3 == 0 && stride > 1 { stride -= 1 }
            return max(stride, 1)
        }

        func reference(_ key: String) throws -> Tensor { try #require(file[key], "fixture lacks \(key)").floats() }

        /// Relative L2 error of `ours` against the fixture tensor `key`, checked against
        /// the bound; for `gradsample` keys, over the elements PyTorch sampled.
        func expectClose(_ ours: Tensor, _ key: String, floor: Double, sourceLocation: SourceLocation = #_sourceLocation) throws {
            let ref = try reference(key)
            var values = ours.scalars
            if key.contains(".gradsample.") {
                let stride = sampleStride(values.count)
                values = (0..<ref.count).map { values[$0 * stride] }
            }
            try #require(values.count == ref.count, "\(key): \(values.count) values, reference has \(ref.count)")
            let diff = zip(values, ref.scalars).reduce(0.0) { $0 + pow(Double($1.0) - Double($1.1), 2) }.squareRoot()
            let norm = ref.scalars.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
            let error = diff / max(norm, 1e-30)
            let bound = max(PyTorchParityTests.factor * (torchError[key] ?? 0), floor)
            #expect(error <= bound, "\(key): relative error \(error), PyTorch float32 \(torchError[key] ?? .nan)",
                    sourceLocation: sourceLocation)
        }
    }

    /// Every 3×3 stride-1 convolution runs both ways: Winograd F(2×2, 3×3) and im2col.
    @Test(arguments: [(Architecture.resnet18, Normalization.batch, ConvolutionAlgorithm.winograd),
                      (.resnet18, .batch, .im2col), (.seresnet18, .batch, .winograd), (.seresnet18, .batch, .im2col),
                      (.resnet18, .group(32), .automatic), (.resnet18, .layer, .automatic), (.resnet18, .instance, .automatic)])
    func inferenceAndTrainingStepMatchPyTorch(_ arch: Architecture, _ norm: Normalization,
                                              _ algorithm: ConvolutionAlgorithm) throws {
        let fixture = try Fixture(arch, norm)
        let input = try fixture.reference("input")
        let targets = try #require(fixture.file["target"]).integers().map { Int($0) }
        let model = try ResNet(arch, numClasses: 10, inChannels: 3, stem: .cifar, width: 64, norm: norm)
        model.setConvolutionAlgorithm(algorithm)

        FixtureWeights.load(into: model, seed: fixture.seed)
        model.eval()
        try fixture.expectClose(try model.forward(input), "eval.logits", floor: Self.outputFloor)

        FixtureWeights.load(into: model, seed: fixture.seed)
        model.train()
        let logits = try model.forward(input)
        let (loss, gradient) = try CrossEntropyLoss()(logits, targets: targets)
        model.zeroGrad()
        _ = try model.backward(gradient)
        try fixture.expectClose(logits, "train.logits", floor: Self.outputFloor)
        try fixture.expectClose(Tensor(scalar: loss), "train.loss", floor: Self.outputFloor)
        for (name, p) in model.namedParameters() {
            let key = fixture.file["train.grad.\(name)"] != nil ? "train.grad.\(name)" : "train.gradsample.\(name)"
            try fixture.expectClose(try p.requiredGrad(), key, floor: Self.gradientFloor)
        }
        for (name, b) in model.namedBuffers() where b.kind == .float {
            try fixture.expectClose(b.value, "train.\(name)", floor: Self.outputFloor)
        }
    }
}
