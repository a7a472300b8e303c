import Foundation

/// The first layers of a ResNet.
public enum Stem: String, CaseIterable, Sendable {
    /// torchvision's: 7×7/2 conv, norm, ReLU, 3×3/2 max-pool.
    case imagenet
    /// For small images: 3×3/1 conv, norm, ReLU, no pooling.
    case cifar
    /// For small images on a budget: 3×3/2 conv, norm, ReLU, so the first stage runs at
    /// half resolution (a quarter of the cifar stem's work for 28×28 Fashion-MNIST).
    case strided
}

/// A ResNet or SE-ResNet architecture, as data: a block kind and the blocks per stage.
///
/// Two families share one implementation:
/// - torchvision's ImageNet ResNets (`resnet18` … `resnet152`, four stages, width 64) and
///   timm's SE-ResNets (`seresnet18` … `seresnet152`);
/// - the CIFAR ResNets of He et al. (2016), `resnet<6n+2>` such as `resnet20`, `resnet32`,
///   `resnet56` (three stages of n basic blocks, width 16), and their SE variants
///   `seresnet20` …. Their shortcuts are 1×1 projections when the shape changes (the
///   paper's option B), so every shortcut has torchvision's `downsample` names. The paper's
///   CIFAR networks used option A (parameter-free zero padding): `resnet20` (10 classes)
///   has 272,474 parameters here, 1% more, and option-A checkpoints have no `downsample`
///   keys to load.
public struct Architecture: RawRepresentable, Hashable, CaseIterable, Sendable, CustomStringConvertible {
    /// Basic blocks (two 3×3 convolutions) or bottlenecks (1×1, 3×3, 1×1 ×4).
    public enum BlockType: Sendable { case basic, bottleneck }

    /// The name, as in torchvision and timm (`resnet50`, `seresnet20`).
    public let rawValue: String
    public let blockType: BlockType
    /// Blocks per stage (`layer1`, `layer2`, …).
    public let depths: [Int]
    /// Whether every block carries squeeze-and-excitation (timm's `seresnet*`).
    public let squeezeExcitation: Bool
    /// Channels of the stem and the first stage in the published model (64 or 16).
    public let defaultWidth: Int

    /// Parses `resnet18` … `resnet152`, `seresnet18` … `seresnet152`, and `resnet<6n+2>` /
    /// `seresnet<6n+2>` up to ``maximumCIFARDepth`` for the CIFAR family; nil for any other name.
    public init?(rawValue: String) {
        let se = rawValue.hasPrefix("seresnet")
        guard let depth = Int(rawValue.dropFirst(se ? 8 : 6)), rawValue.hasPrefix(se ? "seresnet" : "resnet") else { return nil }
        let imagenet: [Int: (BlockType, [Int])] = [
            18: (.basic, [2, 2, 2, 2]), 34: (.basic, [3, 4, 6, 3]), 50: (.bottleneck, [3, 4, 6, 3]),
            101: (.bottleneck, [3, 4, 23, 3]), 152: (.bottleneck, [3, 8, 36, 3]),
        ]
        if let (block, depths) = imagenet[depth] {
            (blockType, self.depths, defaultWidth) = (block, depths, 64)
        } else if depth >= 8, (depth - 2) % 6 == 0, depth <= Self.maximumCIFARDepth {
            let n = (depth - 2) / 6
            (blockType, depths, defaultWidth) = (.basic, [n, n, n], 16)
        } else {
            return nil
        }
        self.rawValue = rawValue
        squeezeExcitation = se
    }

    /// The deepest CIFAR-family network that parses, 1,000 blocks per stage (He et al.
    /// trained 1202 layers); deeper names are typos, and building them would not end.
    public static let maximumCIFARDepth = 6002

    public static let resnet18 = Architecture(rawValue: "resnet18")!
    public static let resnet34 = Architecture(rawValue: "resnet34")!
    public static let resnet50 = Architecture(rawValue: "resnet50")!
    public static let resnet101 = Architecture(rawValue: "resnet101")!
    public static let resnet152 = Architecture(rawValue: "resnet152")!
    public static let seresnet18 = Architecture(rawValue: "seresnet18")!
    public static let seresnet34 = Architecture(rawValue: "seresnet34")!
    public static let seresnet50 = Architecture(rawValue: "seresnet50")!
    public static let seresnet101 = Architecture(rawValue: "seresnet101")!
    public static let seresnet152 = Architecture(rawValue: "seresnet152")!
    public static let resnet8 = Architecture(rawValue: "resnet8")!
    public static let seresnet8 = Architecture(rawValue: "seresnet8")!
    public static let resnet20 = Architecture(rawValue: "resnet20")!
    public static let seresnet20 = Architecture(rawValue: "seresnet20")!

