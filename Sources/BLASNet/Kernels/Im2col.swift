/// The geometry of one convolution over a channel-major batch `[C, N, H, W]`.
struct ConvGeometry {
    var channels: Int, batch: Int, height: Int, width: Int
    var window: Window
    var outHeight: Int, outWidth: Int

    init(channels: Int, batch: Int, height: Int, width: Int, window: Window) {
        (self.channels, self.batch, self.height, self.width, self.window) = (channels, batch, height, width, window)
        (outHeight, outWidth) = window.outputSize(h: height, w: width)
    }

    /// Rows of the column matrix: one per (input channel, kernel row, kernel column).
    var columnRows: Int { channels * window.kernel.h * window.kernel.w }
    /// Columns of the column matrix: one per output position of the whole batch.
    var columnCount: Int { batch * outHeight * outWidth }
    /// Output positions of one image.
    var outPlane: Int { outHeight * outWidth }
}

extension Kernels {
    /// Smallest integer ≥ a / b for b > 0 and any sign of a.
    @inline(__always)
    private static func ceilDiv(_ a: Int, _ b: Int) -> Int {
        a >= 0 ? (a + b - 1) / b : -((-a) / b)
    }

    /// Output columns whose input column `ow·stride + offset` lies inside `0..<width`.
    @inline(__always)
    private static func validRange(offset: Int, stride: Int, size: Int, outSize: Int) -> Range<Int> {
        let lo = min(outSize, max(0, ceilDiv(-offset, stride)))
        let hi = max(lo, min(outSize, ceilDiv(size - offset, stride)))
        return lo..<hi
    }

    /// Visits every (column-matrix row, image plane, output row) of the column matrix of
    /// `images` for the column-matrix rows (input channel, kernel tap) `rows`, with the
    /// pointers both directions need; `body(colRow, plane, inputRow, validColumns,
    /// inputColumnOffset)` receives `inputRow == nil` where the kernel row falls in the padding.
    ///
    /// Callers pass `body` as a literal inside their `parallelFor` closure, so the whole
    /// nest inlines into one loop; a closure handed through `parallelFor` instead costs
    /// an indirect call per output row, which made im2col a third of a small model's step.
    @inline(__always)
    private static func forEachColumnRow(
        _ g: ConvGeometry, rows: Range<Int>, images: Range<Int>,
        _ body: (_ colRow: Int, _ plane: Int, _ inputRow: Int?, _ valid: Range<Int>, _ columnOffset: Int) -> Void
    ) {
        let w = g.window
        for row in rows {
            let (c, ki, kj) = w.tap(row)
            let rowOffset = ki * w.dilation.h - w.padding.h
            let columnOffset = kj * w.dilation.w - w.padding.w
            let valid = validRange(offset: columnOffset, stride: w.stride.w, size: g.width, outSize: g.outWidth)
            for n in images {
                let plane = c * g.batch + n
                for oh in 0..<g.outHeight {
                    let ih = oh * w.stride.h + rowOffset
                    let colRow = (row * images.count + n - images.lowerBound) * g.outHeight + oh
                    body(colRow, plane, (0..<g.height).contains(ih) ? ih : nil, valid, columnOffset)
                }
            }
        }
    }

    /// Lays every receptive field of `images` of `x: [C, N, H, W]` out as a column:
    /// `col: [C·kh·kw, images·Ho·Wo]`, so the convolution becomes one sgemm. The rows are
    /// split over the workers, not the channels: a stem has one to three input channels.
    static func im2col(_ x: UnsafePointer<Float>, _ col: UnsafeMutablePointer<Float>, _ g: ConvGeometry, images: Range<Int>) {
        if g.window.stride == (1, 1) && g.window.dilation == (1, 1) && (g.outHeight, g.outWidth) == (g.height, g.width) {
            return im2colSameSize(x, col, g, images: images)
        }
        parallelFor(g.columnRows, (x, col, g, images)) { rows, captures in
            let (x, col, g, images) = captures
            let ow = g.outWidth, sw = g.window.stride.w, planeSize = g.height * g.width
            forEachColumnRow(g, rows: rows, images: images) { colRow, plane, ih, valid, offset in
                // Rows are short (7 to 56 floats): plain loops beat memset/memmove calls.
                let dst = col + colRow * ow
                guard let ih else {
                    for o in 0..<ow { dst[o] = 0 }
                    return
                }
                for o in 0..<valid.lowerBound { dst[o] = 0 }
                for o in valid.upperBound..<ow { dst[o] = 0 }
                let src = x + plane * planeSize + ih * g.width + offset
                switch sw {
                case 1:
                    for o in valid { dst[o] = src[o] }
                case 2:
                    // The even entries of 16 consecutive inputs are eight outputs; a scalar
                    // gather costs a load per float. The last output stays scalar, so no
                    // load reads past the row.
                    var o = valid.lowerBound
                    while o + 8 < valid.upperBound {
                        let pairs = UnsafeRawPointer(src + 2 * o).loadUnaligned(as: SIMD16<Float>.self)
                        UnsafeMutableRawPointer(dst + o).storeBytes(of: pairs.evenHalf, as: SIMD8<Float>.self)
                        o += 8
                    }
                    for o in o..<valid.upperBound { dst[o] = src[2 * o] }
                default:
                    for o in valid { dst[o] = src[o * sw] }
                }
            }
        }
    }

