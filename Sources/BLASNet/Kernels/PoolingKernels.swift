/// Pooling over channel-major planes: `[C, N, H, W]` is `C·N` independent `H × W` planes.
extension Kernels {
    /// Max over each window; `argmax` receives the winning offset inside the plane
    /// (the first maximum, as PyTorch), for the backward scatter.
    static func maxPool(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, argmax: UnsafeMutablePointer<Int32>,
                        planes: Int, height: Int, width: Int, window w: Window) {
        let (oh, ow) = w.outputSize(h: height, w: width)
        for p in 0..<planes {
            let src = x + p * height * width
            for i in 0..<oh {
                for j in 0..<ow {
                    var best = -Float.infinity, bestIndex = Int32(-1)
                    for ki in 0..<w.kernel.h {
                        let ih = i * w.stride.h - w.padding.h + ki * w.dilation.h
                        guard ih >= 0, ih < height else { continue }
                        for kj in 0..<w.kernel.w {
                            let iw = j * w.stride.w - w.padding.w + kj * w.dilation.w
                            guard iw >= 0, iw < width else { continue }
                            let v = src[ih * width + iw]
                            if v > best || v.isNaN || bestIndex < 0 {
                                best = v
                                bestIndex = Int32(ih * width + iw)
                            }
                        }
                    }
                    let o = (p * oh + i) * ow + j
                    y[o] = best
                    argmax[o] = bestIndex
                }
            }
        }
    }

    /// Routes each output gradient to the input that won its window. Overwrites `dx`.
    static func maxPoolBackward(_ dy: UnsafePointer<Float>, argmax: UnsafePointer<Int32>, _ dx: UnsafeMutablePointer<Float>,
                                planes: Int, planeSize: Int, outPlaneSize: Int) {
        dx.update(repeating: 0, count: planes * planeSize)
        for p in 0..<planes {
            let g = dy + p * outPlaneSize, a = argmax + p * outPlaneSize, d = dx + p * planeSize
            for o in 0..<outPlaneSize { d[Int(a[o])] += g[o] }
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
        let (oh, ow) = w.outputSize(h: height, w: width)
        for p in 0..<planes {
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

    /// Spreads each output gradient evenly over its window. Overwrites `dx`.
    static func avgPoolBackward(_ dy: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>,
                                planes: Int, height: Int, width: Int, window w: Window) {
        let (oh, ow) = w.outputSize(h: height, w: width)
        dx.update(repeating: 0, count: planes * height * width)
        for p in 0..<planes {
            let dst = dx + p * height * width
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

    /// Mean of each plane: `[C, N, H, W] -> [C, N]`.
    static func planeMeans(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, planes: Int, planeSize: Int) {
        for p in 0..<planes {
            let src = x + p * planeSize
            var sum: Float = 0
            for i in 0..<planeSize { sum += src[i] }
            y[p] = sum / Float(planeSize)
        }
    }

    /// Each plane filled with its gradient divided by the plane size. Overwrites `dx`.
    static func planeMeansBackward(_ dy: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>, planes: Int, planeSize: Int) {
        for p in 0..<planes {
            (dx + p * planeSize).update(repeating: dy[p] / Float(planeSize), count: planeSize)
        }
    }
}
