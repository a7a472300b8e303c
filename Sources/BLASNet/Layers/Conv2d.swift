import Foundation

/// 2-D convolution lowered to im2col + one sgemm over the whole batch.
///
/// `x: [C, N, H, W] -> y: [K, N, Ho, Wo]` (channel-major); `weight: [K, C, kh, kw]` (PyTorch's OIHW).
public final class Conv2d: Module {
    public let inChannels: Int
    public let outChannels: Int
    public let window: Window
    public let weight: Parameter
    public let bias: Parameter?
    /// False for a network's first layer: skips the input-gradient sgemm and col2im.
    public var propagatesInputGradient = true

    private let workspace: Workspace
    private var input: Tensor?

    /// - Parameters:
    ///   - workspace: scratch memory for the column matrix, shared by the layers of a model.
    public init(_ inChannels: Int, _ outChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0,
                dilation: Int = 1, bias: Bool = false, workspace: Workspace = Workspace(),
                rng: inout SeededGenerator) throws {
        let window = Window(kernel: kernelSize, stride: stride, padding: padding, dilation: dilation)
        try window.validate("Conv2d")
        guard inChannels > 0, outChannels > 0 else {
            throw BLASNetError.invalidArgument("Conv2d: channels must be positive, got \(inChannels) -> \(outChannels)")
        }
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.window = window
        self.workspace = workspace
        // PyTorch's default: kaiming_uniform(a = √5), which is U(±1/√fan_in), for weight and bias.
        let bound = 1 / Float(inChannels * kernelSize * kernelSize).squareRoot()
        weight = Parameter(.uniform(shape: [outChannels, inChannels, kernelSize, kernelSize], bound: bound, using: &rng))
        self.bias = bias ? Parameter(.uniform(shape: [outChannels], bound: bound, using: &rng)) : nil
    }

    public var localParameters: [(name: String, parameter: Parameter)] {
        [("weight", weight)] + (bias.map { [("bias", $0)] } ?? [])
    }

    private var label: String {
        "Conv2d(\(inChannels), \(outChannels), kernel \(window.kernel.h)×\(window.kernel.w), stride \(window.stride.h))"
    }

    private func geometry(_ x: Tensor) throws -> ConvGeometry {
        guard x.shape.count == 4, x.shape[0] == inChannels else {
            throw BLASNetError.shapeMismatch(layer: label, expected: "[\(inChannels), N, H, W]", got: x.shape)
        }
        let g = ConvGeometry(channels: inChannels, batch: x.shape[1], height: x.shape[2], width: x.shape[3], window: window)
        guard g.outHeight > 0, g.outWidth > 0 else {
            throw BLASNetError.shapeMismatch(layer: label, expected: "an input at least as large as the kernel", got: x.shape)
        }
        return g
    }

    /// The column matrix of `x` (`x` itself for pointwise convolutions), valid inside `body`.
    private func withColumns<R>(_ x: Tensor, _ g: ConvGeometry, _ body: (UnsafePointer<Float>) -> R) -> R {
        x.withUnsafePointer { xp in
            if window.isPointwise { return body(xp) }
            let col = workspace.floats(g.columnRows * g.columnCount)
            Kernels.im2col(xp, col, g)
            return body(col)
        }
    }

    public func forward(_ x: Tensor) throws -> Tensor {
        let g = try geometry(x)
        var y = Tensor(uninitializedShape: [outChannels, g.batch, g.outHeight, g.outWidth])
        withColumns(x, g) { col in
            weight.value.withUnsafePointer { w in
                y.withUnsafeMutablePointer { yp in
                    BLAS.sgemm(m: outChannels, n: g.columnCount, k: g.columnRows,
                               a: w, lda: g.columnRows, b: col, ldb: g.columnCount, c: yp, ldc: g.columnCount)
                    if let bias {
                        bias.value.withUnsafePointer { Kernels.addRowBias($0, to: yp, rows: outChannels, columns: g.columnCount) }
                    }
                }
            }
        }
        input = x
        return y
    }

    public func backward(_ dy: Tensor) throws -> Tensor {
        guard let x = input else { throw BLASNetError.invalidArgument("\(label): backward called before forward") }
        input = nil
        let g = try geometry(x)
        guard dy.shape == [outChannels, g.batch, g.outHeight, g.outWidth] else {
            throw BLASNetError.shapeMismatch(layer: label + " backward",
                                             expected: "\([outChannels, g.batch, g.outHeight, g.outWidth])", got: dy.shape)
        }
        let rows = g.columnRows, cols = g.columnCount
        dy.withUnsafePointer { dyp in
            if weight.requiresGrad {
                // dW[K, rows] += dY[K, cols] · colᵀ
                withColumns(x, g) { col in
                    weight.grad.withUnsafeMutablePointer { dw in
                        BLAS.sgemm(transB: true, m: outChannels, n: rows, k: cols,
                                   a: dyp, lda: cols, b: col, ldb: cols, beta: 1, c: dw, ldc: rows)
                    }
                }
            }
            if let bias, bias.requiresGrad {
                bias.grad.withUnsafeMutablePointer { Kernels.accumulateRowSums(dyp, into: $0, rows: outChannels, columns: cols) }
            }
        }
        guard propagatesInputGradient else { return Tensor(shape: [0]) }
        var dx = Tensor(uninitializedShape: x.shape)
        dy.withUnsafePointer { dyp in
            weight.value.withUnsafePointer { w in
                dx.withUnsafeMutablePointer { dxp in
                    // dcol[rows, cols] = Wᵀ · dY; a pointwise convolution's dcol is dx itself.
                    let dcol = window.isPointwise ? dxp : workspace.floats(rows * cols)
                    BLAS.sgemm(transA: true, m: rows, n: cols, k: outChannels,
                               a: w, lda: rows, b: dyp, ldb: cols, c: dcol, ldc: cols)
                    if !window.isPointwise { Kernels.col2im(dcol, dxp, g) }
                }
            }
        }
        return dx
    }
}