    /// The published depths of both families (any other `6n+2` also parses).
    public static let allCases: [Architecture] = ["", "se"].flatMap { prefix in
        [18, 34, 50, 101, 152, 8, 14, 20, 32, 44, 56, 110].map { Architecture(rawValue: "\(prefix)resnet\($0)")! }
    }

    public var description: String { rawValue }

    /// The published model's stem: `imagenet` for torchvision's and timm's, `cifar` (3×3/1,
    /// no pooling) for the CIFAR family, whose stages run at 32, 16 and 8 on CIFAR.
    public var defaultStem: Stem { defaultWidth == 16 ? .cifar : .imagenet }

    /// Whether each block's last norm starts with γ = 0, so that every block starts as its
    /// shortcut: timm's SE-ResNets do (`zero_init_last`), torchvision's ResNets
    /// (`zero_init_residual=False`) and the CIFAR family, which neither library has, do not.
    public var zeroInitializesLastNorm: Bool { squeezeExcitation && defaultWidth == 64 }

    /// Channels of the last stage, which the head pools: 512 for resnet18, 2048 for resnet50.
    public func featureChannels(width: Int? = nil) -> Int {
        ((width ?? defaultWidth) << (depths.count - 1)) * block.expansion
    }

    /// The weights of the convolutions and of `fc` (everything but the norms' and SE blocks'
    /// small vectors and matrices), in Float64 so that no size overflows: a lower bound on
    /// the parameter count, known before anything is allocated.
    public func convolutionAndHeadWeights(width: Int? = nil, inChannels: Int = 3, stem: Stem? = nil, numClasses: Int = 1000,
                                          headGrid: Int = 1) -> Double {
        let width = Double(width ?? defaultWidth), e = Double(block.expansion)
        var total = width * Double(inChannels) * ((stem ?? defaultStem) == .imagenet ? 49 : 9)
        var channels = width
        for (index, depth) in depths.enumerated() {
            let planes = width * Double(1 << index)
            for i in 0..<depth {
                let out = planes * e
                total += blockType == .basic ? 9 * channels * planes + 9 * planes * planes
                                             : channels * planes + 9 * planes * planes + planes * out
                if (i == 0 && index > 0) || channels != out { total += channels * out }
                channels = out
            }
        }
        return total + channels * Double(headGrid) * Double(headGrid) * Double(numClasses)
    }

    /// Block kind of every stage.
    public var block: any ResidualBlockKind.Type {
        switch blockType {
        case .basic: BasicBlock.self
        case .bottleneck: Bottleneck.self
        }
    }
}

/// A ResNet or SE-ResNet with torchvision/timm state_dict names.
///
/// `x: [N, C, H, W] -> logits: [N, K]` (PyTorch's layouts at this boundary).
public final class ResNet: Module {
    public let architecture: Architecture
    public let stem: Stem
    public let inChannels: Int
    public private(set) var numClasses: Int
    /// Channels of the stem and the first stage.
    public let width: Int
    /// What every norm slot holds.
    public let normalization: Normalization
    public let conv1: Conv2d
    /// The stem's norm (a ``BatchNorm2d`` or a ``GroupNorm``, as ``normalization`` says).
    public let bn1: any Module
    public let stages: [Sequential]
    /// The classifier; ``replaceHead(numClasses:grid:seed:)`` swaps it for a new one.
    public private(set) var fc: Linear
    /// The head's pooling grid: `fc` reads the mean of each channel over a `headGrid ×
    /// headGrid` grid of the last feature map (1: the usual global average).
    public var headGrid: Int { pool.grid }
    private let maxpool: MaxPool2d?
    private var pool: AdaptiveAvgPool2d
    /// The layers in the order the data flows through them, with torchvision's names
    /// (`maxpool` and `avgpool` hold no state; the ReLU after `bn1` is fused into it).
    /// Kept, not rebuilt on every pass, so that a training step allocates nothing here.
    public private(set) var children: [(name: String, module: any Module)] = []

