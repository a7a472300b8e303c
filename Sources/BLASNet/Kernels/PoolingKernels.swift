/// Pooling over channel-major planes: `[C, N, H, W]` is `C·N` independent `H × W`
/// planes, split over the workers.
extension Kernels {
    /// Output index `o`'s window along one axis: its first input index `start`, and the
    /// first and one-past-last kernel taps (`first..<last`) that land inside `0..<size`.
    @inline(__always)
    static func span(_ o: Int, stride: Int, padding: Int, kernel: Int, dilation: Int, size: Int) -> (start: Int, first: Int, last: Int) {
        let start = o * stride - padding
        let first = start >= 0 ? 0 : (-start + dilation - 1) / dilation
        let last = min(kernel, (size - start + dilation - 1) / dilation)
        return (start, first, max(first, last))
    }

    /// Whether each of `outSize` windows along one axis has a tap inside `0..<size`, as
    /// ``maxPool`` needs (it starts from the first such tap). With dilation the input can
    /// fall between a window's taps.
    static func everyWindowHasATap(outSize: Int, stride: Int, padding: Int, kernel: Int, dilation: Int, size: Int) -> Bool {
        (0..<outSize).allSatisfy { o in
            let s = span(o, stride: stride, padding: padding, kernel: kernel, dilation: dilation, size: size)
            return s.first < s.last
        }
    }

    /// Output indices whose window lies wholly inside `0..<size`, where ``span`` is
    /// `(o·stride − padding, 0, kernel)` and needs none of its divisions.
    static func interior(stride: Int, padding: Int, kernel: Int, dilation: Int, size: Int, outSize: Int) -> Range<Int> {
        let lo = min(outSize, (padding + stride - 1) / stride)
        let last = size - 1 - (kernel - 1) * dilation + padding  // largest o·stride allowed
        return lo..<(last < 0 ? lo : max(lo, min(outSize, last / stride + 1)))
    }

    /// Max over each window; `argmax` receives the winning offset inside the plane
    /// (the first maximum, as PyTorch; a NaN wins, the last one if several), for the backward scatter.
    static func maxPool(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, argmax: UnsafeMutablePointer<Int32>,
                        planes: Int, height: Int, width: Int, window w: Window) {
        parallelFor(planes, grain: 4, (x, y, argmax, height, width, w)) { range, captures in
            let (x, y, argmax, height, width, w) = captures
            let (oh, ow) = w.outputSize(h: height, w: width)
            // Only windows at the edges are clipped: the rest skip span's integer divisions.
            let innerRows = interior(stride: w.stride.h, padding: w.padding.h, kernel: w.kernel.h, dilation: w.dilation.h, size: height, outSize: oh)
            let innerColumns = interior(stride: w.stride.w, padding: w.padding.w, kernel: w.kernel.w, dilation: w.dilation.w, size: width, outSize: ow)
            @inline(__always) func rowSpan(_ i: Int) -> (start: Int, first: Int, last: Int) {
                innerRows.contains(i) ? (i * w.stride.h - w.padding.h, 0, w.kernel.h)
                    : span(i, stride: w.stride.h, padding: w.padding.h, kernel: w.kernel.h, dilation: w.dilation.h, size: height)
            }
            @inline(__always) func columnSpan(_ j: Int) -> (start: Int, first: Int, last: Int) {
                innerColumns.contains(j) ? (j * w.stride.w - w.padding.w, 0, w.kernel.w)
                    : span(j, stride: w.stride.w, padding: w.padding.w, kernel: w.kernel.w, dilation: w.dilation.w, size: width)
            }
            // Stride-2 windows (the ResNet stem's pool) are taken eight at a time where no column is clipped.
            let vectorColumns = w.stride.w == 2 && w.dilation.w == 1 ? innerColumns : 0..<0
            for p in range {
                let src = x + p * height * width
                for i in 0..<oh {
                    let r = rowSpan(i), out = (p * oh + i) * ow
                    var j = 0
                    while j < ow {
                        // Bounded like im2col's gather: the 16 floats loaded for window j + 7 end
                        // before window j + 8's last tap, which lies inside the row.
                        if vectorColumns.contains(j) && j + 8 < vectorColumns.upperBound,
                           let (best, index) = maxOfEightWindows(src, rows: r, column: 2 * j - w.padding.w,
                                                                 kernelWidth: w.kernel.w, rowDilation: w.dilation.h, width: width) {
                            UnsafeMutableRawPointer(y + out + j).storeBytes(of: best, as: SIMD8<Float>.self)
                            UnsafeMutableRawPointer(argmax + out + j).storeBytes(of: index, as: SIMD8<Int32>.self)
                            // Past the last whole vector, one more that overlaps this one, rather
                            // than up to eight windows for the scalar loop.
                            let last = vectorColumns.upperBound - 9
                            j = j < last && j + 8 > last && j + 8 < vectorColumns.upperBound - 1 ? last : j + 8
                        } else {
                            (y[out + j], argmax[out + j]) = maxOfWindow(src, rows: r, columns: columnSpan(j),
                                                                        dilation: w.dilation, width: width)
                            j += 1
                        }
                    }
                }
            }
        }
    }

