import Foundation

/// The first layers of a ResNet.
public enum Stem: String, CaseIterable, Sendable {
    /// torchvision's: 7×7/2 conv, BN, ReLU, 3×3/2 max-pool.
    case imagenet
    /// For small images: 3×3/1 conv, BN, ReLU, no pooling.
    case cifar
}

/// The ten ResNet and SE-ResNet architectures, as data.
public enum Architecture: String, CaseIterable, Sendable {
    case resnet18, resnet34, resnet50, resnet101, resnet152
    case seresnet18, seresnet34, seresnet50, seresnet101, seresnet152

    /// Block kind of every stage.
    public var block: any ResidualBlockKind.Type {
        switch self {
        case .resnet18, .resnet34, .seresnet18, .seresnet34: BasicBlock.self
        default: Bottleneck.self
        }
    }

    /// Blocks per stage (`layer1` … `layer4`).
    public var depths: [Int] {
        switch self {
        case .resnet18, .seresnet18: [2, 2, 2, 2]
        case .resnet34, .seresnet34, .resnet50, .seresnet50: [3, 4, 6, 3]
        case .resnet101, .seresnet101: [3, 4, 23, 3]
        case .resnet152, .seresnet152: [3, 8, 36, 3]
        }
    }

    /// Whether every block carries squeeze-and-excitation (timm's `seresnet*`).
    public var squeezeExcitation: Bool { rawValue.hasPrefix("se") }
}

/// A ResNet or SE-ResNet with torchvision/timm state_dict names.
///
/// `x: [N, C, H, W] -> logits: [N, K]` (PyTorch's layouts at this boundary).
public final class ResNet: Module {
    public let architecture: Architecture
    public let stem: Stem
    public let inChannels: Int
    public let numClasses: Int
    public let conv1: Conv2d
    public let bn1: BatchNorm2d
    public let stages: [Sequential]
    public let fc: Linear
    private let maxpool: MaxPool2d?
    private let pool = GlobalAvgPool2d()

    /// Builds the model with torchvision's initialization (Kaiming-normal convolutions,
    /// BN γ = 1 and β = 0, PyTorch's default for `fc`), seeded for reproducibility.
    ///
    /// - Parameter width: channels of the stem and of `layer1` (64 in the published
    ///   models); every stage doubles it. Smaller widths make small-image models cheap.
    public init(_ architecture: Architecture, numClasses: Int = 1000, inChannels: Int = 3, stem: Stem = .imagenet,
                width: Int = 64, seed: UInt64 = 0) throws {
        guard numClasses > 0, inChannels > 0, width > 0 else {
            throw BLASNetError.invalidArgument(
                "ResNet: numClasses, inChannels and width must be positive, got \(numClasses), \(inChannels) and \(width)")
        }
        var rng = SeededGenerator(seed: seed)
        let workspace = Workspace()
        self.architecture = architecture
        self.stem = stem
        self.inChannels = inChannels
        self.numClasses = numClasses
        switch stem {
        case .imagenet:
            conv1 = try Conv2d(inChannels, width, kernelSize: 7, stride: 2, padding: 3, workspace: workspace, rng: &rng)
            maxpool = try MaxPool2d(kernelSize: 3, stride: 2, padding: 1)
        case .cifar:
            conv1 = try Conv2d(inChannels, width, kernelSize: 3, stride: 1, padding: 1, workspace: workspace, rng: &rng)
            maxpool = nil
        }
        // Nothing consumes the gradient with respect to the image.
        conv1.propagatesInputGradient = false
        bn1 = try BatchNorm2d(width, fusesReLU: true)
        var channels = width
        var stages: [Sequential] = []
        for (index, depth) in architecture.depths.enumerated() {
            let planes = width << index
            var blocks: [any Module] = []
            for i in 0..<depth {
                blocks.append(try architecture.block.block(
                    inChannels: channels, planes: planes, stride: i == 0 && index > 0 ? 2 : 1,
                    squeezeExcitation: architecture.squeezeExcitation, workspace: workspace, rng: &rng))
                channels = planes * architecture.block.expansion
            }
            stages.append(Sequential(blocks))
        }
        self.stages = stages
        fc = try Linear(channels, numClasses, rng: &rng)
        for (_, p) in namedParameters() where p.value.shape.count == 4 {
            let fanOut = p.value.shape[0] * p.value.shape[2] * p.value.shape[3]
            p.value = .normal(shape: p.value.shape, std: (2 / Float(fanOut)).squareRoot(), using: &rng)
        }
    }

    public var children: [(name: String, module: any Module)] {
        [("conv1", conv1), ("bn1", bn1)]
            + stages.enumerated().map { ("layer\($0.offset + 1)", $0.element) }
            + [("fc", fc)]
    }

    /// The layers in the order the data flows through them.
    private var pipeline: [any Module] {
        [conv1, bn1] + (maxpool.map { [$0] } ?? []) + stages + [pool, fc]
    }

    public func forward(_ x: Tensor) throws -> Tensor {
        guard x.shape.count == 4, x.shape[1] == inChannels, x.shape[0] > 0 else {
            throw BLASNetError.shapeMismatch(layer: architecture.rawValue, expected: "[N, \(inChannels), H, W]", got: x.shape)
        }
        return try pipeline.reduce(x.swappingFirstAxes()) { try $1.profiledForward($0) }.swappingFirstAxes()
    }

    /// Back-propagates `dlogits: [N, K]`, accumulating every parameter gradient. Returns
    /// an empty tensor: the stem does not compute the gradient with respect to the image.
    public func backward(_ dy: Tensor) throws -> Tensor {
        guard dy.shape.count == 2, dy.shape[1] == numClasses else {
            throw BLASNetError.shapeMismatch(layer: "\(architecture.rawValue) backward", expected: "[N, \(numClasses)]", got: dy.shape)
        }
        return try pipeline.reversed().reduce(dy.swappingFirstAxes()) { try $1.profiledBackward($0) }
    }
}