    /// Builds the model with the initialization of the library it comes from, seeded for
    /// reproducibility: Kaiming-normal convolutions (fan-out), norm γ = 1 and β = 0,
    /// PyTorch's default for `fc`; timm's SE-ResNets then zero each block's last γ
    /// (``Architecture/zeroInitializesLastNorm``).
    ///
    /// - Parameters:
    ///   - stem: nil picks the architecture's (``Architecture/defaultStem``).
    ///   - width: channels of the stem and of `layer1` (64 in the published models, 16 in
    ///     the CIFAR family; nil picks that); every stage doubles it. Smaller widths make
    ///     small-image models cheap.
    ///   - norm: the normalization of every norm slot. Every slot's channels are a multiple
    ///     of `width`, so a group count that does not divide `width` fails at the stem's
    ///     `bn1`, which the error names.
    ///   - headGrid: the head's pooling grid. 1 is torchvision's head; with `g > 1`, `fc`
    ///     has `C·g²` inputs, as in torchvision after `model.avgpool = AdaptiveAvgPool2d(g)`
    ///     and `model.fc = Linear(C·g², K)` (same state_dict names).
    public init(_ architecture: Architecture, numClasses: Int = 1000, inChannels: Int = 3, stem: Stem? = nil,
                width: Int? = nil, norm: Normalization = .batch, headGrid: Int = 1, seed: UInt64 = 0) throws {
        let width = width ?? architecture.defaultWidth, stem = stem ?? architecture.defaultStem
        guard numClasses > 0, inChannels > 0, width > 0 else {
            throw BLASNetError.invalidArgument(
                "ResNet: numClasses, inChannels and width must be positive, got \(numClasses), \(inChannels) and \(width)")
        }
        let bytes = 4 * architecture.convolutionAndHeadWeights(width: width, inChannels: inChannels, stem: stem,
                                                                   numClasses: numClasses, headGrid: headGrid)
        try ResidentMemory.checkFits(
            bytes: bytes, "ResNet: weights of \(architecture.rawValue) at width \(width) with \(numClasses) classes over a \(headGrid)×\(headGrid) head grid")
        var rng = SeededGenerator(seed: seed)
        let workspace = Workspace()
        self.architecture = architecture
        self.stem = stem
        self.inChannels = inChannels
        self.numClasses = numClasses
        self.width = width
        normalization = norm
        pool = try AdaptiveAvgPool2d(headGrid)
        switch stem {
        case .imagenet:
            conv1 = try Conv2d(inChannels, width, kernelSize: 7, stride: 2, padding: 3, bias: false, workspace: workspace, rng: &rng)
            maxpool = try MaxPool2d(kernelSize: 3, stride: 2, padding: 1)
        case .cifar, .strided:
            conv1 = try Conv2d(inChannels, width, kernelSize: 3, stride: stem == .strided ? 2 : 1, padding: 1, bias: false,
                               workspace: workspace, rng: &rng)
            maxpool = nil
        }
        // Nothing consumes the gradient with respect to the image.
        conv1.propagatesInputGradient = false
        bn1 = try norm.layer(width, fusesReLU: true, slot: "bn1")
        var channels = width
        var stages: [Sequential] = []
        for (index, depth) in architecture.depths.enumerated() {
            let planes = width << index
            var blocks: [any Module] = []
            for i in 0..<depth {
                blocks.append(try architecture.block.block(
                    inChannels: channels, planes: planes, stride: i == 0 && index > 0 ? 2 : 1,
                    squeezeExcitation: architecture.squeezeExcitation, norm: norm, workspace: workspace, rng: &rng))
                channels = planes * architecture.block.expansion
            }
            stages.append(Sequential(blocks))
        }
        self.stages = stages
        fc = try Self.head(architecture.featureChannels(width: width), grid: headGrid, numClasses: numClasses, rng: &rng)
        listChildren()
        for (_, p) in namedParameters() where p.value.shape.count == 4 {
            let fanOut = p.value.shape[0] * p.value.shape[2] * p.value.shape[3]
            p.value = .normal(shape: p.value.shape, std: (2 / Float(fanOut)).squareRoot(), using: &rng)
        }
        if architecture.zeroInitializesLastNorm {
            for case let block as ResidualBlock in stages.flatMap(\.layers) {
                for (name, gamma) in block.branch.last?.module.localParameters ?? [] where name == "weight" {
                    gamma.value = Tensor(shape: gamma.value.shape)
                }
            }
        }
    }

