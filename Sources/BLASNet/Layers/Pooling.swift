/// Checks a channel-major image batch and returns its output size under `window`.
private func pooledSize(_ x: Tensor, _ window: Window, layer: String) throws -> (h: Int, w: Int) {
    guard x.shape.count == 4 else { throw BLASNetError.shapeMismatch(layer: layer, expected: "[C, N, H, W]", got: x.shape) }
    let out = window.outputSize(h: x.shape[2], w: x.shape[3])
    guard out.h > 0, out.w > 0 else {
        throw BLASNetError.shapeMismatch(layer: layer, expected: "an input at least as large as the window", got: x.shape)
    }
    return out
}

/// Max pooling. `x: [C, N, H, W] -> y: [C, N, Ho, Wo]`
public final class MaxPool2d: Module {
    public let window: Window
    private var inputShape: [Int] = []
    private var argmax: [Int32] = []

    /// `nn.MaxPool2d`'s arguments and defaults: `stride` nil is `kernelSize`; padding pads
    /// with −∞ and must be at most half the kernel.
    public init(kernelSize: Int, stride: Int? = nil, padding: Int = 0, dilation: Int = 1) throws {
        window = Window(kernel: kernelSize, stride: stride ?? kernelSize, padding: padding, dilation: dilation)
        try window.validate("MaxPool2d")
        guard 2 * padding <= kernelSize else {
            throw BLASNetError.invalidArgument("MaxPool2d: padding \(padding) must be at most half the kernel \(kernelSize)")
        }
    }

    public func forward(_ x: Tensor) throws -> Tensor {
        let (oh, ow) = try pooledSize(x, window, layer: "MaxPool2d(\(window.kernel.h))")
        // A dilated window can straddle a small input with every tap outside it (kernel 2,
        // dilation 3 and padding 1 on 2 rows): no maximum to take, nowhere to route its gradient.
        guard Kernels.everyWindowHasATap(outSize: oh, stride: window.stride.h, padding: window.padding.h,
                                         kernel: window.kernel.h, dilation: window.dilation.h, size: x.shape[2]),
              Kernels.everyWindowHasATap(outSize: ow, stride: window.stride.w, padding: window.padding.w,
                                         kernel: window.kernel.w, dilation: window.dilation.w, size: x.shape[3]) else {
            throw BLASNetError.shapeMismatch(layer: "MaxPool2d(\(window.kernel.h), dilation \(window.dilation.h))",
                                             expected: "an input every dilated window has a tap inside", got: x.shape)
        }
        var y = Tensor(uninitializedShape: [x.shape[0], x.shape[1], oh, ow])
        // The kernel writes every entry: keep the buffer from the last step when it fits.
        if argmax.count != y.count { argmax = [Int32](repeating: 0, count: y.count) }
        x.withUnsafePointer { xp in
            y.withUnsafeMutablePointer {
                Kernels.maxPool(xp, $0, argmax: &argmax, planes: x.shape[0] * x.shape[1], height: x.shape[2], width: x.shape[3], window: window)
            }
        }
        inputShape = x.shape
        return y
    }

    public func backward(_ dy: Tensor) throws -> Tensor {
        guard !inputShape.isEmpty, dy.shape.count == 4, dy.shape[0...1] == inputShape[0...1], dy.count == argmax.count else {
            throw BLASNetError.shapeMismatch(layer: "MaxPool2d backward", expected: "the forward output's shape", got: dy.shape)
        }
        var dx = Tensor(uninitializedShape: inputShape)
        let planes = inputShape[0] * inputShape[1]
        guard planes > 0 else { return dx }
        dy.withUnsafePointer { g in
            dx.withUnsafeMutablePointer {
                Kernels.maxPoolBackward(g, argmax: argmax, $0, planes: planes, planeSize: inputShape[2] * inputShape[3],
                                        outPlaneSize: dy.count / planes)
            }
        }
        return dx
    }
}

/// Average pooling (padding counts in the divisor, PyTorch's default). `x: [C, N, H, W] -> y: [C, N, Ho, Wo]`
public final class AvgPool2d: Module {
    public let window: Window
    private var inputShape: [Int] = []

    /// `nn.AvgPool2d`'s arguments and defaults (`count_include_pad=True`): `stride` nil is
    /// `kernelSize`; padding pads with zeros and must be at most half the kernel.
    public init(kernelSize: Int, stride: Int? = nil, padding: Int = 0) throws {
        window = Window(kernel: kernelSize, stride: stride ?? kernelSize, padding: padding)
        try window.validate("AvgPool2d")
        guard 2 * padding <= kernelSize else {
            throw BLASNetError.invalidArgument("AvgPool2d: padding \(padding) must be at most half the kernel \(kernelSize)")
        }
    }

