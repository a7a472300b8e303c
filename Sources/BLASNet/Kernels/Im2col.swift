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
    /// `images` with the pointers both directions need;
    /// `body(colRow, plane, inputRow, validColumns, inputColumnOffset)` receives
    /// `inputRow == nil` where the kernel row falls in the padding. Input channels are
    /// split over the workers: each owns its rows and its input planes.
    @inline(__always)
    private static func forEachColumnRow(
        _ g: ConvGeometry, images: Range<Int>,
        _ body: (_ colRow: Int, _ plane: Int, _ inputRow: Int?, _ valid: Range<Int>, _ columnOffset: Int) -> Void
    ) {
        parallelFor(g.channels) { channels in forEachColumnRow(g, channels: channels, images: images, body) }
    }

    @inline(__always)
    private static func forEachColumnRow(
        _ g: ConvGeometry, channels: Range<Int>, images: Range<Int>,
        _ body: (_ colRow: Int, _ plane: Int, _ inputRow: Int?, _ valid: Range<Int>, _ columnOffset: Int) -> Void
    ) {
        let w = g.window
        for c in channels {
            for ki in 0..<w.kernel.h {
                let rowOffset = ki * w.dilation.h - w.padding.h
                for kj in 0..<w.kernel.w {
                    let columnOffset = kj * w.dilation.w - w.padding.w
                    let valid = validRange(offset: columnOffset, stride: w.stride.w, size: g.width, outSize: g.outWidth)
                    let row = (c * w.kernel.h + ki) * w.kernel.w + kj
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
        }
    }

    /// Lays every receptive field of `images` of `x: [C, N, H, W]` out as a column:
    /// `col: [C·kh·kw, images·Ho·Wo]`, so the convolution becomes one sgemm.
    static func im2col(_ x: UnsafePointer<Float>, _ col: UnsafeMutablePointer<Float>, _ g: ConvGeometry, images: Range<Int>) {
        let ow = g.outWidth, sw = g.window.stride.w, planeSize = g.height * g.width
        forEachColumnRow(g, images: images) { colRow, plane, ih, valid, offset in
            let dst = col + colRow * ow
            guard let ih else {
                dst.update(repeating: 0, count: ow)
                return
            }
            dst.update(repeating: 0, count: valid.lowerBound)
            (dst + valid.upperBound).update(repeating: 0, count: ow - valid.upperBound)
            let src = x + plane * planeSize + ih * g.width + offset
            if sw == 1 {
                (dst + valid.lowerBound).update(from: src + valid.lowerBound, count: valid.count)
            } else {
                for o in valid { dst[o] = src[o * sw] }
            }
        }
    }

    /// The adjoint of ``im2col(_:_:_:images:)``: adds every column entry of `images`
    /// back into the position of `dx: [C, N, H, W]` it was copied from.
    static func col2im(_ col: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>, _ g: ConvGeometry, images: Range<Int>) {
        let ow = g.outWidth, sw = g.window.stride.w, planeSize = g.height * g.width
        forEachColumnRow(g, images: images) { colRow, plane, ih, valid, offset in
            guard let ih else { return }
            let src = col + colRow * ow
            let dst = dx + plane * planeSize + ih * g.width + offset
            for o in valid { dst[o * sw] += src[o] }
        }
    }
}
