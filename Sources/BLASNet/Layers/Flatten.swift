/// Flattens each sample's `C·H·W` values into one feature vector in PyTorch's
/// `(c, h, w)` order. `x: [C, N, H, W] -> y: [C·H·W, N]`
///
/// Feature vectors `[F, N]` pass through unchanged, as `torch.flatten(x, 1)` leaves an
/// `[N, F]` tensor: `AdaptiveAvgPool2d` already flattens, so PyTorch's
/// `pool, flatten, linear` head composes here too.
public final class Flatten: Module {
    private var inputShape: [Int] = []

    public init() {}

    public func forward(_ x: Tensor) throws -> Tensor {
        guard x.shape.count == 4 || x.shape.count == 2 else {
            throw BLASNetError.shapeMismatch(layer: "Flatten", expected: "[C, N, H, W] or [F, N]", got: x.shape)
        }
        inputShape = x.shape
        guard x.shape.count == 4 else { return x }
        let (c, n, hw) = (x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
        var y = Tensor(uninitializedShape: [c * hw, n])
        x.withUnsafePointer { xp in y.withUnsafeMutablePointer { Kernels.transposeInner(xp, $0, outer: c, rows: n, columns: hw) } }
        return y
    }

    public func backward(_ dy: Tensor) throws -> Tensor {
        guard !inputShape.isEmpty, dy.count == inputShape.reduce(1, *), dy.shape.count == 2, dy.shape[1] == inputShape[1] else {
            throw BLASNetError.shapeMismatch(layer: "Flatten backward", expected: "[C·H·W, N] of the forward input \(inputShape)", got: dy.shape)
        }
        guard inputShape.count == 4 else { return dy }
        let (c, n, hw) = (inputShape[0], inputShape[1], inputShape[2] * inputShape[3])
        var dx = Tensor(uninitializedShape: inputShape)
        dy.withUnsafePointer { g in dx.withUnsafeMutablePointer { Kernels.transposeInner(g, $0, outer: c, rows: hw, columns: n) } }
        return dx
    }
}