    /// The maximum of one window and its offset in the plane. Which tap wins is data, so
    /// the loop selects (integer moves) instead of branching; the first maximum wins, and
    /// among NaNs the last, as in PyTorch's CPU kernel (`val > max || isnan(val)`).
    @inline(__always)
    private static func maxOfWindow(_ src: UnsafePointer<Float>, rows r: (start: Int, first: Int, last: Int),
                                    columns c: (start: Int, first: Int, last: Int),
                                    dilation: (h: Int, w: Int), width: Int) -> (Float, Int32) {
        // Windows are never empty (MaxPool2d checks): start from the first tap.
        var bestIndex = (r.start + r.first * dilation.h) * width + c.start + c.first * dilation.w
        var best = src[bestIndex], probe: Float = 0
        for ki in r.first..<r.last {
            let rowBase = (r.start + ki * dilation.h) * width + c.start
            for kj in c.first..<c.last {
                let index = rowBase + kj * dilation.w
                let v = src[index]
                let wins = v > best
                best = Float(bitPattern: wins ? v.bitPattern : best.bitPattern)
                bestIndex = wins ? index : bestIndex
                // A NaN never wins a `>`, but poisons `probe`.
                probe += v
            }
        }
        if probe.isNaN {
            // Rare: a NaN (or infinities of both signs). The last NaN wins.
            for ki in r.first..<r.last {
                let rowBase = (r.start + ki * dilation.h) * width + c.start
                for kj in c.first..<c.last where src[rowBase + kj * dilation.w].isNaN {
                    bestIndex = rowBase + kj * dilation.w
                    best = src[bestIndex]
                }
            }
        }
        return (best, Int32(bestIndex))
    }

    /// ``maxOfWindow(_:rows:columns:dilation:width:)`` for eight unclipped stride-2 windows
    /// side by side, the first starting at `column`: each tap is one vector of the even
    /// lanes of 16 floats. Nil when a NaN (or infinities of both signs) needs the scalar rule.
    @inline(__always)
    private static func maxOfEightWindows(_ src: UnsafePointer<Float>, rows r: (start: Int, first: Int, last: Int),
                                          column: Int, kernelWidth: Int, rowDilation: Int, width: Int)
        -> (SIMD8<Float>, SIMD8<Int32>)? {
        @inline(__always) func tap(_ index: Int) -> SIMD8<Float> {
            UnsafeRawPointer(src + index).loadUnaligned(as: SIMD16<Float>.self).evenHalf
        }
        let lanes = SIMD8<Int32>(0, 2, 4, 6, 8, 10, 12, 14)
        var bestIndex = SIMD8<Int32>(repeating: Int32((r.start + r.first * rowDilation) * width + column)) &+ lanes
        var best = tap(Int(bestIndex[0])), probe = SIMD8<Float>()
        for ki in r.first..<r.last {
            let rowBase = (r.start + ki * rowDilation) * width + column
            for kj in 0..<kernelWidth {
                let v = tap(rowBase + kj)
                let wins = v .> best
                best.replace(with: v, where: wins)
                bestIndex.replace(with: SIMD8(repeating: Int32(rowBase + kj)) &+ lanes, where: wins)
                probe += v
            }
        }
        return any(probe .!= probe) ? nil : (best, bestIndex)
    }

