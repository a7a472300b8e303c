/// Logistic sigmoid `1 / (1 + e^−x)`. `x: any shape -> y: same`
public final class Sigmoid: Module {
    private var output: Tensor?

    public init() {}

    public func forward(_ x: Tensor) throws -> Tensor {
        var y = Tensor(uninitializedShape: x.shape)
        x.withUnsafePointer { xp in y.withUnsafeMutablePointer { Kernels.sigmoid(xp, $0, count: x.count) } }
        output = y.keptForBackward
        return y
    }

    public func backward(_ dy: Tensor) throws -> Tensor {
        guard let y = output else { throw BLASNetError.backwardWithoutForward("Sigmoid") }
        output = nil
        guard dy.shape == y.shape else { throw BLASNetError.shapeMismatch(layer: "Sigmoid backward", expected: "\(y.shape)", got: dy.shape) }
        var dx = Tensor(uninitializedShape: y.shape)
        dy.withUnsafePointer { g in
            y.withUnsafePointer { yp in dx.withUnsafeMutablePointer { Kernels.sigmoidBackward(g, output: yp, $0, count: y.count) } }
        }
        return dx
    }
}

extension Sigmoid: SpatialModule {
    public var spatialStructure: SpatialStructure { .pointwise }
}
