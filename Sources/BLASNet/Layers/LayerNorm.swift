/// Layer normalization of feature vectors with PyTorch's semantics (`nn.LayerNorm(F)`).
///
/// `x: [F, N] -> y: [F, N]` (PyTorch's `[N, F]`, channel-major): each sample's `F` features are
/// normalized with their mean and biased variance, then scaled and shifted elementwise
/// by `weight` and `bias` of shape `[F]`.
///
/// For images, PyTorch's usual layer norm over `C × H × W` with a per-channel affine is
/// `GroupNorm(groups: 1, channels: C)` (what ``Normalization/layer`` builds); this type is
/// that computation on `[F, N]`, seen as `[F, N, 1, 1]`.
public final class LayerNorm: Module {
    public let normalizedShape: Int
    public let eps: Float
    /// γ and β of shape `[F]`; nil without an elementwise affine.
    public var weight: Parameter? { norm.weight }
    public var bias: Parameter? { norm.bias }
    private let norm: GroupNorm

    /// Normalizes each sample over its `normalizedShape` channels and all positions (GroupNorm
    /// with one group); throws unless the channel count is positive and `eps` finite and non-negative.
    public init(normalizedShape: Int, eps: Float = 1e-5, elementwiseAffine: Bool = true) throws {
        guard normalizedShape > 0 else {
            throw BLASNetError.invalidArgument("LayerNorm: normalized shape must be positive, got \(normalizedShape)")
        }
        self.normalizedShape = normalizedShape
        self.eps = eps
        norm = try GroupNorm(groups: 1, channels: normalizedShape, eps: eps, affine: elementwiseAffine)
    }

    public var localParameters: [(name: String, parameter: Parameter)] { norm.localParameters }

    public func forward(_ x: Tensor) throws -> Tensor {
        guard x.shape.count == 2, x.shape[0] == normalizedShape else {
            throw BLASNetError.shapeMismatch(layer: "LayerNorm(\(normalizedShape))", expected: "[\(normalizedShape), N]", got: x.shape)
        }
        return try norm.forward(x)
    }

    public func backward(_ dy: Tensor) throws -> Tensor {
        try norm.backward(dy)
    }
}

extension LayerNorm: SpatialModule {
    /// Feature vectors have no spatial extent: the field passes through.
    public var spatialStructure: SpatialStructure { .pointwise }
}
