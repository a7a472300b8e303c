/// A residual block: `y = relu(se(branch(x)) + shortcut(x))`, the shortcut being the
/// identity or a projection (`downsample`: 1×1 conv + norm) when the shape changes.
///
/// `x: [C, N, H, W] -> y: [C', N, H/s, W/s]`. The branch is data: a list of named layers
/// (``BasicBlock`` and ``Bottleneck`` describe the two of torchvision).
public final class ResidualBlock: Module {
    public let branch: [(name: String, module: any Module)]
    /// Squeeze-and-excitation after the branch's last norm, before the addition.
    public let se: SEBlock?
    public let downsample: Sequential?
    /// The block's output, whose positive entries are where the final ReLU passes gradient.
    private var output: Tensor?

    /// A block computing `relu(se(branch(x)) + shortcut(x))`; nil `se` leaves it out, nil
    /// `downsample` makes the shortcut the identity (the branch must then keep the shape).
    public init(branch: [(name: String, module: any Module)], se: SEBlock?, downsample: Sequential?) {
        self.branch = branch
        self.se = se
        self.downsample = downsample
    }

    public var children: [(name: String, module: any Module)] { branchPath + shortcutPath }

    /// The branch's layers and its SE block, in the order they run.
    private var branchPath: [(name: String, module: any Module)] { branch + (se.map { [("se", $0)] } ?? []) }
    /// The projection, or nothing for the identity.
    private var shortcutPath: [(name: String, module: any Module)] { downsample.map { [("downsample", $0)] } ?? [] }

    public func forward(_ x: Tensor) throws -> Tensor {
        var out = try branch.reduce(x) { try $1.module.observedForward($0) }
        if let se { out = try se.observedForward(out) }
        let shortcut = try downsample?.observedForward(x) ?? x
        guard shortcut.shape == out.shape else {
            throw BLASNetError.shapeMismatch(layer: "ResidualBlock addition", expected: "\(out.shape)", got: shortcut.shape)
        }
        // The addition and the ReLU after it, in place in one pass.
        let count = out.count
        shortcut.withUnsafePointer { s in out.withUnsafeMutablePointer { Kernels.addReLU(s, into: $0, count: count) } }
        output = out.keptForBackward
        return out
    }

    public func backward(_ dy: Tensor) throws -> Tensor {
        guard let y = output else { throw BLASNetError.backwardWithoutForward("ResidualBlock") }
        guard dy.shape == y.shape else {
            throw BLASNetError.shapeMismatch(layer: "ResidualBlock backward", expected: "\(y.shape)", got: dy.shape)
        }
        output = nil
        var d = Tensor(uninitializedShape: y.shape)
        dy.withUnsafePointer { g in y.withUnsafePointer { yp in d.withUnsafeMutablePointer { Kernels.reluBackward(g, output: yp, $0, count: y.count) } } }
        var dBranch = try se?.observedBackward(d) ?? d
        dBranch = try branch.reversed().reduce(dBranch) { try $1.module.observedBackward($0) }
        let dShortcut = try downsample?.observedBackward(d) ?? d
        // A branch layer told not to propagate (or a custom one) can hand back another shape.
        guard dBranch.shape == dShortcut.shape else {
            throw BLASNetError.shapeMismatch(layer: "ResidualBlock backward: the branch's input gradient", expected: "\(dShortcut.shape)",
                                             got: dBranch.shape)
        }
        dBranch += dShortcut
        return dBranch
    }
}

/// A kind of residual block: how wide its output is and what its branch holds.
public protocol ResidualBlockKind {
    /// Output channels per unit of `planes` (1 for basic blocks, 4 for bottlenecks).
    static var expansion: Int { get }
    /// The branch layers, with torchvision's names (`bn1`, … whatever the norm), for one block.
    static func branch(inChannels: Int, planes: Int, stride: Int, norm: Normalization, workspace: Workspace,
                       rng: inout SeededGenerator) throws -> [(name: String, module: any Module)]
}

/// torchvision's BasicBlock: 3×3 conv (stride) → norm → ReLU → 3×3 conv → norm (each ReLU fused into its norm).
public enum BasicBlock: ResidualBlockKind {
    public static let expansion = 1

    public static func branch(inChannels: Int, planes: Int, stride: Int, norm: Normalization, workspace: Workspace,
                              rng: inout SeededGenerator) throws -> [(name: String, module: any Module)] {
        [("conv1", try Conv2d(inChannels, planes, kernelSize: 3, stride: stride, padding: 1, bias: false, workspace: workspace, rng: &rng)),
         ("bn1", try norm.layer(planes, fusesReLU: true, slot: "bn1")),
         ("conv2", try Conv2d(planes, planes, kernelSize: 3, padding: 1, bias: false, workspace: workspace, rng: &rng)),
         ("bn2", try norm.layer(planes, slot: "bn2"))]
    }
}

/// torchvision's Bottleneck (v1.5, stride on the 3×3): 1×1 → norm → ReLU → 3×3 (stride) → norm → ReLU → 1×1 (×4) → norm
/// (each ReLU fused into its norm).
public enum Bottleneck: ResidualBlockKind {
    public static let expansion = 4

    public static func branch(inChannels: Int, planes: Int, stride: Int, norm: Normalization, workspace: Workspace,
                              rng: inout SeededGenerator) throws -> [(name: String, module: any Module)] {
        [("conv1", try Conv2d(inChannels, planes, kernelSize: 1, bias: false, workspace: workspace, rng: &rng)),
         ("bn1", try norm.layer(planes, fusesReLU: true, slot: "bn1")),
         ("conv2", try Conv2d(planes, planes, kernelSize: 3, stride: stride, padding: 1, bias: false, workspace: workspace, rng: &rng)),
         ("bn2", try norm.layer(planes, fusesReLU: true, slot: "bn2")),
         ("conv3", try Conv2d(planes, planes * expansion, kernelSize: 1, bias: false, workspace: workspace, rng: &rng)),
         ("bn3", try norm.layer(planes * expansion, slot: "bn3"))]
    }
}

extension ResidualBlockKind {
    /// One block with its shortcut: a projection when stride or width changes.
    static func block(inChannels: Int, planes: Int, stride: Int, squeezeExcitation: Bool, norm: Normalization = .batch,
                      workspace: Workspace, rng: inout SeededGenerator) throws -> ResidualBlock {
        let out = planes * expansion
        let downsample = stride != 1 || inChannels != out
            ? Sequential([try Conv2d(inChannels, out, kernelSize: 1, stride: stride, bias: false, workspace: workspace, rng: &rng),
                          try norm.layer(out, slot: "downsample.1")])
            : nil
        return ResidualBlock(
            branch: try branch(inChannels: inChannels, planes: planes, stride: stride, norm: norm, workspace: workspace, rng: &rng),
            se: squeezeExcitation ? try SEBlock(out, workspace: workspace, rng: &rng) : nil,
            downsample: downsample)
    }
}

extension ResidualBlock: SpatialModule {
    /// The branch (with its SE block) and the shortcut, added; the ReLU after the addition is pointwise.
    public var spatialStructure: SpatialStructure { .sum([branchPath, shortcutPath]) }
}
