import Foundation
import Testing
@testable import BLASNet

/// Every layer's backward against finite differences, in training and inference modes.
struct LayerGradientTests {
    @Test(arguments: [
        (kernel: 3, stride: 1, padding: 1, dilation: 1, bias: false),
        (kernel: 3, stride: 2, padding: 1, dilation: 1, bias: true),
        (kernel: 1, stride: 1, padding: 0, dilation: 1, bias: true),
        (kernel: 1, stride: 2, padding: 0, dilation: 1, bias: false),
        (kernel: 3, stride: 1, padding: 2, dilation: 2, bias: false),
        (kernel: 5, stride: 3, padding: 2, dilation: 1, bias: true),
    ])
    func conv2d(_ c: (kernel: Int, stride: Int, padding: Int, dilation: Int, bias: Bool)) throws {
        var rng = SeededGenerator(seed: 1)
        let conv = try Conv2d(3, 4, kernelSize: c.kernel, stride: c.stride, padding: c.padding, dilation: c.dilation,
                              bias: c.bias, rng: &rng)
        try GradientCheck.check(conv, input: GradientCheck.random([3, 2, 7, 6], seed: 2))
    }

    /// Both Winograd tile sizes, and how far each may be from im2col relative to the
    /// largest output: F(4×4, 3×3)'s transforms scale by up to 8 and 1/24.
    static let winogradTolerances: [(ConvolutionAlgorithm, Float)] = [(.winograd, 2e-6), (.winograd4x4, 2e-5)]

    /// Planes past ``Kernels/paddedBandFloats`` (301×300: F(2×2, 3×3) has 302-float rows
    /// in bands of 107 tile rows, F(4×4, 3×3) 324-float rows in bands of 50) go through
    /// Winograd's input transform a band at a time, the last band short: every padding,
    /// against im2col.
    @Test(arguments: [0, 1, 2], winogradTolerances)
    func conv2dWinogradTakesWidePlanesInBands(padding: Int, _ algorithm: (ConvolutionAlgorithm, Float)) throws {
        var rng1 = SeededGenerator(seed: 51), rng2 = SeededGenerator(seed: 51)
        let winograd = try Conv2d(2, 3, kernelSize: 3, padding: padding, rng: &rng1)
        let im2col = try Conv2d(2, 3, kernelSize: 3, padding: padding, rng: &rng2)
        (winograd.algorithm, im2col.algorithm) = (algorithm.0, .im2col)
        let x = GradientCheck.random([2, 1, 301, 300], seed: 52)
        let (y1, y2) = (try winograd.forward(x), try im2col.forward(x))
        let dy = GradientCheck.random(y1.shape, seed: 53)
        let (dx1, dx2) = (try winograd.backward(dy), try im2col.backward(dy))
        for (a, b) in [(y1, y2), (dx1, dx2), (try winograd.weight.requiredGrad(), try im2col.weight.requiredGrad())] {
            #expect(a.shape == b.shape)
            let scale = b.scalars.map(abs).max() ?? 0
            #expect(zip(a.scalars, b.scalars).allSatisfy { abs($0 - $1) <= algorithm.1 * max(1, scale) })
        }
    }

    @Test func conv2dInImageChunksMatchesWholeBatch() throws {
        var rng1 = SeededGenerator(seed: 40), rng2 = SeededGenerator(seed: 40)
        let whole = try Conv2d(3, 5, kernelSize: 3, stride: 2, padding: 1, bias: true, rng: &rng1)
        let chunked = try Conv2d(3, 5, kernelSize: 3, stride: 2, padding: 1, bias: true, rng: &rng2)
        chunked.columnChunkBytes = 1  // one image per chunk
        let x = GradientCheck.random([3, 4, 9, 8], seed: 41), dy = GradientCheck.random([5, 4, 5, 4], seed: 42)
        let (y1, y2) = (try whole.forward(x), try chunked.forward(x))
        let (dx1, dx2) = (try whole.backward(dy), try chunked.backward(dy))
        for (a, b) in [(y1, y2), (dx1, dx2), (try whole.weight.requiredGrad(), try chunked.weight.requiredGrad()),
                       (try whole.bias!.requiredGrad(), try chunked.bias!.requiredGrad())] {
            #expect(a.shape == b.shape)
            #expect(zip(a.scalars, b.scalars).allSatisfy { abs($0 - $1) <= 1e-5 * max(1, abs($0)) })
        }
        try GradientCheck.check(chunked, input: x)
    }

