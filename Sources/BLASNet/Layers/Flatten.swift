/// Flattens each sample's `C·H·W` values into one feature vector in PyTorch's
/// `(c, h, w)` order. `x: [C, N, H, W] -> y: [C·H·W, N]`
public final class Flatten: Module {
    private var inputShape: [Int] = []

    public init() {}

    public func forward(_ x: Tensor) throws -> Tensor {
        guard x.shape.count == 4 else { throw BLASNetError.shapeMismatch(layer: "Flatten", expected: "[C, N, H, W]", got: x.shape) }
        let (c, n, hw) = (x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
        var y = Tensor(uninitializedShape: [c * hw, n])
        x.withUnsafePointer { xp in y.withUnsafeMutablePointer { Kernels.transposeInner(xp, $0, outer: c, rows: n, columns: hw) } }
        inputShape = x.shape
        return y
    }

    public func backward(_ dy: Tensor) throws -> Tensor {
        guard inputShape.count == 4, dy.count == inputShape.reduce(1, *), dy.shape.count == 2, dy.shape[1] == inputShape[1] else {
            throw BLASNetError.shapeMismatch(layer: "Flatten backward", expected: "[C·H·W, N] of the forward input \(inputShape)", got: dy.shape)
        }
        let (c, n, hw) = (inputShape[0], inputShape[1], inputShape[2] * inputShape[3])
        var dx = Tensor(uninitializedShape: inputShape)
        dy.withUnsafePointer { g in dx.withUnsafeMutablePointer { Kernels.transposeInner(g, $0, outer: c, rows: hw, columns: n) } }
        return dx
    }
}
