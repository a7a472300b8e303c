import Foundation
import Testing
@testable import BLASNet

struct StateDictTests {
    @Test func namesMatchTorchvisionAndTimm() throws {
        // width 16 keeps the debug-build test fast; names do not depend on it.
        let state = try ResNet(.seresnet50, numClasses: 7, width: 16).stateDict()
        let names = Set(state.map(\.name))
        for key in ["conv1.weight", "bn1.weight", "bn1.running_var", "bn1.num_batches_tracked",
                    "layer1.0.conv3.weight", "layer1.0.downsample.0.weight", "layer1.0.downsample.1.running_mean",
                    "layer1.0.se.fc1.weight", "layer1.0.se.fc2.bias", "layer4.2.bn3.bias", "fc.weight", "fc.bias"] {
            #expect(names.contains(key), "\(key)")
        }
        #expect(!names.contains("layer1.1.downsample.0.weight"))
        let byName = Dictionary(uniqueKeysWithValues: state.map { ($0.name, $0.tensor) })
        #expect(byName["layer1.0.se.fc1.weight"]?.shape == [8, 64, 1, 1])
        #expect(byName["layer4.0.se.fc1.weight"]?.shape == [32, 512, 1, 1])
        #expect(byName["layer4.0.conv2.weight"]?.shape == [128, 128, 3, 3])
        #expect(byName["fc.weight"]?.shape == [7, 512])
        #expect(byName["bn1.num_batches_tracked"]?.dtype == .i64)
        // torchvision's resnet50 state_dict: 161 parameters and 53 BatchNorms with 3 buffers each.
        #expect(try ResNet(.resnet50, width: 8).stateDict().count == 161 + 53 * 3)
    }

    /// Sizes no machine could hold are refused by the library too, before any product of
    /// them overflows: a head of 2⁴⁰ classes, a 2³²×2³² pooling grid, a million-block stage.
    /// The size known before building is exactly the convolutions' and `fc`'s weights.
    @Test(arguments: [(Architecture.resnet18, Stem.imagenet, 1), (.seresnet50, .cifar, 2), (.resnet20, .strided, 3)])
    func convolutionAndHeadWeightsCountsThoseOfTheBuiltModel(_ arch: Architecture, _ stem: Stem, _ grid: Int) throws {
        let model = try ResNet(arch, numClasses: 7, inChannels: 2, stem: stem, width: 8, headGrid: grid)
        // SE blocks' 1×1 convolutions are among what the bound leaves out.
        let built = model.namedParameters()
            .filter { ($0.parameter.value.shape.count == 4 && !$0.name.contains(".se.")) || $0.name == "fc.weight" }
            .reduce(0) { $0 + $1.parameter.value.count }
        #expect(arch.convolutionAndHeadWeights(width: 8, inChannels: 2, stem: stem, numClasses: 7, headGrid: grid) == Double(built))
    }

    @Test func modelsTooLargeToBuildAreRefused() throws {
        // Each size within its own limit, 10¹⁴ weights together: refused before any is allocated.
        let message = #expect(throws: BLASNetError.self) { try ResNet(.resnet50, numClasses: 1 << 20, width: 1024, headGrid: 64) }
        #expect(message.map { "\($0)" }?.contains("GB, more than the") == true)
        #expect(throws: BLASNetError.self) { try ResNet(.resnet8, numClasses: 1 << 40) }
        #expect(throws: BLASNetError.self) { try ResNet(.resnet8, inChannels: Int.max) }
        #expect(throws: BLASNetError.self) { try ResNet(.resnet8, headGrid: 1 << 32) }
        #expect(throws: BLASNetError.self) { try ResNet(.resnet8, width: 1 << 40) }
        #expect(Architecture(rawValue: "resnet600000002") == nil)
        #expect(Architecture(rawValue: "resnet\(Architecture.maximumCIFARDepth)")?.depths == [1000, 1000, 1000])
    }

    /// What a library user can hand the public API wrongly is refused, not read out of bounds
    /// or trapped on: a parameter of another shape, a counter whose values miss its shape.
    @Test func stateOfTheWrongShapeIsRefused() throws {
        var rng = SeededGenerator(seed: 1)
        let linear = try Linear(512, 10, rng: &rng)
        let before = linear.weight.value
        #expect(throws: BLASNetError.self) { try linear.weight.assign(Tensor(shape: [10, 10])) }
        #expect(linear.weight.value == before)
        try linear.weight.assign(Tensor(shape: [10, 512], repeating: 0.5))
        #expect(linear.weight.value[0] == 0.5)
        let bn = try BatchNorm(4)
        #expect(throws: BLASNetError.self) { try bn.runningVar.assign(Tensor(shape: [5])) }
        #expect(throws: BLASNetError.self) { try SafeTensor(int64s: [], shape: []) }
        #expect(throws: BLASNetError.self) { try SafeTensor(int64s: [1, 2], shape: [3]) }
        #expect(throws: BLASNetError.self) { try SafeTensor(dtype: .f64, shape: [1 << 61], bytes: Data()) }
        #expect(throws: BLASNetError.self) { try Trainer.predictions(Tensor(shape: [4])) }
    }