    /// im2col for stride-1 convolutions whose output has the input's size (3×3 with
    /// padding 1, the bulk of a ResNet). Then a kernel tap's column block for one image
    /// is the input plane shifted by `rowOffset·W + columnOffset`: one contiguous copy,
    /// after which only the columns that wrapped around from the neighbouring row (and
    /// the rows that fell into the padding) are zeroed. Copying row by row instead runs
    /// scalar on rows of 7 to 28 floats and took a third of a small model's step.
    private static func im2colSameSize(_ x: UnsafePointer<Float>, _ col: UnsafeMutablePointer<Float>, _ g: ConvGeometry,
                                       images: Range<Int>) {
        parallelFor(g.columnRows, (x, col, g, images)) { columnRows, captures in
            let (x, col, g, images) = captures
            let (h, w, win) = (g.height, g.width, g.window)
            let planeSize = h * w
            for row in columnRows {
                let (c, ki, kj) = win.tap(row)
                let rowOffset = ki - win.padding.h, columnOffset = kj - win.padding.w
                // Empty when the padding is wider than the input (a 5×5 kernel on a 1-pixel row).
                let rows = clipped(-rowOffset..<h - rowOffset, to: h)
                let valid = clipped(-columnOffset..<w - columnOffset, to: w)
                for n in images {
                    let dst = col + (row * images.count + n - images.lowerBound) * planeSize
                    let plane = x + (c * g.batch + n) * planeSize
                    dst.update(repeating: 0, count: rows.lowerBound * w)
                    (dst + rows.upperBound * w).update(repeating: 0, count: (h - rows.upperBound) * w)
                    // Output positions rows × 0..<w read the plane from `first` on; clip the
                    // ends that fall outside it (they are wrapped columns, zeroed below).
                    let first = (rows.lowerBound + rowOffset) * w + columnOffset
                    let lo = max(0, -first), hi = min(rows.count * w, planeSize - first)
                    (dst + rows.lowerBound * w + lo).update(from: plane + first + lo, count: max(0, hi - lo))
                    // Column by column: a strided store per row, where a loop along each
                    // row would become a memset call for one or two floats.
                    for o in 0..<valid.lowerBound { for r in rows { dst[r * w + o] = 0 } }
                    for o in valid.upperBound..<w { for r in rows { dst[r * w + o] = 0 } }
                }
            }
        }
    }

    /// `range ∩ 0..<size`, empty (and still inside `0...size`) when they do not meet.
    @inline(__always)
    private static func clipped(_ range: Range<Int>, to size: Int) -> Range<Int> {
        let lower = min(max(range.lowerBound, 0), size)
        return lower..<max(lower, min(range.upperBound, size))
    }

    /// The adjoint of ``im2col(_:_:_:images:)``: adds every column entry of `images`
    /// back into the position of `dx: [C, N, H, W]` it was copied from. Each worker owns
    /// its input channels' planes.
    static func col2im(_ col: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>, _ g: ConvGeometry, images: Range<Int>) {
        parallelFor(g.channels, (col, dx, g, images)) { channels, captures in
            let (col, dx, g, images) = captures
            let ow = g.outWidth, sw = g.window.stride.w, planeSize = g.height * g.width
            let taps = g.window.kernel.h * g.window.kernel.w
            forEachColumnRow(g, rows: channels.lowerBound * taps..<channels.upperBound * taps,
                             images: images) { colRow, plane, ih, valid, offset in
                guard let ih else { return }
                let src = col + colRow * ow
                let dst = dx + plane * planeSize + ih * g.width + offset
                var o = valid.lowerBound
                if sw == 2 {
                    // Stride 2 adds to every other input: eight column entries, interleaved
                    // with zeros, into 16 consecutive floats (bounded as in im2col).
                    while o + 8 < valid.upperBound {
                        var add = SIMD16<Float>()
                        add.evenHalf = UnsafeRawPointer(src + o).loadUnaligned(as: SIMD8<Float>.self)
                        let target = UnsafeMutableRawPointer(dst + 2 * o)
                        target.storeBytes(of: target.loadUnaligned(as: SIMD16<Float>.self) + add, as: SIMD16<Float>.self)
                        o += 8
                    }
                }
                for o in o..<valid.upperBound { dst[o * sw] += src[o] }
            }
        }
    }

    /// `flipped[c, k, i] = w[k, c, size − 1 − i]` over the `size` taps of each kernel:
    /// the weights of the transposed convolution.
    static func flipKernels(_ w: UnsafePointer<Float>, _ flipped: UnsafeMutablePointer<Float>,
                            outChannels: Int, inChannels: Int, kernelSize: Int) {
        for k in 0..<outChannels {
            for c in 0..<inChannels {
                let src = w + (k * inChannels + c) * kernelSize, dst = flipped + (c * outChannels + k) * kernelSize
                for i in 0..<kernelSize { dst[i] = src[kernelSize - 1 - i] }
            }
        }
    }
}

/// Consecutive runs of `size` images over a batch, the last one shorter if need be.
struct ImageChunks: Sequence, IteratorProtocol {
    let batch: Int
    let size: Int
    private var start = 0

    init(batch: Int, size: Int) {
        (self.batch, self.size) = (batch, size)
    }

    mutating func next() -> Range<Int>? {
        guard start < batch else { return nil }
        defer { start += size }
        return start..<Swift.min(start + size, batch)
    }
}