    /// Winograd F(2×2, 3×3) and F(4×4, 3×3) against im2col on the same weights: odd and
    /// even output sizes (tiles cut at the edge; rows of 3, 7 and 19 tiles take every
    /// F(2×2) vector width, rows of 10 and 17 tiles F(4×4)'s whole and partial 8-tile
    /// blocks), every padding a 3×3 window takes (2 is the transposed convolution of
    /// padding 0), one image per chunk, and frozen weights.
    @Test(arguments: [(padding: 1, h: 7, w: 6, chunkBytes: 8 << 20), (padding: 0, h: 9, w: 8, chunkBytes: 8 << 20),
                      (padding: 2, h: 5, w: 4, chunkBytes: 1), (padding: 1, h: 9, w: 13, chunkBytes: 8 << 20),
                      (padding: 1, h: 20, w: 37, chunkBytes: 1), (padding: 0, h: 11, w: 70, chunkBytes: 8 << 20)],
          winogradTolerances)
    func conv2dWinogradMatchesIm2col(_ c: (padding: Int, h: Int, w: Int, chunkBytes: Int),
                                     _ algorithm: (ConvolutionAlgorithm, Float)) throws {
        var rng1 = SeededGenerator(seed: 43), rng2 = SeededGenerator(seed: 43)
        let winograd = try Conv2d(5, 6, kernelSize: 3, padding: c.padding, bias: true, rng: &rng1)
        let im2col = try Conv2d(5, 6, kernelSize: 3, padding: c.padding, bias: true, rng: &rng2)
        (winograd.algorithm, im2col.algorithm) = (algorithm.0, .im2col)
        winograd.columnChunkBytes = c.chunkBytes
        winograd.winogradMinimumTiles = 1
        let x = GradientCheck.random([5, 3, c.h, c.w], seed: 44)
        let (y1, y2) = (try winograd.forward(x), try im2col.forward(x))
        let dy = GradientCheck.random(y1.shape, seed: 45)
        let (dx1, dx2) = (try winograd.backward(dy), try im2col.backward(dy))
        for (a, b) in [(y1, y2), (dx1, dx2), (try winograd.weight.requiredGrad(), try im2col.weight.requiredGrad()),
                       (try winograd.bias!.requiredGrad(), try im2col.bias!.requiredGrad())] {
            #expect(a.shape == b.shape)
            let scale = b.scalars.map(abs).max() ?? 0
            #expect(zip(a.scalars, b.scalars).allSatisfy { abs($0 - $1) <= algorithm.1 * max(1, scale) })
        }
        try GradientCheck.check(winograd, input: x)
        winograd.weight.requiresGrad = false
        winograd.zeroGrad()
        _ = try winograd.forward(x)
        #expect(try winograd.backward(dy).scalars == dx1.scalars)
        #expect(try winograd.weight.requiredGrad().scalars.allSatisfy { $0 == 0 })
    }

    /// Stride 2 against an independent reference, the convolution sum written out (no
    /// im2col), and its backward against finite differences: a short row, and rows long
    /// enough for im2col's vector gather and col2im's vector scatter (nine or more outputs
    /// inside the input), odd and even widths, the 1×1 downsample and the 7×7 stem.
    @Test(arguments: [(kernel: 3, padding: 1, width: 6), (kernel: 3, padding: 1, width: 22), (kernel: 3, padding: 1, width: 23),
                      (kernel: 1, padding: 0, width: 21), (kernel: 7, padding: 3, width: 40)])
    func conv2dStride2MatchesDirectConvolution(_ c: (kernel: Int, padding: Int, width: Int)) throws {
        var rng = SeededGenerator(seed: 3)
        let conv = try Conv2d(2, 3, kernelSize: c.kernel, stride: 2, padding: c.padding, bias: true, rng: &rng)
        let (height, width) = (5, c.width)
        let x = GradientCheck.random([2, 2, height, width], seed: 4)  // [C, N, H, W]
        let y = try conv.forward(x)
        let (oh, ow) = ((height + 2 * c.padding - c.kernel) / 2 + 1, (width + 2 * c.padding - c.kernel) / 2 + 1)
        #expect(y.shape == [3, 2, oh, ow])
        #expect(zip(y.scalars, Self.directConvolution(conv, x, outSize: (oh, ow))).allSatisfy { abs(Double($0) - $1) < 1e-5 })
        try GradientCheck.check(conv, input: x)
    }