    /// Routes each output gradient to the input that won its window. Overwrites `dx`.
    static func maxPoolBackward(_ dy: UnsafePointer<Float>, argmax: UnsafePointer<Int32>, _ dx: UnsafeMutablePointer<Float>,
                                planes: Int, planeSize: Int, outPlaneSize: Int) {
        parallelFor(planes, grain: 4, (dy, argmax, dx, planeSize, outPlaneSize)) { range, captures in
            let (dy, argmax, dx, planeSize, outPlaneSize) = captures
            for p in range {
                let g = dy + p * outPlaneSize, a = argmax + p * outPlaneSize, d = dx + p * planeSize
                d.update(repeating: 0, count: planeSize)
                for o in 0..<outPlaneSize { d[Int(a[o])] += g[o] }
            }
        }
    }

    /// PyTorch's averaging divisor with `count_include_pad = true`: the window clipped
    /// to the padded input, so windows never count beyond the padding.
    @inline(__always)
    private static func avgDivisor(_ i: Int, _ j: Int, height: Int, width: Int, _ w: Window) -> Float {
        let h0 = i * w.stride.h - w.padding.h, w0 = j * w.stride.w - w.padding.w
        let h1 = min(h0 + w.kernel.h, height + w.padding.h), w1 = min(w0 + w.kernel.w, width + w.padding.w)
        return Float((h1 - h0) * (w1 - w0))
    }

    /// Average over each window (padding counts as zeros in the divisor, PyTorch's default).
    static func avgPool(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                        planes: Int, height: Int, width: Int, window w: Window) {
        parallelFor(planes, grain: 4, (x, y, height, width, w)) { range, captures in
            let (x, y, height, width, w) = captures
            let (oh, ow) = w.outputSize(h: height, w: width)
            for p in range {
                let src = x + p * height * width
                for i in 0..<oh {
                    for j in 0..<ow {
                        let h0 = i * w.stride.h - w.padding.h, w0 = j * w.stride.w - w.padding.w
                        var sum: Float = 0
                        for ih in max(0, h0)..<min(height, h0 + w.kernel.h) {
                            for iw in max(0, w0)..<min(width, w0 + w.kernel.w) { sum += src[ih * width + iw] }
                        }
                        y[(p * oh + i) * ow + j] = sum / avgDivisor(i, j, height: height, width: width, w)
                    }
                }
            }
        }
    }

    /// Spreads each output gradient evenly over its window. Overwrites `dx`.
    static func avgPoolBackward(_ dy: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>,
                                planes: Int, height: Int, width: Int, window w: Window) {
        parallelFor(planes, grain: 4, (dy, dx, height, width, w)) { range, captures in
            let (dy, dx, height, width, w) = captures
            let (oh, ow) = w.outputSize(h: height, w: width)
            for p in range {
                let dst = dx + p * height * width
                dst.update(repeating: 0, count: height * width)
                for i in 0..<oh {
                    for j in 0..<ow {
                        let h0 = i * w.stride.h - w.padding.h, w0 = j * w.stride.w - w.padding.w
                        let g = dy[(p * oh + i) * ow + j] / avgDivisor(i, j, height: height, width: width, w)
                        for ih in max(0, h0)..<min(height, h0 + w.kernel.h) {
                            for iw in max(0, w0)..<min(width, w0 + w.kernel.w) { dst[ih * width + iw] += g }
                        }
                    }
                }
            }
        }
    }

