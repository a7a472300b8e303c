/// Rectified linear unit. `x: any shape -> y: same`
public final class ReLU: Module {
    private var output: Tensor?

    public init() {}

    public func forward(_ x: Tensor) throws -> Tensor {
        var y = Tensor(uninitializedShape: x.shape)
        x.withUnsafePointer { xp in y.withUnsafeMutablePointer { Kernels.relu(xp, $0, count: x.count) } }
        output = y.keptForBackward
        return y
    }

    public func backward(_ dy: Tensor) throws -> Tensor {
        guard let y = output else { throw BLASNetError.backwardWithoutForward("ReLU") }
        output = nil
        guard dy.shape == y.shape else { throw BLASNetError.shapeMismatch(layer: "ReLU backward", expected: "\(y.shape)", got: dy.shape) }
        var dx = Tensor(uninitializedShape: y.shape)
        dy.withUnsafePointer { g in
            y.withUnsafePointer { yp in dx.withUnsafeMutablePointer { Kernels.reluBackward(g, output: yp, $0, count: y.count) } }
        }
        return dx
    }
}

extension ReLU: SpatialModule {
    public var spatialStructure: SpatialStructure { .pointwise }
}