    /// Stride 1 with the output the input's size (im2col copies whole shifted planes) and
    /// padding wider than the input: a 5×5 kernel on one-pixel rows, a 7×7 on one-pixel
    /// columns; the input gradient is the same kind of convolution.
    @Test(arguments: [(kernel: 5, padding: 2, height: 1, width: 3), (kernel: 7, padding: 3, height: 2, width: 1),
                      (kernel: 5, padding: 2, height: 3, width: 4)])
    func conv2dPaddingWiderThanTheInput(_ c: (kernel: Int, padding: Int, height: Int, width: Int)) throws {
        var rng = SeededGenerator(seed: 46)
        let conv = try Conv2d(2, 3, kernelSize: c.kernel, padding: c.padding, bias: true, rng: &rng)
        let x = GradientCheck.random([2, 2, c.height, c.width], seed: 47)
        let y = try conv.forward(x)
        #expect(y.shape == [3, 2, c.height, c.width])
        #expect(zip(y.scalars, Self.directConvolution(conv, x, outSize: (c.height, c.width))).allSatisfy { abs(Double($0) - $1) < 1e-5 })
        try GradientCheck.check(conv, input: x)
    }

    /// `conv` of `x: [C, N, H, W]` as the sum written out (no im2col), in Float64.
    static func directConvolution(_ conv: Conv2d, _ x: Tensor, outSize: (h: Int, w: Int)) -> [Double] {
        let (channels, batch, height, width) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (kernel, stride, padding) = (conv.window.kernel.h, conv.window.stride.h, conv.window.padding.h)
        let w = conv.weight.value.scalars, b = conv.bias?.value.scalars, xs = x.scalars
        var y: [Double] = []
        for k in 0..<conv.outChannels { for n in 0..<batch { for i in 0..<outSize.h { for j in 0..<outSize.w {
            var s = Double(b?[k] ?? 0)
            for ch in 0..<channels { for ki in 0..<kernel { for kj in 0..<kernel {
                let ih = i * stride - padding + ki, iw = j * stride - padding + kj
                guard (0..<height).contains(ih), (0..<width).contains(iw) else { continue }
                s += Double(w[((k * channels + ch) * kernel + ki) * kernel + kj]) * Double(xs[((ch * batch + n) * height + ih) * width + iw])
            } } }
            y.append(s)
        } } } }
        return y
    }

    /// An empty batch adds nothing to the weight gradient, whatever Winograd's scratch
    /// memory holds from the last call.
    @Test(arguments: [ConvolutionAlgorithm.winograd, .winograd4x4])
    func conv2dWinogradOnAnEmptyBatch(_ algorithm: ConvolutionAlgorithm) throws {
        var rng = SeededGenerator(seed: 48)
        let conv = try Conv2d(3, 4, kernelSize: 3, padding: 1, rng: &rng)
        conv.algorithm = algorithm
        _ = try conv.forward(GradientCheck.random([3, 2, 6, 6], seed: 49))
        _ = try conv.backward(GradientCheck.random([4, 2, 6, 6], seed: 50))
        conv.zeroGrad()
        #expect(try conv.forward(Tensor(shape: [3, 0, 6, 6])).shape == [4, 0, 6, 6])
        #expect(try conv.backward(Tensor(shape: [4, 0, 6, 6])).shape == [3, 0, 6, 6])
        #expect(try conv.weight.requiredGrad().scalars.allSatisfy { $0 == 0 })
    }

    @Test func linear() throws {
        var rng = SeededGenerator(seed: 5)
        try GradientCheck.check(try Linear(6, 4, rng: &rng), input: GradientCheck.random([6, 3], seed: 6))
    }

