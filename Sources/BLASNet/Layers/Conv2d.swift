import Foundation

/// 2-D convolution: Winograd F(2×2, 3×3) for 3×3 stride-1 windows, im2col + sgemm over
/// the batch for the rest (see ``ConvolutionAlgorithm``).
///
/// `x: [C, N, H, W] -> y: [K, N, Ho, Wo]` (channel-major); `weight: [K, C, kh, kw]` (PyTorch's OIHW).
public final class Conv2d: Module {
    public let inChannels: Int
    public let outChannels: Int
    public let window: Window
    public let weight: Parameter
    public let bias: Parameter?
    /// Stored: a backward pass asks whether the model trains every step, and a list built
    /// on each call would allocate.
    public let localParameters: [(name: String, parameter: Parameter)]
    /// False for a network's first layer: its backward computes no input gradient.
    public var propagatesInputGradient = true
    /// How 3×3 stride-1 convolutions are computed (forward, input and weight gradients);
    /// every other window uses im2col.
    public var algorithm = ConvolutionAlgorithm.automatic

    private let workspace: Workspace
    private var input: Tensor?

    /// A convolution initialized as `nn.Conv2d` is: weight and bias from U(±1/√fan_in).
    ///
    /// - Parameters:
    ///   - bias: a learned bias per output channel (PyTorch's default; ResNets have none).
    ///   - workspace: scratch memory for the column matrix, shared by the layers of a model.
    ///   - rng: draws the initial weights (there is no global generator: seed it for reproducible runs).
    public init(_ inChannels: Int, _ outChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0,
                dilation: Int = 1, bias: Bool = true, workspace: Workspace = Workspace(),
                rng: inout SeededGenerator) throws {
        let window = Window(kernel: kernelSize, stride: stride, padding: padding, dilation: dilation)
        try window.validate("Conv2d")
        guard inChannels > 0, outChannels > 0 else {
            throw BLASNetError.invalidArgument("Conv2d: channels must be positive, got \(inChannels) -> \(outChannels)")
        }
        try Parameter.checkSize([outChannels, inChannels, kernelSize, kernelSize], of: "Conv2d")
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.window = window
        self.workspace = workspace
        // PyTorch's default: kaiming_uniform(a = √5), which is U(±1/√fan_in), for weight and bias.
        let bound = 1 / Float(inChannels * kernelSize * kernelSize).squareRoot()
        weight = Parameter(.uniform(shape: [outChannels, inChannels, kernelSize, kernelSize], bound: bound, using: &rng))
        self.bias = bias ? Parameter(.uniform(shape: [outChannels], bound: bound, using: &rng)) : nil
        localParameters = [("weight", weight)] + (self.bias.map { [("bias", $0)] } ?? [])
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
            throw BLASNetError.shapeMismatch(layer: label, expected: "planes at least as large as the kernel after padding", got: x.shape)
        }
        // A large padding or dilation on a modest input can ask for terabytes, where
        // Swift's allocation would trap.
        try ResidentMemory.checkFits(bytes: 4 * Double(outChannels) * Double(g.batch) * Double(g.outPlane),
                                     "\(label): output [\(outChannels), \(g.batch), \(g.outHeight), \(g.outWidth)]")
        try ResidentMemory.checkFits(bytes: 4 * Double(g.columnRows) * Double(g.outPlane),
                                     "\(label): column matrix [\(g.columnRows), \(g.outPlane)] of one image")
        return g
    }

    /// Column matrices are built a few images at a time, about this many bytes each, so
    /// that im2col writes and the sgemm reads them in cache rather than in main memory.
    var columnChunkBytes = 8 << 20

    /// Winograd's chunks hold at least this many tiles whatever their size: its sgemms
    /// are `[K, C]·[C, tiles]`, and on few, wide channels (SE-ResNet-18's 4×4 stage: 512
    /// channels, 4 tiles an image) 8 MB made them 128 columns wide, which ran its forward
    /// 10% slower than the whole batch's 512.
    var winogradMinimumTiles = 512

    /// The batch split into runs of images whose column matrix fits the chunk size.
    private func imageChunks(_ g: ConvGeometry) -> ImageChunks {
        let perImage = g.columnRows * g.outPlane * MemoryLayout<Float>.size
        return ImageChunks(batch: g.batch, size: g.window.isPointwise ? g.batch : max(1, columnChunkBytes / max(perImage, 1)))
    }

    /// The column matrix of `images` of `x` (`x` itself for pointwise convolutions, whose
    /// single chunk is the whole batch) and its row stride, valid inside `body`.
    private func withColumns<R>(_ xp: UnsafePointer<Float>, _ g: ConvGeometry, images: Range<Int>,
                                _ body: (UnsafePointer<Float>, Int) -> R) -> R {
        if g.window.isPointwise { return body(xp, g.columnCount) }
        let columns = images.count * g.outPlane
        let col = workspace.floats(g.columnRows * columns)
        Kernels.im2col(xp, col, g, images: images)
        return body(col, columns)
    }

    /// The Winograd tile this convolution runs with, or nil for im2col.
    private func winogradTile(_ g: ConvGeometry) -> WinogradTile? {
        guard g.allowsWinograd else { return nil }
        switch algorithm {
        case .im2col: return nil
        case .winograd: return .f2x2
        case .winograd4x4: return .f4x4
        // Not F(4×4, 3×3), whose rounding error is several times im2col's: that is the caller's choice.
        case .automatic: return g.costPerKernel(.f2x2) <= g.costPerKernel(nil) ? .f2x2 : nil
        }
    }

    /// `y[K', N, Ho, Wo] = w[K', rows] · im2col(x)`, a chunk of images at a time.
    private func convolve(_ xp: UnsafePointer<Float>, _ g: ConvGeometry, weights w: UnsafePointer<Float>, outputs: Int,
                          into yp: UnsafeMutablePointer<Float>) {
        if let tile = winogradTile(g) {
            return Kernels.winogradConvolve(xp, g, tile: tile, weights: w, outputs: outputs, into: yp, scratch: workspace,
                                            chunkBytes: columnChunkBytes, minimumTiles: winogradMinimumTiles)
        }
        for images in imageChunks(g) {
            withColumns(xp, g, images: images) { col, columns in
                BLAS.sgemm(m: outputs, n: columns, k: g.columnRows, a: w, lda: g.columnRows,
                           b: col, ldb: columns, c: yp + images.lowerBound * g.outPlane, ldc: g.columnCount)
            }
        }
    }

    public func forward(_ x: Tensor) throws -> Tensor {
        let g = try geometry(x)
        var y = Tensor(uninitializedShape: [outChannels, g.batch, g.outHeight, g.outWidth])
        x.withUnsafePointer { xp in
            weight.value.withUnsafePointer { w in
                y.withUnsafeMutablePointer { yp in
                    convolve(xp, g, weights: w, outputs: outChannels, into: yp)
                    if let bias {
                        bias.value.withUnsafePointer { Kernels.addRowBias($0, to: yp, rows: outChannels, columns: g.columnCount) }
                    }
                }
            }
        }
        input = x.keptForBackward
        return y
    }

    /// With stride 1 the input gradient is itself a convolution: of `dy` with each kernel
    /// flipped and the channel axes swapped, padded by `k − 1 − p`. Done that way it runs
    /// as the forward does (Winograd for 3×3, else im2col and an sgemm of the forward's
    /// good shape), instead of a thin `Wᵀ·dY` sgemm that writes a column matrix, col2im's
    /// scattered adds and zeroing `dx`.
    private var transposedWindow: Window? {
        let w = window
        guard w.stride == (1, 1), w.dilation == (1, 1), !w.isPointwise,
              w.padding.h < w.kernel.h, w.padding.w < w.kernel.w else { return nil }
        return Window(kernel: w.kernel, stride: (1, 1), padding: (w.kernel.h - 1 - w.padding.h, w.kernel.w - 1 - w.padding.w),
                      dilation: (1, 1))
    }

    /// `weight` as `[C, K, kh, kw]` with each kernel rotated 180°, rebuilt every backward.
    private var flippedWeight = Tensor(shape: [0])

    public func backward(_ dy: Tensor) throws -> Tensor {
        guard let x = input else { throw BLASNetError.backwardWithoutForward(label) }
        input = nil
        let g = try geometry(x)
        guard dy.shape == [outChannels, g.batch, g.outHeight, g.outWidth] else {
            throw BLASNetError.shapeMismatch(layer: label + " backward",
                                             expected: "\([outChannels, g.batch, g.outHeight, g.outWidth])", got: dy.shape)
        }
        let rows = g.columnRows, ldy = g.columnCount
        let transposed = propagatesInputGradient ? transposedWindow : nil
        var dx = propagatesInputGradient ? Tensor(uninitializedShape: x.shape) : Tensor(shape: [0])
        if transposed != nil {
            if flippedWeight.count != weight.value.count {
                flippedWeight = Tensor(shape: [inChannels, outChannels, window.kernel.h, window.kernel.w])
            }
            weight.value.withUnsafePointer { w in
                flippedWeight.withUnsafeMutablePointer {
                    Kernels.flipKernels(w, $0, outChannels: outChannels, inChannels: inChannels, kernelSize: window.kernel.h * window.kernel.w)
                }
            }
        }
        dy.withUnsafePointer { dyp in
            if let bias, bias.requiresGrad {
                bias.withGradient { Kernels.accumulateRowSums(dyp, into: $0, rows: outChannels, columns: ldy) }
            }
            x.withUnsafePointer { xp in
                weight.value.withUnsafePointer { w in
                    dx.withUnsafeMutablePointer { dxp in
                        let scatters = propagatesInputGradient && transposed == nil
                        if scatters && !window.isPointwise { Kernels.zero(dxp, count: x.count) }
                        let tile = winogradTile(g), columnWeightGradient = weight.requiresGrad && tile == nil
                        if weight.requiresGrad, let tile {
                            weight.withGradient {
                                Kernels.winogradWeightGradient(xp, dyp, g, tile: tile, outputs: outChannels, into: $0,
                                                               scratch: workspace, chunkBytes: columnChunkBytes,
                                                               minimumTiles: winogradMinimumTiles)
                            }
                        }
                        for images in imageChunks(g) where columnWeightGradient || scatters {
                            let dyChunk = dyp + images.lowerBound * g.outPlane
                            if columnWeightGradient {
                                // dW[K, rows] += dY[K, images] · col[rows, images]ᵀ
                                withColumns(xp, g, images: images) { col, columns in
                                    weight.withGradient { dw in
                                        BLAS.sgemm(transB: true, m: outChannels, n: rows, k: columns,
                                                   a: dyChunk, lda: ldy, b: col, ldb: columns, beta: 1, c: dw, ldc: rows)
                                    }
                                }
                            }
                            guard scatters else { continue }
                            // dcol[rows, images] = Wᵀ · dY[K, images]; a pointwise convolution's dcol is dx itself.
                            let columns = images.count * g.outPlane
                            let dcol = window.isPointwise ? dxp : workspace.floats(rows * columns)
                            BLAS.sgemm(transA: true, m: rows, n: columns, k: outChannels,
                                       a: w, lda: rows, b: dyChunk, ldb: ldy, c: dcol, ldc: columns)
                            if !window.isPointwise { Kernels.col2im(dcol, dxp, g, images: images) }
                        }
                        if let transposed {
                            let gt = ConvGeometry(channels: outChannels, batch: g.batch, height: g.outHeight, width: g.outWidth,
                                                  window: transposed)
                            flippedWeight.withUnsafePointer { convolve(dyp, gt, weights: $0, outputs: inChannels, into: dxp) }
                        }
                    }
                }
            }
        }
        return dx
    }
}

