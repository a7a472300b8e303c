import Foundation
import Testing
@testable import BLASNet

/// Parity with PyTorch (torchvision resnet18, timm seresnet18, and resnet18 with
/// GroupNorm(32, C), GroupNorm(1, C) and GroupNorm(C, C) in every norm slot; cifar stem,
/// odd 13×11 inputs; and resnet50 and seresnet50 at width 8 with the ImageNet stem, on
/// 45×41 inputs) on fixtures written by `scripts/make-fixtures`. References are
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
        /// the reference lies within float32 rounding of zero (nor a max-pool window's two
        /// largest inputs of each other).
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

        /// The network the fixture describes, with its stem, width (64 unless recorded),
        /// norm (batch unless recorded: the first fixtures predate the key) and classes, as
        /// make_fixtures.py built it.
        func model() throws -> ResNet {
            func metadata(_ key: String) throws -> String { try #require(file.metadata[key], "fixture lacks metadata \(key)") }
            return try ResNet(try #require(Architecture(rawValue: try metadata("arch"))),
                              numClasses: try #require(Int(try metadata("num_classes"))),
                              inChannels: try #require(Int(try metadata("in_chans"))),
                              stem: try #require(Stem(rawValue: try metadata("stem"))),
                              width: try file.metadata["width"].map { try #require(Int($0)) } ?? 64,
                              norm: try file.metadata["norm"].map { try Normalization(parsing: $0) } ?? .batch)
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

    /// Every 3×3 stride-1 convolution runs three ways: Winograd F(2×2, 3×3), F(4×4, 3×3)
    /// and im2col. F(4×4, 3×3) takes up to 3/4 of a bound where F(2×2, 3×3) takes 1/5.
    @Test(arguments: [(Architecture.resnet18, Normalization.batch, ConvolutionAlgorithm.winograd),
                      (.resnet18, .batch, .im2col), (.seresnet18, .batch, .winograd), (.seresnet18, .batch, .im2col),
                      (.resnet18, .batch, .winograd4x4), (.seresnet18, .batch, .winograd4x4),
                      (.resnet18, .group(32), .automatic), (.resnet18, .layer, .automatic), (.resnet18, .instance, .automatic)])
    func inferenceAndTrainingStepMatchPyTorch(_ arch: Architecture, _ norm: Normalization,
                                              _ algorithm: ConvolutionAlgorithm) throws {
        let fixture = try Fixture(arch, norm)
        let model = try fixture.model()
        #expect(model.architecture == arch && model.normalization == norm && model.stem == .cifar && model.width == 64)
        try Self.checkInferenceAndTrainingStep(fixture, model, algorithm)
    }

    /// Bottleneck blocks (with and without squeeze-and-excitation) behind torchvision's
    /// ImageNet stem: 7×7/2 convolution and 3×3/2 max-pool, on odd sizes (45×41 → 23×21 →
    /// 12×11), at width 8 so the networks stay small. The fixture's seed also keeps every
    /// max-pool window's two largest inputs apart, so no near-tie can route a gradient to
    /// another element. Every 3×3 stride-1 convolution runs all three ways in resnet50. These
    /// deeper networks are less well conditioned (PyTorch float32 is up to 4e-4 off on some
    /// of resnet50's γ and β gradients), so some bounds exceed the floors by the same rule.
    @Test(arguments: [("resnet50_imagenet_w8", ConvolutionAlgorithm.winograd), ("resnet50_imagenet_w8", .im2col), ("resnet50_imagenet_w8", .winograd4x4),
                      ("seresnet50_imagenet_w8", .automatic)])
    func bottleneckNetworksWithTheImageNetStemMatchPyTorch(_ name: String, _ algorithm: ConvolutionAlgorithm) throws {
        let fixture = try Fixture(name)
        let model = try fixture.model()
        #expect(model.architecture.blockType == .bottleneck && model.stem == .imagenet && model.width == 8)
        #expect(model.children.contains { $0.name == "maxpool" })
        try Self.checkInferenceAndTrainingStep(fixture, model, algorithm)
    }

    /// The eval-mode logits, then one training step's logits, loss, every parameter
    /// gradient and every running statistic, against `fixture`.
    static func checkInferenceAndTrainingStep(_ fixture: Fixture, _ model: ResNet, _ algorithm: ConvolutionAlgorithm) throws {
        let input = try fixture.reference("input")
        let targets = try #require(fixture.file["target"]).integers().map { Int($0) }
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
        // Every gradient PyTorch recorded belongs to one of ours (no parameter left unchecked).
        let gradientKeys = fixture.file.tensors.filter { $0.name.hasPrefix("train.grad.") || $0.name.hasPrefix("train.gradsample.") }
        #expect(gradientKeys.count == model.namedParameters().count)
        for (name, p) in model.namedParameters() {
            let key = fixture.file["train.grad.\(name)"] != nil ? "train.grad.\(name)" : "train.gradsample.\(name)"
            try fixture.expectClose(try p.requiredGrad(), key, floor: Self.gradientFloor)
        }
        for (name, b) in model.namedBuffers() where b.kind == .float {
            try fixture.expectClose(b.value, "train.\(name)", floor: Self.outputFloor)
        }
    }
}