    @Test(arguments: [true, false])
    func batchNorm2d(training: Bool) throws {
        let bn = try BatchNorm2d(3)
        bn.weight.value = GradientCheck.random([3], scale: 0.5, seed: 7)
        bn.bias.value = GradientCheck.random([3], seed: 8)
        bn.runningVar.value = Tensor(shape: [3], repeating: 0.7)
        bn.setTraining(training)
        try GradientCheck.check(bn, input: GradientCheck.random([3, 4, 3, 2], seed: 9), h: 1e-2, tolerance: 2e-2)
    }

    /// The fused ReLU's kink is at `γ·x̂ + β = 0`: β puts it in the widest gap between each
    /// channel's values, and no step of the check moves any of them a tenth of the way there.
    @Test(arguments: [true, false])
    func batchNormFusedReLU(training: Bool) throws {
        let bn = try BatchNorm2d(3, fusesReLU: true)
        bn.setTraining(training)
        let x = GradientCheck.random([3, 4, 3, 2], seed: 32), h: Float = 1e-3
        // γ·x̂ + β, in Float64, with the batch's statistics or the running ones (mean 0, variance 1).
        func preActivation(_ x: Tensor, _ gamma: [Float], _ beta: [Float]) -> [Double] {
            guard !training else {
                return NormalizationTests.reference(x, gamma: gamma, beta: beta) { c, _ in (0..<x.shape[1]).map { (c, $0) } }
            }
            let size = x.count / 3
            return x.scalars.enumerated().map { i, v in Double(v) / (1 + 1e-5).squareRoot() * Double(gamma[i / size]) + Double(beta[i / size]) }
        }
        let gamma: [Float] = [0.8, -0.6, 0.45]
        let beta = GradientCheck.betaBetweenValues(preActivation(x, gamma, [0, 0, 0]), channels: 3)
        (bn.weight.value, bn.bias.value) = (try Tensor(shape: [3], scalars: gamma), try Tensor(shape: [3], scalars: beta))
        GradientCheck.expectClearOfKink(x: x, gamma: gamma, beta: beta, h: h, preActivation: preActivation)
        let y = try bn.forward(x).scalars
        #expect(y.allSatisfy { $0 >= 0 } && y.contains(0) && y.contains { $0 > 0 })
        try GradientCheck.check(bn, input: x, h: h, tolerance: 2e-2)
    }

    @Test func batchNorm1d() throws {
        let bn = try BatchNorm1d(5)
        try GradientCheck.check(bn, input: GradientCheck.random([5, 6], seed: 10), tolerance: 2e-2)
    }

    @Test func relu() throws {
        // Inputs kept away from the kink, where finite differences are meaningless.
        var x = GradientCheck.random([2, 3, 4, 4], seed: 11)
        x.scalars = x.scalars.map { $0 >= 0 ? $0 + 0.1 : $0 - 0.1 }
        try GradientCheck.check(ReLU(), input: x)
    }

    /// A NaN output passes its gradient back, as in PyTorch (threshold_backward zeroes only
    /// where the output is ≤ 0), so a NaN upstream is not hidden from the layers below. On a
    /// tensor long enough for both workers and the vector loop, with NaNs at either end.
    @Test func reluPassesTheGradientWhereItsOutputIsNaN() throws {
        let n = 40_003
        let x = try Tensor(shape: [1, n], scalars: (0..<n).map { i in i % 7 == 0 || i == n - 1 ? .nan : Float(i % 5) - 2 })
        let relu = ReLU()
        let y = try relu.forward(x).scalars
        let dx = try relu.backward(Tensor(shape: [1, n], repeating: 1)).scalars
        for i in 0..<n {
            let expected: Float = y[i].isNaN || y[i] > 0 ? 1 : 0
            #expect(dx[i] == expected && y[i].isNaN == x[i].isNaN, "i \(i): x \(x[i]) y \(y[i]) dx \(dx[i])")
            if dx[i] != expected { break }
        }
    }

    @Test func sigmoid() throws {
        try GradientCheck.check(Sigmoid(), input: GradientCheck.random([2, 3, 4], scale: 3, seed: 12))
    }

    /// Distinct values at least 0.05 apart, so no window has a near-tie.
    static func spread(_ shape: [Int], seed: UInt64) -> Tensor {
        var rng = SeededGenerator(seed: seed)
        let n = shape.reduce(1, *)
        return try! Tensor(shape: shape, scalars: (0..<n).map { Float($0) * 0.05 }.shuffled(using: &rng))
    }