    /// A classifier reading each of `channels` over a `grid × grid` grid.
    private static func head(_ channels: Int, grid: Int, numClasses: Int, rng: inout SeededGenerator) throws -> Linear {
        guard let features = Tensor.elementCount([channels, grid, grid]) else {
            throw BLASNetError.invalidArgument("ResNet: \(channels) channels pooled over a \(grid)×\(grid) grid overflow the feature count")
        }
        return try Linear(features, numClasses, rng: &rng)
    }

    private func listChildren() {
        children = [("conv1", conv1), ("bn1", bn1)] + (maxpool.map { [("maxpool", $0)] } ?? [])
            + stages.enumerated().map { ("layer\($0.offset + 1)", $0.element) } + [("avgpool", pool), ("fc", fc)]
    }

    /// Logits `[N, numClasses]` of images `x: [N, inChannels, H, W]` (PyTorch's layout, unlike
    /// the channel-major layers inside), in the current mode (``Module/train()`` or ``Module/eval()``).
    public func forward(_ x: Tensor) throws -> Tensor {
        try checkInput(x)
        return try children.reduce(x.swappingFirstAxes()) { try $1.module.observedForward($0) }.swappingFirstAxes()
    }

    /// Throws unless `x` is a non-empty batch `[N, C, H, W]` of this model's channels.
    private func checkInput(_ x: Tensor) throws {
        guard x.shape.count == 4, x.shape[1] == inChannels, x.shape.allSatisfy({ $0 > 0 }) else {
            throw BLASNetError.shapeMismatch(layer: architecture.rawValue, expected: "[N, \(inChannels), H, W] with N, H and W at least 1",
                                             got: x.shape)
        }
    }

    /// Back-propagates `dlogits: [N, K]`, accumulating every parameter gradient. Returns
    /// an empty tensor: the stem does not compute the gradient with respect to the image.
    public func backward(_ dy: Tensor) throws -> Tensor {
        guard dy.shape.count == 2, dy.shape[1] == numClasses else {
            throw BLASNetError.shapeMismatch(layer: "\(architecture.rawValue) backward", expected: "[N, \(numClasses)]", got: dy.shape)
        }
        // Layers before the first trainable one need no gradient: the pass ends there.
        guard let first = children.firstIndex(where: { $0.module.isTrainable }) else { return Tensor(shape: [0]) }
        // Inside that layer (a stage frozen only in part), the same holds for its blocks.
        for (index, child) in children.enumerated() { (child.module as? Sequential)?.computesInputGradient = index > first }
        _ = try children[first...].reversed().reduce(dy.swappingFirstAxes()) { try $1.module.observedBackward($0) }
        return Tensor(shape: [0])
    }

    /// The pooled features the classifier reads, `x: [N, C, H, W] -> [N, C·headGrid²]`, in the current mode.
    public func features(_ x: Tensor) throws -> Tensor {
        try checkInput(x)
        return try children.dropLast().reduce(x.swappingFirstAxes()) { try $1.module.forward($0) }.swappingFirstAxes()
    }

    /// A new, trainable classifier for `numClasses` classes with PyTorch's default
    /// initialization (seeded), as fine-tuning on a new label set starts; `grid` sets the
    /// head's pooling grid (nil keeps it).
    ///
    /// A grid of 2 keeps where in the image each feature fired (top, bottom, left, right),
    /// which a frozen network's global average throws away; on a new domain that is often
    /// worth more to a linear head than the extra parameters cost.
    public func replaceHead(numClasses: Int, grid: Int? = nil, seed: UInt64 = 0) throws {
        var rng = SeededGenerator(seed: seed)
        let newPool = try grid.map { try AdaptiveAvgPool2d($0) } ?? pool
        let channels = fc.inFeatures / (pool.grid * pool.grid)
        fc = try Self.head(channels, grid: newPool.grid, numClasses: numClasses, rng: &rng)
        pool = newPool
        self.numClasses = numClasses
        listChildren()
    }
}

extension ResNet: SpatialModule {
    /// The layers from the image to the logits.
    public var spatialStructure: SpatialStructure { .chain(children) }
}
