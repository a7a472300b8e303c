import Foundation
import Testing
@testable import BLASNet

/// Receptive-field tables against the input gradients of real forward and backward passes,
/// against published numbers, and through `blasnet receptive-field`.
struct ReceptiveFieldTests {
    /// Extent of the input pixels whose gradient is nonzero, per axis.
    struct Extent: Equatable, CustomStringConvertible {
        var rows: ClosedRange<Int>
        var columns: ClosedRange<Int>
        var description: String { "rows \(rows), columns \(columns)" }
    }

    /// The modules that compute the output of the layer at state_dict path `target`, in
    /// order, following `module`'s spatial structure (a block's own name is its output);
    /// nil when `module` holds no such layer.
    static func modules(computing target: String, in module: any Module, path: String = "") -> [any Module]? {
        if path == target { return [module] }
        let paths: [[(name: String, module: any Module)]]
        switch (module as? any SpatialModule)?.spatialStructure {
        case .chain(let layers)?: paths = [layers]
        case .sum(let sum)?: paths = sum
        default: return nil
        }
        for layers in paths {
            var before: [any Module] = []
            for layer in layers {
                let name = path.isEmpty ? layer.name : path + "." + layer.name
                if let rest = modules(computing: target, in: layer.module, path: name) { return before + rest }
                before.append(layer.module)
            }
        }
        return nil
    }

    /// Every convolution weight `1/fan_in` (activations keep their scale, and no gradient
    /// cancels); every SE gate saturated at exactly 1, so its derivative is exactly 0 and
    /// only the spatial path carries gradient, which is what the table describes.
    static func makePositive(_ model: any Module) {
        for (name, p) in model.namedParameters() {
            if name.contains(".se.") {
                p.value = Tensor(shape: p.value.shape, repeating: name.hasSuffix("se.fc2.bias") ? 100 : 0)
            } else if p.value.shape.count == 4 {
                p.value = Tensor(shape: p.value.shape, repeating: 1 / Float(p.value.shape.dropFirst().reduce(1, *)))
            }
        }
    }

    /// Inputs of `channels` planes of `inputSize` for ``measuredExtent(_:ramps:position:)``:
    /// positive ramps, rising and falling along both axes.
    static func ramps(channels: Int, inputSize: (h: Int, w: Int)) throws -> [Tensor] {
        try [true, false].map { rising in
            let plane = (0..<inputSize.h).flatMap { i in
                (0..<inputSize.w).map { j in Float(rising ? 1 + i + j : inputSize.h + inputSize.w - 1 - i - j) }
            }
            return try Tensor(shape: [channels, 1, inputSize.h, inputSize.w], scalars: Array(repeatElement(plane, count: channels).joined()))
        }
    }

    /// The input pixels that reach `position` of the output of `layers`, measured as the
    /// extent of nonzero input gradient of a one-hot output gradient.
    ///
    /// Positive weights and inputs keep every ReLU open. A max-pool passes gradient only to
    /// the largest value of each window, so the inputs are ramps: rising, each window's
    /// bottom-right element wins and the extent reaches its bottom-right edge; falling, its
    /// top-left. The union over both is the whole field.
    static func measuredExtent(_ layers: [any Module], ramps: [Tensor], position: (h: Int, w: Int)) throws -> Extent? {
        let chain = Sequential(layers)
        var extent: Extent?
        for x in ramps {
            let y = try chain.forward(x)
            var dy = Tensor(shape: y.shape)
            // Large, so that gradients reaching the far corners through every layer's small
            // weights stay far from float32's denormals.
            dy[position.h * y.shape[3] + position.w] = 1e10
            let dx = try chain.backward(dy)
            #expect(dx.shape == x.shape)
            let (height, width) = (x.shape[2], x.shape[3])
            for (k, g) in dx.scalars.enumerated() where g != 0 {
                let (i, j) = (k / width % height, k % width)
                extent = Extent(rows: min(extent?.rows.lowerBound ?? i, i)...max(extent?.rows.upperBound ?? i, i),
                                columns: min(extent?.columns.lowerBound ?? j, j)...max(extent?.columns.upperBound ?? j, j))
            }
        }
        return extent
    }