    @Test func maxPool2d() throws {
        try GradientCheck.check(try MaxPool2d(kernelSize: 3, stride: 2, padding: 1), input: Self.spread([2, 2, 7, 6], seed: 13))
        try GradientCheck.check(try MaxPool2d(kernelSize: 2), input: Self.spread([1, 2, 4, 5], seed: 14))
    }

    /// Dilated windows that fall between the input's pixels are refused, not read past the plane.
    /// Sizes whose products would overflow are refused when the layer is made or run; an
    /// empty batch pools to an empty gradient; a gradient of another shape is refused.
    @Test func poolingAndWindowsRefuseSizesThatOverflow() throws {
        var rng = SeededGenerator(seed: 2)
        #expect(throws: BLASNetError.self) { try Conv2d(1, 1, kernelSize: 3, padding: 1 << 40, rng: &rng) }
        #expect(throws: BLASNetError.self) { try Conv2d(1, 1, kernelSize: 3, dilation: Int.max / 2, rng: &rng) }
        #expect(throws: BLASNetError.self) { try MaxPool2d(kernelSize: 3, padding: Int.max / 2) }
        #expect(throws: BLASNetError.self) { try AdaptiveAvgPool2d(1 << 32).forward(Tensor(shape: [2, 1, 3, 3])) }
        // Each size in range, outputs of terabytes: refused by name where Swift's allocation trapped.
        // (Pooling windows cannot: their padding is at most half the kernel.)
        for (layer, error) in [(try Conv2d(64, 64, kernelSize: 1, padding: 1 << 16, rng: &rng) as any Module, "output [64, 1, 131074, 131074]:"),
                               (try Conv2d(1, 1, kernelSize: 1024, padding: 1011, rng: &rng), "column matrix [1048576, 1002001] of one image:"),
                               (try AdaptiveAvgPool2d(1 << 20), "output [64 × 1048576², 1]:")] {
            let input = Tensor(shape: [(layer as? Conv2d)?.inChannels ?? 64, 1, 2, 2])
            let message = #expect(throws: BLASNetError.self) { try layer.forward(input) }
            #expect(message.map { "\($0)" }?.contains(error) == true, "\(String(describing: message))")
            #expect(message.map { "\($0)" }?.contains("GB, more than the") == true)
        }
        #expect(throws: BLASNetError.self) { try SEBlock.reducedChannels(64, divisor: 0) }
        #expect(throws: BLASNetError.self) { try SEBlock.reducedChannels(64, ratio: .nan) }
        #expect(throws: BLASNetError.self) { try SEBlock.reducedChannels(Int.max) }
        let pool = try MaxPool2d(kernelSize: 2)
        _ = try pool.forward(Tensor(shape: [3, 0, 4, 4]))
        #expect(try pool.backward(Tensor(shape: [3, 0, 2, 2])).shape == [3, 0, 4, 4])
        _ = try pool.forward(GradientCheck.random([3, 2, 4, 4], seed: 3))
        #expect(throws: BLASNetError.self) { try pool.backward(Tensor(shape: [2, 3, 2, 2])) }
    }

    @Test func maxPoolRefusesAWindowWithNoTapInside() throws {
        let pool = try MaxPool2d(kernelSize: 2, stride: 2, padding: 1, dilation: 3)
        #expect(throws: BLASNetError.self) { try pool.forward(Self.spread([1, 1, 2, 2], seed: 15)) }
        #expect(throws: BLASNetError.self) { try pool.forward(Self.spread([1, 1, 6, 2], seed: 15)) }
        try GradientCheck.check(pool, input: Self.spread([2, 1, 6, 5], seed: 16))
    }