    public func forward(_ x: Tensor) throws -> Tensor {
        let (oh, ow) = try pooledSize(x, window, layer: "AvgPool2d(\(window.kernel.h))")
        var y = Tensor(uninitializedShape: [x.shape[0], x.shape[1], oh, ow])
        x.withUnsafePointer { xp in
            y.withUnsafeMutablePointer {
                Kernels.avgPool(xp, $0, planes: x.shape[0] * x.shape[1], height: x.shape[2], width: x.shape[3], window: window)
            }
        }
        inputShape = x.shape
        return y
    }

    public func backward(_ dy: Tensor) throws -> Tensor {
        guard inputShape.count == 4 else { throw BLASNetError.invalidArgument("AvgPool2d: backward called before forward") }
        let (oh, ow) = window.outputSize(h: inputShape[2], w: inputShape[3])
        guard dy.shape == [inputShape[0], inputShape[1], oh, ow] else {
            throw BLASNetError.shapeMismatch(layer: "AvgPool2d backward", expected: "\([inputShape[0], inputShape[1], oh, ow])", got: dy.shape)
        }
        var dx = Tensor(uninitializedShape: inputShape)
        dy.withUnsafePointer { g in
            dx.withUnsafeMutablePointer {
                Kernels.avgPoolBackward(g, $0, planes: inputShape[0] * inputShape[1], height: inputShape[2], width: inputShape[3], window: window)
            }
        }
        return dx
    }
}

/// Adaptive average pooling to a `grid × grid` output of PyTorch's bins, flattened the
/// way a ResNet head reads it: `torch.flatten(adaptive_avg_pool2d(x, grid), 1)`.
/// Grid 1 is global average pooling (the standard head, and every SE block's squeeze).
/// `x: [C, N, H, W] -> y: [C·grid², N]`
public final class AdaptiveAvgPool2d: Module {
    public let grid: Int
    private var inputShape: [Int] = []

    /// Pools each plane to a `grid × grid` of bin means (1: global average pooling).
    public init(_ grid: Int = 1) throws {
        guard grid > 0 else { throw BLASNetError.invalidArgument("AdaptiveAvgPool2d: the output grid must be positive, got \(grid)") }
        self.grid = grid
    }

    public func forward(_ x: Tensor) throws -> Tensor {
        guard x.shape.count == 4, x.shape[2] * x.shape[3] > 0 else {
            throw BLASNetError.shapeMismatch(layer: "AdaptiveAvgPool2d(\(grid))", expected: "[C, N, H, W]", got: x.shape)
        }
        try ResidentMemory.checkFits(bytes: 4 * Double(x.shape[0]) * Double(grid) * Double(grid) * Double(x.shape[1]),
                                     "AdaptiveAvgPool2d(\(grid)): output [\(x.shape[0]) × \(grid)², \(x.shape[1])]")
        let features = x.shape[0] * grid * grid
        var y = Tensor(uninitializedShape: [features, x.shape[1]])
        x.withUnsafePointer { xp in
            y.withUnsafeMutablePointer {
                Kernels.adaptiveAvgPool(xp, $0, channels: x.shape[0], batch: x.shape[1], height: x.shape[2], width: x.shape[3], grid: grid)
            }
        }
        inputShape = x.shape
        return y
    }

    public func backward(_ dy: Tensor) throws -> Tensor {
        guard inputShape.count == 4, dy.shape == [inputShape[0] * grid * grid, inputShape[1]] else {
            throw BLASNetError.shapeMismatch(layer: "AdaptiveAvgPool2d backward", expected: "the forward output's shape", got: dy.shape)
        }
        var dx = Tensor(uninitializedShape: inputShape)
        dy.withUnsafePointer { g in
            dx.withUnsafeMutablePointer {
                Kernels.adaptiveAvgPoolBackward(g, $0, channels: inputShape[0], batch: inputShape[1], height: inputShape[2],
                                                width: inputShape[3], grid: grid)
            }
        }
        return dx
    }
}

extension MaxPool2d: SpatialModule {
    public var spatialStructure: SpatialStructure { .window(window) }
}

extension AvgPool2d: SpatialModule {
    public var spatialStructure: SpatialStructure { .window(window) }
}

extension AdaptiveAvgPool2d: SpatialModule {
    public var spatialStructure: SpatialStructure { .adaptive(grid: grid) }
}
