/// Fully connected layer, one sgemm.
///
/// `x: [F, N] -> y: [K, N]` (feature-major); `weight: [K, F]`, `bias: [K]` as in PyTorch.
public final class Linear: Module {
    public let inFeatures: Int
    public let outFeatures: Int
    public let weight: Parameter
    public let bias: Parameter?
    /// Stored: a backward pass asks whether the model trains every step, and a list built
    /// on each call would allocate.
    public let localParameters: [(name: String, parameter: Parameter)]
    private var input: Tensor?

    /// A layer initialized as `nn.Linear` is: weight and bias from U(±1/√inFeatures);
    /// `rng` draws them (there is no global generator: seed it for reproducible runs).
    public init(_ inFeatures: Int, _ outFeatures: Int, bias: Bool = true, rng: inout SeededGenerator) throws {
        guard inFeatures > 0, outFeatures > 0 else {
            throw BLASNetError.invalidArgument("Linear: sizes must be positive, got \(inFeatures) -> \(outFeatures)")
        }
        try Parameter.checkSize([outFeatures, inFeatures], of: "Linear")
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        // PyTorch's default initialization: U(±1/√fan_in) for weight and bias.
        let bound = 1 / Float(inFeatures).squareRoot()
        weight = Parameter(.uniform(shape: [outFeatures, inFeatures], bound: bound, using: &rng))
        self.bias = bias ? Parameter(.uniform(shape: [outFeatures], bound: bound, using: &rng)) : nil
        localParameters = [("weight", weight)] + (self.bias.map { [("bias", $0)] } ?? [])
    }

    public func forward(_ x: Tensor) throws -> Tensor {
        guard x.shape.count == 2, x.shape[0] == inFeatures else {
            throw BLASNetError.shapeMismatch(layer: "Linear(\(inFeatures), \(outFeatures))", expected: "[\(inFeatures), N]", got: x.shape)
        }
        let n = x.shape[1]
        var y = Tensor(uninitializedShape: [outFeatures, n])
        x.withUnsafePointer { xp in
            weight.value.withUnsafePointer { w in
                y.withUnsafeMutablePointer { yp in
                    BLAS.sgemm(m: outFeatures, n: n, k: inFeatures, a: w, lda: inFeatures, b: xp, ldb: n, c: yp, ldc: n)
                    if let bias { bias.value.withUnsafePointer { Kernels.addRowBias($0, to: yp, rows: outFeatures, columns: n) } }
                }
            }
        }
        input = x.keptForBackward
        return y
    }

    public func backward(_ dy: Tensor) throws -> Tensor {
        guard let x = input else { throw BLASNetError.backwardWithoutForward("Linear") }
        input = nil
        let n = x.shape[1]
        guard dy.shape == [outFeatures, n] else {
            throw BLASNetError.shapeMismatch(layer: "Linear(\(inFeatures), \(outFeatures)) backward", expected: "[\(outFeatures), \(n)]", got: dy.shape)
        }
        var dx = Tensor(uninitializedShape: x.shape)
        dy.withUnsafePointer { g in
            if weight.requiresGrad {
                x.withUnsafePointer { xp in
                    weight.withGradient { dw in
                        BLAS.sgemm(transB: true, m: outFeatures, n: inFeatures, k: n, a: g, lda: n, b: xp, ldb: n, beta: 1, c: dw, ldc: inFeatures)
                    }
                }
            }
            if let bias, bias.requiresGrad {
                bias.withGradient { Kernels.accumulateRowSums(g, into: $0, rows: outFeatures, columns: n) }
            }
            weight.value.withUnsafePointer { w in
                dx.withUnsafeMutablePointer { dxp in
                    BLAS.sgemm(transA: true, m: inFeatures, n: n, k: outFeatures, a: w, lda: inFeatures, b: g, ldb: n, c: dxp, ldc: n)
                }
            }
        }
        return dx
    }
}

extension Linear: SpatialModule {
    /// A vector is one position (what global pooling leaves), which this maps to one position.
    public var spatialStructure: SpatialStructure { .pointwise }
}
