/// Group normalization with PyTorch's semantics (`nn.GroupNorm`), optionally fused with
/// the ReLU that follows it.
///
/// `x: [C, N, H, W] -> y: same` (or `[C, N]`, as `[C, N, 1, 1]`). For each sample, the
/// channels are split into `groups` groups of `C/G` consecutive channels, and each group
/// is normalized with its own mean and biased variance over `C/G × H × W` values; then
/// each channel gets its own `weight` (γ) and `bias` (β). The same in training and
/// inference: there are no running statistics.
///
/// `GroupNorm(groups: 1, …)` is PyTorch's layer norm of images over `C × H × W` (with a
/// per-channel affine), and `GroupNorm(groups: C, channels: C)` instance normalization.
public final class GroupNorm: Module {
    public let groups: Int
    public let channels: Int
    public let eps: Float
    /// γ and β of shape `[C]`; nil without an affine.
    public let weight: Parameter?
    public let bias: Parameter?
    /// Applies `max(·, 0)` to the output, as `GroupNorm` followed by `ReLU` would.
    public let fusesReLU: Bool

    private var normalization = PlaneNormalization()

    /// Throws unless `groups` divides `channels`.
    public init(groups: Int, channels: Int, eps: Float = 1e-5, affine: Bool = true, fusesReLU: Bool = false) throws {
        guard groups > 0, channels > 0, channels % groups == 0 else {
            throw BLASNetError.invalidArgument(
                "GroupNorm: \(channels) channels cannot be split into \(groups) groups (groups must be positive and divide the channels)")
        }
        try PlaneNormalization.checkSettings(eps: eps, layer: "GroupNorm")
        self.groups = groups
        self.channels = channels
        self.eps = eps
        self.fusesReLU = fusesReLU
        weight = affine ? Parameter(Tensor(shape: [channels], repeating: 1)) : nil
        bias = affine ? Parameter(Tensor(shape: [channels])) : nil
    }

    public var localParameters: [(name: String, parameter: Parameter)] {
        [("weight", weight), ("bias", bias)].compactMap { name, p in p.map { (name, $0) } }
    }

    private var name: String { "GroupNorm(\(groups), \(channels))" }

    public func forward(_ x: Tensor) throws -> Tensor {
        guard x.shape.count >= 2, x.shape[0] == channels, x.count > 0 else {
            throw BLASNetError.shapeMismatch(layer: name, expected: "[\(channels), N, …]", got: x.shape)
        }
        normalization.prepare(channels: channels, samples: x.shape[1], planeSize: x.count / (channels * x.shape[1]),
                              groups: groups)
        return try normalization.forwardWithBatchStatistics(x, eps: eps, weight: weight, bias: bias, relu: fusesReLU)
    }

    public func backward(_ dy: Tensor) throws -> Tensor {
        try normalization.backward(dy, weight: weight, bias: bias, layer: name)
    }
}

extension GroupNorm: SpatialModule {
    /// Pointwise, as BatchNorm: the statistics reach the whole group, which receptive
    /// fields leave out as they do a BatchNorm's batch statistics.
    public var spatialStructure: SpatialStructure { .pointwise }
}