    /// Compares every row of `model`'s table that has a spatial output with the measured
    /// extent at the middle position, which must see no padding. A BatchNorm row, which
    /// must repeat the row before it, is checked against that instead (it halves the runs).
    static func expectTableMatchesGradients(_ model: any SpatialModule, channels: Int, inputSize: (h: Int, w: Int)) throws {
        let table = try model.receptiveFields(inputSize: inputSize)
        #expect(!table.isEmpty)
        let ramps = try ramps(channels: channels, inputSize: inputSize)
        for (index, (name, field)) in table.enumerated() where name != "avgpool" && name != "fc" {
            let layers = try #require(modules(computing: name, in: model), "\(name) not found")
            if layers.last is BatchNorm {
                #expect(field == table[index - 1].field, "\(name)")
                continue
            }
            let position = (h: field.height.outputSize / 2, w: field.width.outputSize / 2)
            let rows = field.height.span(at: position.h), columns = field.width.span(at: position.w)
            try #require(rows.lowerBound >= 0 && rows.upperBound <= Double(inputSize.h - 1)
                         && columns.lowerBound >= 0 && columns.upperBound <= Double(inputSize.w - 1),
                         "\(name): the field \(rows) × \(columns) reaches into the padding; use a larger input")
            let measured = try measuredExtent(layers, ramps: ramps, position: position)
            let expected = Extent(rows: Int(rows.lowerBound)...Int(rows.upperBound),
                                  columns: Int(columns.lowerBound)...Int(columns.upperBound))
            #expect(measured == expected, "\(name) at \(position)")
        }
    }

    @Test(arguments: [
        (Architecture.resnet18, Stem.imagenet, 480, 448), (.resnet18, .cifar, 128, 120),
        (.seresnet8, .imagenet, 256, 240), (.seresnet8, .cifar, 64, 60),
    ])
    func resNetTableMatchesInputGradients(arch: Architecture, stem: Stem, height: Int, width: Int) throws {
        let model = try ResNet(arch, numClasses: 10, stem: stem, width: 4)
        model.conv1.propagatesInputGradient = true
        model.eval()
        Self.makePositive(model)
        try Self.expectTableMatchesGradients(model, channels: 3, inputSize: (height, width))
    }

    /// A model that is not a ResNet, with an even kernel (half-pixel start), a max-pool and a
    /// dilated convolution: size 2, 3 then 3 + (5 − 1)·2 = 11; start 0.5, 1, then 1 + (2 − 1)·2 = 3.
    @Test func anyModelOfSpatialLayers() throws {
        var rng = SeededGenerator(seed: 1)
        let model = Sequential([
            try Conv2d(2, 3, kernelSize: 2, rng: &rng), try BatchNorm2d(3, fusesReLU: true), try MaxPool2d(kernelSize: 2),
            try Conv2d(3, 2, kernelSize: 3, padding: 1, dilation: 2, rng: &rng), try AdaptiveAvgPool2d(),
        ])
        model.eval()
        let table = try model.receptiveFields(inputSize: (20, 17))
        #expect(table.map(\.name) == ["0", "1", "2", "3", "4"])
        #expect(table[0].field.height == ReceptiveField.Axis(outputSize: 19, jump: 1, size: 2, start: 0.5))
        #expect(table[2].field.width == ReceptiveField.Axis(outputSize: 8, jump: 2, size: 3, start: 1))
        #expect(table[3].field.height == ReceptiveField.Axis(outputSize: 7, jump: 2, size: 11, start: 3))
        // The global pool's field holds every position's: 11 + (7 − 1)·2 pixels, centred on the middle one.
        #expect(table[4].field.height == ReceptiveField.Axis(outputSize: 1, jump: 14, size: 23, start: 9))
        Self.makePositive(model)
        try Self.expectTableMatchesGradients(Sequential(Array(model.layers.prefix(4))), channels: 2, inputSize: (20, 17))
    }

    /// Adaptive pooling to a grid that divides the map is a window of a grid-th of it;
    /// any other grid has bins of two sizes, which one field cannot describe.
    @Test func adaptivePoolingGrid() throws {
        var rng = SeededGenerator(seed: 1)
        let model = Sequential([try Conv2d(1, 1, kernelSize: 1, rng: &rng), try AdaptiveAvgPool2d(2)])
        let field = try #require(try model.receptiveFields(inputSize: (8, 6)).last?.field)
        #expect(field.height == ReceptiveField.Axis(outputSize: 2, jump: 4, size: 4, start: 1.5))
        #expect(field.width == ReceptiveField.Axis(outputSize: 2, jump: 3, size: 3, start: 1))
        #expect(throws: BLASNetError.self) { try model.receptiveFields(inputSize: (7, 6)) }
    }

    @Test func publishedResNetFields() throws {
        // Per-stage fields of torchvision's resnet18 and resnet50 (stride on the 3×3, "v1.5"),
        // as tabulated in https://gist.github.com/samson-wang/a6073c18f2adf16e0ab5fb95b53db3e6
        // (conv1 7, maxpool 11, layer1–4: 43/99/211/435 and 35/91/267/427).
        let expected: [(Architecture, [String: Int])] = [
            (.resnet18, ["conv1": 7, "maxpool": 11, "layer1.1": 43, "layer2.1": 99, "layer3.1": 211, "layer4.1": 435]),
            (.resnet50, ["conv1": 7, "maxpool": 11, "layer1.2": 35, "layer2.3": 91, "layer3.5": 267, "layer4.2": 427]),
        ]
        for (arch, sizes) in expected {
            let table = try ResNet(arch, width: 4).receptiveFields(inputSize: (224, 224))
            for (name, size) in sizes {
                let field = try #require(table.first { $0.name == name }?.field, "\(arch) \(name)")
                #expect(field.height.size == size && field.width.size == size, "\(arch) \(name): \(field)")
            }
        }
    }

    /// Every norm slot's layer is pointwise, so the table does not depend on the norm.
    @Test(arguments: [Normalization.group(2), .layer, .instance])
    func otherNormsGiveBatchNormsFields(norm: Normalization) throws {
        let batchNorm = try ResNet(.seresnet8, stem: .cifar, width: 4).receptiveFields(inputSize: (32, 32))
        let other = try ResNet(.seresnet8, stem: .cifar, width: 4, norm: norm).receptiveFields(inputSize: (32, 32))
        #expect(other.map(\.name) == batchNorm.map(\.name))
        #expect(other.map(\.field) == batchNorm.map(\.field))
    }

    @Test func seBlockIsPointwiseAndBlocksTakeTheLargerPath() throws {
        let table = try ResNet(.seresnet8, stem: .cifar, width: 4).receptiveFields(inputSize: (32, 32))
        let size = { (name: String) in table.first { $0.name == name }?.field.height.size }
        #expect(size("layer2.0.bn2") == 13 && size("layer2.0.se") == 13)
        #expect(size("layer2.0.downsample.1") == 7)
        #expect(size("layer2.0") == 13)
        #expect(table.last?.name == "fc")
    }

    @Test func unsupportedLayersAndSmallInputsThrow() throws {
        var rng = SeededGenerator(seed: 2)
        let flattening = Sequential([try Conv2d(1, 1, kernelSize: 3, rng: &rng), Flatten()])
        #expect(throws: BLASNetError.self) { try flattening.receptiveFields(inputSize: (8, 8)) }
        #expect(throws: BLASNetError.self) { try ResNet(.resnet18, width: 4).receptiveFields(inputSize: (0, 8)) }
        // PyTorch's floor rule leaves no output where the input is smaller than the window.
        #expect(throws: BLASNetError.self) { try Sequential([try MaxPool2d(kernelSize: 3)]).receptiveFields(inputSize: (2, 8)) }
        #expect(throws: BLASNetError.self) { try MaxPool2d(kernelSize: 3).forward(Tensor(shape: [1, 1, 2, 8])) }
        // A custom module's structure has not been through a layer's checks: a stride of 0
        // used to divide by zero, a grid of 0 to take a remainder by zero.
        #expect(throws: BLASNetError.self) {
            try Sequential([Custom(.window(Window(kernel: 3, stride: 0)))]).receptiveFields(inputSize: (8, 8))
        }
        #expect(throws: BLASNetError.self) { try Sequential([Custom(.adaptive(grid: 0))]).receptiveFields(inputSize: (8, 8)) }
    }

    /// A module of any structure, computing nothing.
    private final class Custom: SpatialModule {
        let spatialStructure: SpatialStructure
        init(_ structure: SpatialStructure) { spatialStructure = structure }
        func forward(_ x: Tensor) throws -> Tensor { x }
        func backward(_ dy: Tensor) throws -> Tensor { dy }
    }

    @Test func commandPrintsResNet50Fields() throws {
        let result = try RunCommandTests.run(["receptive-field", "--arch", "resnet50", "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let rows = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]])
        #expect(rows.allSatisfy { Set($0.keys) == ["name", "output_size", "jump", "size", "start"] })
        #expect(rows.prefix(4).compactMap { $0["name"] as? String } == ["conv1", "bn1", "maxpool", "layer1.0.conv1"])
        #expect(rows.last?["name"] as? String == "fc")
        let row = { (name: String) in rows.first { $0["name"] as? String == name } }
        let last = try #require(row("layer4.2"))
        #expect(last["output_size"] as? [Int] == [7, 7] && last["jump"] as? [Int] == [32, 32])
        #expect(last["size"] as? [Int] == [427, 427] && last["start"] as? [Double] == [0, 0])
        let shortcut = try #require(row("layer2.0.downsample.0"))
        #expect(shortcut["size"] as? [Int] == [35, 35] && shortcut["jump"] as? [Int] == [8, 8])

        let text = try RunCommandTests.run(["receptive-field", "--arch", "seresnet8", "--stem", "cifar", "--input", "32", "28"])
        #expect(text.status == 0, "\(text.stderr)")
        #expect(text.stdout.contains("layer3.0.se"))
        #expect(text.stdout.contains("32×28"))
        let bad = try RunCommandTests.run(["receptive-field", "--arch", "resnet18", "--input", "0", "5"])
        #expect(bad.status != 0 && bad.stderr.contains("--input"))
    }
}
