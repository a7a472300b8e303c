/// Loops over uint8 images `[N, C, H, W]`: dataset statistics and batch preparation.
///
/// These run on one thread: batch preparation runs beside the training step on the
/// data loader's thread, where splitting it over the BLAS workers would take cores
/// from the sgemms it is meant to overlap with.
extension Kernels {
    /// Per-channel sums of the pixels and of their squares over `images` images.
    static func channelSums(_ pixels: UnsafePointer<UInt8>, images: Int, channels: Int, planeSize: Int,
                            sums: UnsafeMutablePointer<UInt64>, squares: UnsafeMutablePointer<UInt64>) {
        for n in 0..<images {
            for c in 0..<channels {
                let p = pixels + (n * channels + c) * planeSize
                var s: UInt64 = 0, q: UInt64 = 0
                for i in 0..<planeSize {
                    let v = UInt64(p[i])
                    s &+= v
                    q &+= v * v
                }
                sums[c] &+= s
                squares[c] &+= q
            }
        }
    }

    /// Sets `rectangle` of every channel of one normalized image `[C, H, W]` to 0.
    static func erase(_ image: UnsafeMutablePointer<Float>, channels: Int, height: Int, width: Int, _ rectangle: ErasedRectangle) {
        for c in 0..<channels {
            for y in rectangle.y..<(rectangle.y + rectangle.height) {
                (image + (c * height + y) * width + rectangle.x).update(repeating: 0, count: rectangle.width)
            }
        }
    }

    /// One image as normalized floats: `dst[c, y, x] = table[c·256 + src[c, y', x']]`
    /// with `y' = y + shiftY` and `x' = x + shiftX`, or `x' = width − 1 − x + shiftX`
    /// when `flip` (a crop of the padded image, then a mirror). Source pixels outside
    /// the image read as pixel value 0: zero padding before normalization.
    static func normalizeImage(_ src: UnsafePointer<UInt8>, _ dst: UnsafeMutablePointer<Float>, table: UnsafePointer<Float>,
                               channels: Int, height: Int, width: Int, shiftY: Int, shiftX: Int, flip: Bool) {
        // The columns whose source lies inside the image are the same for every row.
        let lo = min(width, max(0, flip ? shiftX : -shiftX))
        let hi = max(lo, min(width, flip ? width + shiftX : width - shiftX))
        let mirror = width - 1 + shiftX
        for c in 0..<channels {
            let t = table + c * 256, pad = t[0]
            for y in 0..<height {
                let d = dst + (c * height + y) * width
                let sy = y + shiftY
                guard sy >= 0 && sy < height else {
                    d.update(repeating: pad, count: width)
                    continue
                }
                let s = src + (c * height + sy) * width
                d.update(repeating: pad, count: lo)
                if flip {
                    for x in lo..<hi { d[x] = t[Int(s[mirror - x])] }
                } else {
                    for x in lo..<hi { d[x] = t[Int(s[x + shiftX])] }
                }
                (d + hi).update(repeating: pad, count: width - hi)
            }
        }
    }
}