    @Test func maxPoolInteriorWindowsAreTheUnclippedOnes() {
        // Every output index inside `interior` has the unclipped window span works out;
        // every one outside it is clipped.
        for kernel in 1...5 { for stride in 1...3 { for dilation in 1...2 { for padding in 0...kernel / 2 { for size in 1...12 {
            let w = Window(kernel: kernel, stride: stride, padding: padding, dilation: dilation)
            let outSize = w.outputSize(h: size, w: size).h
            let inner = Kernels.interior(stride: stride, padding: padding, kernel: kernel, dilation: dilation, size: size,
                                         outSize: outSize)
            for o in 0..<outSize {
                let s = Kernels.span(o, stride: stride, padding: padding, kernel: kernel, dilation: dilation, size: size)
                let unclipped = s.first == 0 && s.last == kernel
                #expect(inner.contains(o) == unclipped, "k \(kernel) s \(stride) d \(dilation) p \(padding) size \(size) o \(o)")
            }
        } } } } }
    }

    @Test func maxPoolTakesTheFirstMaximumAndTheLastNaN() throws {
        // Windows 2×2, stride 1, over one 3×3 plane: ties go to the first in the window,
        // as in PyTorch, and a NaN wins over every number.
        let pool = try MaxPool2d(kernelSize: 2, stride: 1)
        let x = try Tensor(shape: [1, 1, 3, 3], scalars: [1, 3, 3, 3, 2, .nan, 0, 3, 1])
        let y = try pool.forward(x).scalars
        #expect(y[0] == 3 && y[1].isNaN && y[2] == 3 && y[3].isNaN, "\(y)")
        let dx = try pool.backward(Tensor(shape: [1, 1, 2, 2], scalars: [1, 10, 100, 1000])).scalars
        #expect(dx == [0, 1, 0, 100, 0, 1010, 0, 0, 0])
        // Infinities of both signs and no NaN: the largest still wins.
        let infinite = try pool.forward(Tensor(shape: [1, 1, 2, 2], scalars: [-.infinity, 1, .infinity, 2])).scalars
        #expect(infinite == [.infinity])
        // Of two NaNs the last wins, as PyTorch's CPU kernel: max_pool2d(3) of this plane has index 8.
        let twoNaNs = try MaxPool2d(kernelSize: 3)
        _ = try twoNaNs.forward(Tensor(shape: [1, 1, 3, 3], scalars: [.nan, 0, 0, 0, 0, 0, 0, 0, .nan]))
        #expect(try twoNaNs.backward(Tensor(shape: [1, 1, 1, 1], scalars: [1])).scalars == [0, 0, 0, 0, 0, 0, 0, 0, 1])
    }

    /// The stem's pool (3×3, stride 2, padding 1) on rows wide enough for its eight-window
    /// vectors, against the windows written out: few distinct values, so that windows
    /// tie, and NaNs and infinities of both signs, which send a vector of windows back to
    /// the scalar rule. The backward scatter shows which input won each window.
    @Test(arguments: [22, 23, 40, 41])
    func stride2MaxPoolMatchesTheWrittenOutWindows(width: Int) throws {
        let (planes, height) = (3, 9), (oh, ow) = (5, (width + 1) / 2)
        let scalars = (0..<(planes * height * width)).map { i -> Float in
            if i % 97 == 50 { return .nan }
            if i % 89 == 40 { return .infinity }
            return i % 83 == 30 ? -.infinity : Float(i * 7919 % 5)
        }
        let pool = try MaxPool2d(kernelSize: 3, stride: 2, padding: 1)
        let y = try pool.forward(Tensor(shape: [1, planes, height, width], scalars: scalars)).scalars
        let dy = (0..<(planes * oh * ow)).map { Float($0 + 1) }
        let dx = try pool.backward(Tensor(shape: [1, planes, oh, ow], scalars: dy)).scalars
        var expectedDx = [Float](repeating: 0, count: scalars.count)
        for p in 0..<planes { for i in 0..<oh { for j in 0..<ow {
            var winner: Int?
            for r in max(0, 2 * i - 1)..<min(height, 2 * i + 2) { for c in max(0, 2 * j - 1)..<min(width, 2 * j + 2) {
                let index = (p * height + r) * width + c
                guard let w = winner else { winner = index; continue }
                if scalars[index].isNaN || scalars[index] > scalars[w] { winner = index }
            } }
            let o = (p * oh + i) * ow + j, want = scalars[winner!]
            #expect(y[o] == want || (y[o].isNaN && want.isNaN), "plane \(p) window (\(i), \(j))")
            expectedDx[winner!] += dy[o]
        } } }
        #expect(dx == expectedDx)
    }