    /// Visits the planes `planes` of `[C, N, H, W]` (a worker's share), calling `plane(p)`
    /// and then `bin(p, o, rows, columns)` for each of PyTorch's adaptive bins of plane `p`,
    /// `o` being where `flatten(·, 1)` of the `[N, C, grid, grid]` result puts the bin in
    /// `[C·grid², N]`. Bin `i` of `grid` over `size` positions is ⌊i·size/grid⌋ ..<
    /// ⌈(i+1)·size/grid⌉, so bins overlap when `grid` does not divide `size`.
    ///
    /// Callers split the `C·N` planes with ``adaptivePlaneGrain(height:width:)`` and pass
    /// `plane` and `bin` as literals inside their `parallelFor` closure, where they inline.
    @inline(__always)
    private static func forEachAdaptiveBin(_ planes: Range<Int>, batch: Int, height: Int, width: Int, grid: Int,
                                           plane: (Int) -> Void = { _ in }, _ bin: (Int, Int, Range<Int>, Range<Int>) -> Void) {
        func span(_ i: Int, _ size: Int) -> Range<Int> { (i * size / grid)..<(((i + 1) * size + grid - 1) / grid) }
        for p in planes {
            plane(p)
            let (c, n) = p.quotientAndRemainder(dividingBy: batch)
            for i in 0..<grid {
                let rows = span(i, height)
                for j in 0..<grid { bin(p, ((c * grid + i) * grid + j) * batch + n, rows, span(j, width)) }
            }
        }
    }

    /// Fewest `height × width` planes worth a worker in adaptive pooling.
    private static func adaptivePlaneGrain(height: Int, width: Int) -> Int {
        max(1, elementGrain / max(height * width, 1))
    }

    /// Mean of each adaptive bin: `[C, N, H, W] -> [C·grid², N]`.
    static func adaptiveAvgPool(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                                channels: Int, batch: Int, height: Int, width: Int, grid: Int) {
        parallelFor(channels * batch, grain: adaptivePlaneGrain(height: height, width: width),
                    (x, y, batch, height, width, grid)) { planes, captures in
            let (x, y, batch, height, width, grid) = captures
            forEachAdaptiveBin(planes, batch: batch, height: height, width: width, grid: grid) { p, o, rows, cols in
                let src = x + p * height * width
                // A bin as wide as the plane (grid 1) is one contiguous run.
                let total = cols.count == width
                    ? sum(src + rows.lowerBound * width, count: rows.count * width)
                    : rows.reduce(0) { $0 + sum(src + $1 * width + cols.lowerBound, count: cols.count) }
                y[o] = Float(total / Double(rows.count * cols.count))
            }
        }
    }

    /// Spreads each bin's gradient evenly over the bin (summing where bins overlap). Overwrites `dx`.
    static func adaptiveAvgPoolBackward(_ dy: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>,
                                        channels: Int, batch: Int, height: Int, width: Int, grid: Int) {
        parallelFor(channels * batch, grain: adaptivePlaneGrain(height: height, width: width),
                    (dy, dx, batch, height, width, grid)) { planes, captures in
            let (dy, dx, batch, height, width, grid) = captures
            let planeSize = height * width
            // One bin (every SE block's squeeze) covers the plane: fill it, no zeroing pass first.
            let single = grid == 1
            forEachAdaptiveBin(planes, batch: batch, height: height, width: width, grid: grid,
                               plane: { if !single { (dx + $0 * planeSize).update(repeating: 0, count: planeSize) } }) { p, o, rows, cols in
                let g = dy[o] / Float(rows.count * cols.count)
                if single { return (dx + p * planeSize).update(repeating: g, count: planeSize) }
                for h in rows { for w in cols { dx[p * planeSize + h * width + w] += g } }
            }
        }
    }
}