/// How ``Conv2d`` computes a convolution.
public enum ConvolutionAlgorithm: String, CaseIterable, Sendable {
    /// Lay receptive fields out as columns and multiply by the weights in one sgemm.
    case im2col
    /// Winograd's F(2×2, 3×3) for 3×3 stride-1 windows: 2.25× fewer flops, in 16 smaller
    /// sgemms. Agrees with ``im2col`` to float32 rounding; other windows fall back to it.
    case winograd
    /// Winograd's F(4×4, 3×3) for 3×3 stride-1 windows: 4× fewer flops than im2col (1.8×
    /// fewer than F(2×2, 3×3)) on planes whose sides are multiples of 4, in 36 sgemms;
    /// training steps ran 4–20% faster than under ``automatic`` (SE-ResNet-18 on 28×28
    /// inputs 11%, ResNet-50 at 224² 4%). Its transforms have entries up to 8 and 1/24, so one convolution's
    /// float32 result is 5–10× further from an exact sum than im2col's (relative RMS about
    /// 2e-6 against 2e-7); a whole ResNet training step still agrees with PyTorch within 4×
    /// PyTorch float32's own error, but with less room. Never chosen by ``automatic``;
    /// other windows fall back to im2col.
    case winograd4x4
    /// Winograd where it pays, im2col elsewhere. Its kernel transform writes 16 floats per
    /// 3×3 kernel (one output–input channel pair) on every call, whatever the batch, so it
    /// needs enough multiply-adds saved per kernel (im2col's 9 per output position against
    /// 16 per 2×2 tile): on the 2-core VM, ResNet-50's 7×7 stage at batch 16 (2,960 saved
    /// per kernel) ran 10% slower under
    /// Winograd, its 14×14 stage (15,680) 40% faster, SE-ResNet-18's 4×4 stage at batch 128
    /// (10,240) 20% faster.
    case automatic
}

extension Module {
    /// Sets ``Conv2d/algorithm`` on every convolution of this module and its descendants.
    public func setConvolutionAlgorithm(_ algorithm: ConvolutionAlgorithm) {
        (self as? Conv2d)?.algorithm = algorithm
        for child in children { child.module.setConvolutionAlgorithm(algorithm) }
    }
}

extension Conv2d: SpatialModule {
    public var spatialStructure: SpatialStructure { .window(window) }
}