    /// Initialized as the library each model comes from: timm's SE-ResNets zero the last
    /// norm's γ in every block (`zero_init_last`; in timm 1.0 exactly the `bn2.weight`s of
    /// seresnet18 and the `bn3.weight`s of seresnet50 are zero), torchvision's ResNets and
    /// the CIFAR family keep every γ at 1.
    @Test(arguments: [("seresnet18", "bn2"), ("seresnet50", "bn3"), ("resnet18", nil), ("resnet50", nil), ("seresnet20", nil)])
    func normsStartAsInTheirLibrary(arch: String, zeroed: String?) throws {
        let model = try ResNet(try #require(Architecture(rawValue: arch)), numClasses: 3, width: 8)
        let gammas = model.namedParameters().filter { $0.name.hasSuffix(".weight") && $0.parameter.value.shape.count == 1 }
        #expect(gammas.count > 10)
        for (name, gamma) in gammas where !name.hasPrefix("fc") {
            let expected: Float = zeroed.map { name.hasSuffix(".\($0).weight") } == true ? 0 : 1
            #expect(gamma.value.scalars.allSatisfy { $0 == expected }, "\(arch) \(name)")
        }
    }

    /// The CIFAR family's own stem by default (3×3/1: He et al.'s stages run at 32, 16 and 8
    /// on CIFAR), the ImageNet one for torchvision's and timm's.
    @Test func stemsDefaultToThePublishedOnes() throws {
        #expect(try ResNet(.resnet20, numClasses: 10).stem == .cifar)
        #expect(try ResNet(.seresnet8, numClasses: 10, width: 4).conv1.weight.value.shape == [4, 3, 3, 3])
        #expect(try ResNet(.resnet18, numClasses: 10, width: 4).stem == .imagenet)
        #expect(try ResNet(.resnet20, numClasses: 10, stem: .imagenet).stem == .imagenet)
    }

    @Test func seWidthsFollowTimm() throws {
        #expect(try [64, 128, 256, 512, 1024, 2048].map { try SEBlock.reducedChannels($0) } == [8, 8, 16, 32, 64, 128])
    }

    @Test func roundTripAndStrictErrors() throws {
        let a = try ResNet(.resnet18, numClasses: 4, stem: .cifar, width: 8, seed: 1)
        let b = try ResNet(.resnet18, numClasses: 4, stem: .cifar, width: 8, seed: 2)
        let file = SafeTensorsFile(tensors: a.stateDict())
        let report = try b.loadStateDict(SafeTensorsFile(data: try file.serialized()))
        #expect(report == LoadReport(missingKeys: [], unexpectedKeys: []))
        #expect(b.fc.weight.value == a.fc.weight.value)

        var missing = file
        missing.tensors.removeAll { $0.name == "layer2.0.bn1.weight" || $0.name.hasSuffix("num_batches_tracked") }
        var extra = file
        extra.tensors.append(("layer5.0.conv1.weight", SafeTensor(Tensor(shape: [1]))))
        var wrong = file
        let i = wrong.tensors.firstIndex { $0.name == "fc.weight" }!
        wrong.tensors[i].tensor = SafeTensor(Tensor(shape: [5, 64]))

        let c = try ResNet(.resnet18, numClasses: 4, stem: .cifar, width: 8, seed: 3)
        let before = c.fc.weight.value
        #expect(throws: BLASNetError.stateDictMismatch(missing: ["layer2.0.bn1.weight"], unexpected: [], wrongShape: [])) {
            try c.loadStateDict(missing)
        }
        #expect(throws: BLASNetError.stateDictMismatch(missing: [], unexpected: ["layer5.0.conv1.weight"], wrongShape: [])) {
            try c.loadStateDict(extra)
        }
        #expect(throws: BLASNetError.stateDictMismatch(missing: [], unexpected: [], wrongShape: ["fc.weight: file [5, 64], model [4, 64]"])) {
            try c.loadStateDict(wrong)
        }
        // Another kind of file misses every key; the message names eight and the count, not a screenful.
        let other = #expect(throws: BLASNetError.self) { try c.loadStateDict(SafeTensorsFile(tensors: [("input", SafeTensor(Tensor(shape: [1])))])) }
        let text = other.map { "\($0)" } ?? ""
        #expect(text.hasPrefix("state dict does not fit the model: missing keys: conv1.weight, bn1.weight, "), "\(text)")
        #expect(text.contains(", … (") && text.contains(" in all); unexpected keys: input") && text.count < 400, "\(text)")
        // A counter that is no count (NaN, or PyTorch's int64 maximum, 2⁶³ as a Float) used to load
        // and then trap when the next checkpoint converted it back to int64.
        for bad in [SafeTensor(Tensor(shape: [], repeating: .nan)), SafeTensor(Tensor(shape: [], repeating: 1e30)),
                    try SafeTensor(int64s: [-1], shape: [])] {
            var counter = file
            let k = counter.tensors.firstIndex { $0.name == "layer1.0.bn1.num_batches_tracked" }!
            counter.tensors[k].tensor = bad
            #expect(throws: BLASNetError.self) { try c.loadStateDict(counter) }
        }
        #expect(c.fc.weight.value == before, "a failed load changes nothing")
        // Every int64 count loads, read as an integer: int64 max (2⁶³ in Float32) saves back as itself.
        var largest = file
        let k = largest.tensors.firstIndex { $0.name == "layer1.0.bn1.num_batches_tracked" }!
        largest.tensors[k].tensor = try SafeTensor(int64s: [.max], shape: [])
        let d = try ResNet(.resnet18, numClasses: 4, stem: .cifar, width: 8, seed: 3)
        try d.loadStateDict(largest)
        let saved = d.stateDict().first { $0.name == "layer1.0.bn1.num_batches_tracked" }!.tensor
        #expect(try saved.integers() == [.max])
        let lenient = try c.loadStateDict(extra, strict: false)
        #expect(lenient.unexpectedKeys == ["layer5.0.conv1.weight"])
        #expect(throws: BLASNetError.self) { try c.loadStateDict(wrong, strict: false) }
    }
}