    @Test func avgPool2d() throws {
        try GradientCheck.check(try AvgPool2d(kernelSize: 3, stride: 2, padding: 1), input: GradientCheck.random([2, 2, 7, 6], seed: 15))
        try GradientCheck.check(try AvgPool2d(kernelSize: 2), input: GradientCheck.random([1, 2, 5, 5], seed: 16))
    }

    @Test func avgPoolCountsPaddingLikePyTorch() throws {
        // torch.nn.AvgPool2d(3, 2, 1)(torch.ones(1, 1, 4, 4)) = [[4/9, 6/9], [6/9, 1]].
        let y = try AvgPool2d(kernelSize: 3, stride: 2, padding: 1).forward(Tensor(shape: [1, 1, 4, 4], repeating: 1))
        for (got, want) in zip(y.scalars, [4 / 9, 6 / 9, 6 / 9, 1] as [Float]) { #expect(abs(got - want) < 1e-6) }
    }

    @Test func adaptiveAvgPoolAndFlatten() throws {
        try GradientCheck.check(try AdaptiveAvgPool2d(), input: GradientCheck.random([3, 2, 4, 5], seed: 17))
        // Grids that do not divide the map have overlapping bins, whose gradients add up.
        try GradientCheck.check(try AdaptiveAvgPool2d(2), input: GradientCheck.random([3, 2, 3, 5], seed: 19))
        try GradientCheck.check(try AdaptiveAvgPool2d(3), input: GradientCheck.random([2, 3, 4, 7], seed: 20))
        try GradientCheck.check(Flatten(), input: GradientCheck.random([3, 2, 2, 3], seed: 18))
    }

    /// PyTorch's head `pool, flatten, linear` composes although the pool already flattens:
    /// `torch.flatten(x, 1)` of `[N, F]` is itself, and so is Flatten of `[F, N]`.
    @Test func flattenPassesFeatureVectorsThrough() throws {
        var rng = SeededGenerator(seed: 21)
        let x = GradientCheck.random([3, 2, 4, 5], seed: 22)
        let head = Sequential([try AdaptiveAvgPool2d(), Flatten(), try Linear(3, 4, rng: &rng)])
        let pooled = try AdaptiveAvgPool2d().forward(x)
        #expect(try Flatten().forward(pooled).scalars == pooled.scalars)
        #expect(try head.forward(x).shape == [4, 2])
        try GradientCheck.check(head, input: x)
        #expect(throws: BLASNetError.self) { try Flatten().forward(Tensor(shape: [2, 3, 4])) }
    }

    @Test func adaptiveAvgPoolUsesPyTorchsBinsAndHeadOrder() throws {
        // torch.nn.functional.adaptive_avg_pool2d(torch.arange(9.).view(1, 1, 3, 3), 2) = [[2, 3], [5, 6]]
        // (overlapping bins rows/columns 0..<2 and 1..<3). Plane (c, n) here is that plus 100c + 10n.
        let (channels, batch) = (2, 2)
        let x = try Tensor(shape: [channels, batch, 3, 3], scalars: (0..<channels * batch).flatMap { p in
            (0..<9).map { Float($0 + 100 * (p / batch) + 10 * (p % batch)) }
        })
        let y = try AdaptiveAvgPool2d(2).forward(x)
        // torch.flatten(·, 1) order: feature c·4 + i·2 + j, one column per sample.
        #expect(y.shape == [channels * 4, batch])
        for c in 0..<channels {
            for (k, bin) in [2, 3, 5, 6].enumerated() {
                for n in 0..<batch { #expect(y.scalars[(c * 4 + k) * batch + n] == Float(bin + 100 * c + 10 * n)) }
            }
        }
        // adaptive_avg_pool2d(torch.arange(15.).view(1, 1, 3, 5), 3): bins of 1 row by 2 or 3 columns.
        let wide = try AdaptiveAvgPool2d(3).forward(Tensor(shape: [1, 1, 3, 5], scalars: (0..<15).map(Float.init)))
        #expect(wide.scalars == [0.5, 2, 3.5, 5.5, 7, 8.5, 10.5, 12, 13.5])
        #expect(throws: BLASNetError.self) { try AdaptiveAvgPool2d(0) }
    }

    @Test func flattenUsesPyTorchOrder() throws {
        // Channel-major [C=2, N=2, H=1, W=2]: sample n's features are (c0w0, c0w1, c1w0, c1w1).
        let x = try Tensor(shape: [2, 2, 1, 2], scalars: [0, 1, 10, 11, 100, 101, 110, 111])
        let y = try Flatten().forward(x)
        #expect(y.shape == [4, 2])
        #expect(y.scalars == [0, 10, 1, 11, 100, 110, 101, 111])
    }

    @Test func seBlock() throws {
        var rng = SeededGenerator(seed: 19)
        try GradientCheck.checkDirectional(try SEBlock(32, rng: &rng), input: GradientCheck.random([32, 2, 3, 3], seed: 20))
    }

    // Blocks are checked in inference mode: with batch statistics, every ReLU kink a
    // finite step crosses also moves its channel's mean and variance, and float32
    // differences stop converging. Training-mode blocks are covered by BatchNorm's
    // own check above and by the PyTorch parity fixtures.
    @Test(arguments: [false, true])
    func basicBlock(squeezeExcitation: Bool) throws {
        var rng = SeededGenerator(seed: 21)
        let block = try BasicBlock.block(inChannels: 8, planes: 16, stride: 2, squeezeExcitation: squeezeExcitation,
                                         workspace: Workspace(), rng: &rng)
        block.eval()
        try GradientCheck.checkDirectional(block, input: GradientCheck.random([8, 2, 5, 4], seed: 22), h: 3e-3, floor: 5e-3)
    }

    @Test(arguments: [false, true])
    func bottleneck(squeezeExcitation: Bool) throws {
        var rng = SeededGenerator(seed: 23)
        let block = try Bottleneck.block(inChannels: 16, planes: 8, stride: 1, squeezeExcitation: squeezeExcitation,
                                         workspace: Workspace(), rng: &rng)
        block.eval()
        try GradientCheck.checkDirectional(block, input: GradientCheck.random([16, 2, 4, 4], seed: 24), h: 3e-3, floor: 5e-3)
    }

    /// A branch whose input gradient has another shape than the shortcut's (here a
    /// convolution told not to propagate one) is an error, where the addition trapped.
    @Test func residualBlockRefusesABranchGradientOfAnotherShape() throws {
        var rng = SeededGenerator(seed: 26)
        let conv = try Conv2d(4, 4, kernelSize: 3, padding: 1, bias: false, rng: &rng)
        conv.propagatesInputGradient = false
        let block = ResidualBlock(branch: [("conv", conv)], se: nil, downsample: nil)
        let y = try block.forward(GradientCheck.random([4, 2, 5, 5], seed: 27))
        let error = #expect(throws: BLASNetError.self) { try block.backward(Tensor(shape: y.shape, repeating: 1)) }
        #expect(error.map { "\($0)" }?.contains("the branch's input gradient: expected input [4, 2, 5, 5], got [0]") == true)
    }

    @Test func wholeSEResNet() throws {
        let model = try ResNet(.seresnet18, numClasses: 5, inChannels: 2, stem: .cifar, width: 8, seed: 3)
        // timm's initialization zeroes each block's last γ, which would cut every branch out of the check.
        for (name, p) in model.namedParameters() where name.hasSuffix("bn2.weight") {
            p.value = Tensor(shape: p.value.shape, repeating: 1)
        }
        model.eval()
        let targets = [1, 4, 0]
        // The loss is summed in Float64 from the logits so that its own rounding does not
        // swamp the differences; the gradient fed back is CrossEntropyLoss's.
        try GradientCheck.checkDirectional(model, input: GradientCheck.random([3, 2, 9, 7], seed: 25), directions: 4,
                                           h: 1e-3, tolerance: 5e-2, checkInput: false) { logits in
            let k = logits.shape[1]
            let loss = targets.enumerated().reduce(0.0) { total, item in
                let row = logits.scalars[(item.offset * k)..<((item.offset + 1) * k)].map(Double.init)
                return total + log(row.reduce(0) { $0 + exp($1) }) - row[item.element]
            } / Double(targets.count)
            return (loss, try CrossEntropyLoss()(logits, targets: targets).gradient)
        }
    }
}
