/// Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray, "Fast Algorithms for
/// Convolutional Neural Networks", 2016) for 3×3 stride-1 convolutions.
///
/// The output is cut into 2×2 tiles. Each tile reads a 4×4 input patch `d`; with
/// `U = G·w·Gᵀ` (the 3×3 kernel taken to 4×4) and `V = Bᵀ·d·B`, the tile is
/// `Aᵀ·(U ⊙ V)·A`. Summed over input channels, the 16 products `U ⊙ V` are 16
/// independent sgemms `M_ξ[K, tiles] = U_ξ[K, C] · V_ξ[C, tiles]`: 16 multiply-adds per
/// tile and channel pair instead of im2col's 36, 2.25× fewer flops, and the transforms
/// write fewer floats than im2col's nine copies of the input.
///
/// The weight gradient is the same identity differentiated with respect to `w`:
/// `dW = Gᵀ·Σ_tiles (A·dY·Aᵀ) ⊙ (Bᵀ·d·B)·G`, again 16 sgemms, over the tiles.
///
/// The matrices (interpolation points 0, 1, −1, ∞) have entries 0, ±1 and ±½, so the
/// transforms add at most four terms and lose little accuracy against a direct sum.
extension ConvGeometry {
    /// Whether F(2×2, 3×3) computes this convolution: a 3×3 kernel, stride 1, no dilation.
    var allowsWinograd: Bool {
        window.kernel == (3, 3) && window.stride == (1, 1) && window.dilation == (1, 1)
    }

    var tileRows: Int { (outHeight + 1) / 2 }
    var tileColumns: Int { (outWidth + 1) / 2 }
    var tilesPerImage: Int { tileRows * tileColumns }
    /// Multiply-adds per 3×3 kernel (one output–input channel pair) that F(2×2, 3×3) saves
    /// over im2col on this batch.
    var winogradSavingsPerKernel: Int { batch * (9 * outPlane - 16 * tilesPerImage) }
}

extension Kernels {
    /// The 16 positions ξ = 4·a + j of a transformed tile.
    private static let positions = 16

    /// Floats of the zero-bordered band ``winogradInput(_:_:_:images:)`` copies each plane
    /// into (256 KiB a worker): whole planes up to about 250×250, bands of rows beyond.
    static let paddedBandFloats = 1 << 16

    /// Floats between consecutive positions of a `[ξ, rows, columns]` buffer holding
    /// `matrix` floats per position. A transform writes (or reads) all 16 positions of a
    /// tile at once; at power-of-two strides, common here (`64·64`, `256·256` tiles), those
    /// 16 streams share one cache set and evict each other, so each position is padded by
    /// one cache line.
    @inline(__always)
    static func positionStride(_ matrix: Int) -> Int { matrix + 16 }

    /// `y[K, N, Ho, Wo] = conv(x[C, N, H, W], w[K, C, 3, 3])` by F(2×2, 3×3), a chunk of
    /// images at a time so that the transformed tiles stay in cache between the
    /// transform and the sgemms. `scratch` holds the transformed kernel and one chunk.
    static func winogradConvolve(_ x: UnsafePointer<Float>, _ g: ConvGeometry, weights w: UnsafePointer<Float>,
                                 outputs: Int, into y: UnsafeMutablePointer<Float>,
                                 scratch: Workspace, chunkBytes: Int, minimumTiles: Int) {
        let (c, k) = (g.channels, outputs)
        let chunks = winogradChunks(g, outputs: k, chunkBytes: chunkBytes, minimumTiles: minimumTiles)
        let (kernelStride, inputStride, outputStride) = winogradStrides(c, k, tiles: chunks.maxTiles)
        let buffer = scratch.floats(positions * (kernelStride + inputStride + outputStride))
        let u = buffer, v = u + positions * kernelStride, m = v + positions * inputStride
        winogradKernels(w, u, outputs: k, inputs: c)
        for images in chunks.ranges {
            let tiles = images.count * g.tilesPerImage
            winogradInput(x, v, g, images: images)
            let shape = Profiler.GEMMShape(transA: false, transB: false, m: k, n: tiles, k: c, lda: c, ldb: tiles, ldc: tiles, beta: 0)
            BLAS.sgemmBatch(shape, count: positions, (shape, u, v, m, kernelStride, c, k, tiles)) { range, captures in
                let (shape, u, v, m, kernelStride, c, k, tiles) = captures
                for xi in range {
                    BLAS.serialSGEMM(shape, a: u + xi * kernelStride, b: v + xi * positionStride(c * tiles),
                                     c: m + xi * positionStride(k * tiles))
                }
            }
            winogradOutput(m, y, g, outputs: k, images: images)
        }
    }

    /// `dW[K, C, 3, 3] += ∂/∂w` of the convolution above, given `dy[K, N, Ho, Wo]`.
    static func winogradWeightGradient(_ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ g: ConvGeometry,
                                       outputs: Int, into dw: UnsafeMutablePointer<Float>,
                                       scratch: Workspace, chunkBytes: Int, minimumTiles: Int) {
        // No tiles, no sgemm to write the sums: nothing to add.
        guard g.batch > 0 else { return }
        let (c, k) = (g.channels, outputs)
        let chunks = winogradChunks(g, outputs: k, chunkBytes: chunkBytes, minimumTiles: minimumTiles)
        let (kernelStride, inputStride, outputStride) = winogradStrides(c, k, tiles: chunks.maxTiles)
        let buffer = scratch.floats(positions * (kernelStride + inputStride + outputStride))
        let m = buffer, v = m + positions * kernelStride, u = v + positions * inputStride
        for (index, images) in chunks.ranges.enumerated() {
            let tiles = images.count * g.tilesPerImage
            winogradInput(x, v, g, images: images)
            winogradOutputGradient(dy, u, g, outputs: k, images: images)
            let shape = Profiler.GEMMShape(transA: false, transB: true, m: k, n: c, k: tiles, lda: tiles, ldb: tiles, ldc: c,
                                           beta: index == 0 ? 0 : 1)
            BLAS.sgemmBatch(shape, count: positions, (shape, u, v, m, kernelStride, c, k, tiles)) { range, captures in
                let (shape, u, v, m, kernelStride, c, k, tiles) = captures
                for xi in range {
                    BLAS.serialSGEMM(shape, a: u + xi * positionStride(k * tiles), b: v + xi * positionStride(c * tiles),
                                     c: m + xi * kernelStride)
                }
            }
        }
        winogradKernelGradient(m, dw, outputs: k, inputs: c)
    }

    /// Position strides of the transformed kernels `[ξ, K, C]`, inputs `[ξ, C, tiles]` and
    /// outputs `[ξ, K, tiles]` for chunks of at most `tiles` tiles.
    private static func winogradStrides(_ c: Int, _ k: Int, tiles: Int) -> (kernels: Int, inputs: Int, outputs: Int) {
        (positionStride(k * c), positionStride(c * tiles), positionStride(k * tiles))
    }

    /// The batch in runs of whole images whose transformed input and output tiles take
    /// about `chunkBytes`, but at least `minimumTiles` tiles (the sgemms' columns), and the
    /// most tiles any run has.
    private static func winogradChunks(_ g: ConvGeometry, outputs: Int, chunkBytes: Int, minimumTiles: Int)
        -> (ranges: ImageChunks, maxTiles: Int) {
        let perImage = positions * (g.channels + outputs) * g.tilesPerImage * MemoryLayout<Float>.size
        let imagesForTiles = (minimumTiles + g.tilesPerImage - 1) / g.tilesPerImage
        let step = min(g.batch, max(1, chunkBytes / perImage, imagesForTiles))
        return (ImageChunks(batch: g.batch, size: step), step * g.tilesPerImage)
    }

    /// `u[ξ, K, C] = (G·w·Gᵀ)[ξ]` for every kernel of `w[K, C, 3, 3]`.
    private static func winogradKernels(_ w: UnsafePointer<Float>, _ u: UnsafeMutablePointer<Float>,
                                        outputs k: Int, inputs c: Int) {
        let stride = positionStride(k * c)
        parallelFor(k * c, grain: 4096, (w, u, stride)) { kernels, captures in
            let (w, u, stride) = captures
            for kc in kernels {
                let g = w + kc * 9
                // s_i = G·(row i of g), a row of g·Gᵀ; then G applied down the columns.
                @inline(__always) func row(_ i: Int) -> SIMD4<Float> {
                    let (a, b, e) = (g[3 * i], g[3 * i + 1], g[3 * i + 2])
                    return SIMD4(a, 0.5 * (a + b + e), 0.5 * (a - b + e), e)
                }
                let (s0, s1, s2) = (row(0), row(1), row(2))
                let t = (s0, 0.5 * (s0 + s1 + s2), 0.5 * (s0 - s1 + s2), s2)
                for j in 0..<4 {
                    u[j * stride + kc] = t.0[j]
                    u[(4 + j) * stride + kc] = t.1[j]
                    u[(8 + j) * stride + kc] = t.2[j]
                    u[(12 + j) * stride + kc] = t.3[j]
                }
            }
        }
    }

    /// `dw[K, C, 3, 3] += Gᵀ·m[·, k, c]·G` for the summed products `m[ξ, K, C]`.
    private static func winogradKernelGradient(_ m: UnsafePointer<Float>, _ dw: UnsafeMutablePointer<Float>,
                                               outputs k: Int, inputs c: Int) {
        let stride = positionStride(k * c)
        parallelFor(k * c, grain: 4096, (m, dw, stride)) { kernels, captures in
            let (m, dw, stride) = captures
            for kc in kernels {
                @inline(__always) func row(_ a: Int) -> SIMD4<Float> {
                    let p = m + 4 * a * stride + kc
                    return SIMD4(p[0], p[stride], p[2 * stride], p[3 * stride])
                }
                let (m0, m1, m2, m3) = (row(0), row(1), row(2), row(3))
                // Gᵀ down the columns, then along each row.
                let d = dw + kc * 9
                @inline(__always) func add(_ i: Int, _ t: SIMD4<Float>) {
                    d[3 * i] += t[0] + 0.5 * (t[1] + t[2])
                    d[3 * i + 1] += 0.5 * (t[1] - t[2])
                    d[3 * i + 2] += 0.5 * (t[1] + t[2]) + t[3]
                }
                add(0, m0 + 0.5 * (m1 + m2))
                add(1, 0.5 * (m1 - m2))
                add(2, 0.5 * (m1 + m2) + m3)
            }
        }
    }

    /// `v[ξ, C, tiles] = (Bᵀ·d·B)[ξ]` for the 4×4 patch `d` of every output tile of
    /// `images` of `x: [C, N, H, W]`, zero outside the input. Tiles run image by image,
    /// row by row. Input channels are split over the workers.
    ///
    /// Each plane is first copied into a zero-bordered one, so that every patch is read
    /// without bounds checks; its border is never written, so it is zeroed once per call.
    /// Padding four rows for every tile row instead made each input row two memmove and
    /// four memset calls of a few floats: this transform ran 1.3× (14×14 planes) to 2×
    /// (7×7, 4×4) slower. A plane larger than ``paddedBandFloats`` allows is taken a band
    /// of tile rows at a time.
    static func winogradInput(_ x: UnsafePointer<Float>, _ v: UnsafeMutablePointer<Float>, _ g: ConvGeometry,
                              images: Range<Int>) {
        parallelFor(g.channels, (x, v, g, images)) { channels, captures in
            let (x, v, g, images) = captures
            let (tileRows, tileColumns) = (g.tileRows, g.tileColumns)
            let tiles = images.count * g.tilesPerImage, stride = positionStride(g.channels * tiles)
            // At least `W + 2·padding` wide, so a row of the plane fits between the side columns.
            let paddedWidth = 2 * tileColumns + 2, planeSize = g.height * g.width
            let bandTileRows = max(1, min(tileRows, (paddedBandFloats / paddedWidth - 2) / 2))
            // In one band the rows outside the plane are the same for every plane: zeroed once.
            let banded = bandTileRows < tileRows
            let (top, left) = g.window.padding
            let bandFloats = (2 * bandTileRows + 2) * paddedWidth
            ThreadScratch.withFloats(bandFloats) { padded in
                padded.initialize(repeating: 0, count: bandFloats)
                for c in channels {
                    for n in images {
                        let plane = x + (c * g.batch + n) * planeSize
                        for first in Swift.stride(from: 0, to: tileRows, by: bandTileRows) {
                            let bandRows = min(bandTileRows, tileRows - first)
                            // Padded row i of the band is the plane's row 2·first − top + i, zero outside it.
                            for i in 0..<(2 * bandRows + 2) {
                                let row = 2 * first - top + i, dst = padded + i * paddedWidth + left
                                if (0..<g.height).contains(row) {
                                    dst.update(from: plane + row * g.width, count: g.width)
                                } else if banded {
                                    dst.update(repeating: 0, count: g.width)
                                }
                            }
                            for ty in first..<(first + bandRows) {
                                let patch = padded + 2 * (ty - first) * paddedWidth
                                let out = v + c * tiles + ((n - images.lowerBound) * tileRows + ty) * tileColumns
                                let done = laneBlocks { tx, lanes in tx + lanes <= tileColumns } eight: {
                                    inputTiles(patch, width: paddedWidth, tx: $0, into: out, stride: stride, split16)
                                } four: {
                                    inputTiles(patch, width: paddedWidth, tx: $0, into: out, stride: stride, split8)
                                } two: {
                                    inputTiles(patch, width: paddedWidth, tx: $0, into: out, stride: stride, split4)
                                }
                                for tx in done..<tileColumns {
                                    // Bᵀ·d down the columns (a row of four columns at a time), then ·B along rows.
                                    @inline(__always) func load(_ i: Int) -> SIMD4<Float> {
                                        UnsafeRawPointer(patch + i * paddedWidth + 2 * tx).loadUnaligned(as: SIMD4<Float>.self)
                                    }
                                    let (d0, d1, d2, d3) = (load(0), load(1), load(2), load(3))
                                    @inline(__always) func store(_ a: Int, _ r: SIMD4<Float>) {
                                        let o = out + 4 * a * stride + tx
                                        o[0] = r[0] - r[2]
                                        o[stride] = r[1] + r[2]
                                        o[2 * stride] = r[2] - r[1]
                                        o[3 * stride] = r[1] - r[3]
                                    }
                                    store(0, d0 - d2)
                                    store(1, d1 + d2)
                                    store(2, d2 - d1)
                                    store(3, d1 - d3)
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// `y[K, N, Ho, Wo]` of `images` from the products `m[ξ, K, tiles]`: each tile is
    /// `Aᵀ·m·A`, cut at the output's edge. Output channels are split over the workers.
    static func winogradOutput(_ m: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ g: ConvGeometry,
                               outputs k: Int, images: Range<Int>) {
        parallelFor(k, (m, y, g, images, outputTileSizes(g, outputs: k, images: images))) { channels, captures in
            let (m, y, g, images, (tileColumns, ow, stride)) = captures
            forEachOutputTileRow(g, channels: channels, images: images) { tile, outputRow, hasBottom in
                let src = m + tile, top = y + outputRow
                let done = laneBlocks { tx, lanes in 2 * (tx + lanes) <= ow } eight: {
                    outputTiles(src, stride: stride, tx: $0, top: top, width: ow, hasBottom: hasBottom, interleave16)
                } four: {
                    outputTiles(src, stride: stride, tx: $0, top: top, width: ow, hasBottom: hasBottom, interleave8)
                } two: {
                    outputTiles(src, stride: stride, tx: $0, top: top, width: ow, hasBottom: hasBottom, interleave4)
                }
                for tx in done..<tileColumns {
                    // Aᵀ along each row of m (two columns out of four), then down the columns.
                    @inline(__always) func row(_ a: Int) -> SIMD2<Float> {
                        let p = src + 4 * a * stride + tx
                        return SIMD2(p[0] + p[stride] + p[2 * stride], p[stride] - p[2 * stride] - p[3 * stride])
                    }
                    let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3))
                    let upper = r0 + r1 + r2, lower = r1 - r2 - r3
                    let col = 2 * tx, hasRight = col + 1 < ow
                    top[col] = upper[0]
                    if hasRight { top[col + 1] = upper[1] }
                    if hasBottom {
                        top[ow + col] = lower[0]
                        if hasRight { top[ow + col + 1] = lower[1] }
                    }
                }
            }
        }
    }

    /// The tile columns, output width and position stride of `[ξ, K, tiles]` that the
    /// output transforms of `images` use.
    private static func outputTileSizes(_ g: ConvGeometry, outputs k: Int, images: Range<Int>)
        -> (tileColumns: Int, ow: Int, stride: Int) {
        (g.tileColumns, g.outWidth, positionStride(k * images.count * g.tilesPerImage))
    }

    /// Visits every row of output tiles of `images` in the output channels `channels` (a
    /// worker's share): `body(tile, row, hasBottom)` gets the row's first tile in a
    /// `[K, tiles]` slice, its top output row in `[K, N, Ho, Wo]`, and whether a second
    /// output row exists.
    ///
    /// Callers pass `body` as a literal inside their `parallelFor` closure, so it inlines
    /// into the loop, as im2col's `forEachColumnRow` does.
    @inline(__always)
    private static func forEachOutputTileRow(_ g: ConvGeometry, channels: Range<Int>, images: Range<Int>,
                                             _ body: (_ tile: Int, _ row: Int, _ hasBottom: Bool) -> Void) {
        let tiles = images.count * g.tilesPerImage, (oh, ow) = (g.outHeight, g.outWidth)
        for kk in channels {
            for n in images {
                for ty in 0..<g.tileRows {
                    body(kk * tiles + ((n - images.lowerBound) * g.tileRows + ty) * g.tileColumns,
                         (kk * g.batch + n) * oh * ow + 2 * ty * ow, 2 * ty + 1 < oh)
                }
            }
        }
    }

    /// `u[ξ, K, tiles] = (A·g·Aᵀ)[ξ]` for the 2×2 tile `g` of `dy[K, N, Ho, Wo]` at every
    /// output tile of `images`, zero past the output's edge: the adjoint of
    /// ``winogradOutput(_:_:_:outputs:images:)``. Output channels are split over the workers.
    static func winogradOutputGradient(_ dy: UnsafePointer<Float>, _ u: UnsafeMutablePointer<Float>, _ g: ConvGeometry,
                                       outputs k: Int, images: Range<Int>) {
        parallelFor(k, (dy, u, g, images, outputTileSizes(g, outputs: k, images: images))) { channels, captures in
            let (dy, u, g, images, (tileColumns, ow, stride)) = captures
            forEachOutputTileRow(g, channels: channels, images: images) { tile, outputRow, hasBottom in
                let out = u + tile, top = dy + outputRow
                let done = laneBlocks { tx, lanes in 2 * (tx + lanes) <= ow } eight: {
                    outputGradientTiles(top, tx: $0, width: ow, hasBottom: hasBottom, into: out, stride: stride, split16)
                } four: {
                    outputGradientTiles(top, tx: $0, width: ow, hasBottom: hasBottom, into: out, stride: stride, split8)
                } two: {
                    outputGradientTiles(top, tx: $0, width: ow, hasBottom: hasBottom, into: out, stride: stride, split4)
                }
                for tx in done..<tileColumns {
                    let col = 2 * tx, hasRight = col + 1 < ow
                    let g0 = SIMD2(top[col], hasRight ? top[col + 1] : 0)
                    let g1 = hasBottom ? SIMD2(top[ow + col], hasRight ? top[ow + col + 1] : 0) : .zero
                    // A down the columns, then along each row.
                    @inline(__always) func store(_ a: Int, _ r: SIMD2<Float>) {
                        let o = out + 4 * a * stride + tx
                        o[0] = r[0]
                        o[stride] = r[0] + r[1]
                        o[2 * stride] = r[0] - r[1]
                        o[3 * stride] = -r[1]
                    }
                    store(0, g0)
                    store(1, g0 + g1)
                    store(2, g0 - g1)
                    store(3, -g1)
                }
            }
        }
    }

    // Several neighbouring tiles at once, one lane each: a tile row's patches (and its
    // output columns) are the even and odd entries of each row, so every transformed
    // entry is one vector load or store. `Lanes` is SIMD8, SIMD4 or SIMD2 (8, 4 or 2 tiles).

    /// Runs `eight` on tile columns eight at a time while `fits(tx, 8)`, then `four` and
    /// `two` once each if they fit; returns the first column left for one tile at a time.
    @inline(__always)
    private static func laneBlocks(_ fits: (_ tx: Int, _ lanes: Int) -> Bool, eight: (Int) -> Void,
                                   four: (Int) -> Void, two: (Int) -> Void) -> Int {
        var tx = 0
        while fits(tx, 8) {
            eight(tx)
            tx += 8
        }
        if fits(tx, 4) {
            four(tx)
            tx += 4
        }
        if fits(tx, 2) {
            two(tx)
            tx += 2
        }
        return tx
    }

    /// The lanes of ``winogradInput(_:_:_:images:)`` for the tiles from column `tx` on.
    @inline(__always)
    private static func inputTiles<Lanes: SIMD>(_ rows: UnsafePointer<Float>, width: Int, tx: Int,
                                                into out: UnsafeMutablePointer<Float>, stride: Int,
                                                _ split: (UnsafePointer<Float>) -> (Lanes, Lanes))
    where Lanes.Scalar == Float {
        @inline(__always) func columns(_ i: Int) -> (Lanes, Lanes, Lanes, Lanes) {
            let p = rows + i * width + 2 * tx
            let ((p0, p1), (p2, p3)) = (split(p), split(p + 2))
            return (p0 - p2, p1 + p2, p2 - p1, p1 - p3)
        }
        let (h0, h1, h2, h3) = (columns(0), columns(1), columns(2), columns(3))
        @inline(__always) func store(_ j: Int, _ d0: Lanes, _ d1: Lanes, _ d2: Lanes, _ d3: Lanes) {
            let o = out + j * stride + tx
            UnsafeMutableRawPointer(o).storeBytes(of: d0 - d2, as: Lanes.self)
            UnsafeMutableRawPointer(o + 4 * stride).storeBytes(of: d1 + d2, as: Lanes.self)
            UnsafeMutableRawPointer(o + 8 * stride).storeBytes(of: d2 - d1, as: Lanes.self)
            UnsafeMutableRawPointer(o + 12 * stride).storeBytes(of: d1 - d3, as: Lanes.self)
        }
        store(0, h0.0, h1.0, h2.0, h3.0)
        store(1, h0.1, h1.1, h2.1, h3.1)
        store(2, h0.2, h1.2, h2.2, h3.2)
        store(3, h0.3, h1.3, h2.3, h3.3)
    }

    /// The lanes of ``winogradOutput(_:_:_:outputs:images:)`` for the tiles from column `tx` on.
    @inline(__always)
    private static func outputTiles<Lanes: SIMD>(_ src: UnsafePointer<Float>, stride: Int, tx: Int,
                                                 top: UnsafeMutablePointer<Float>, width: Int, hasBottom: Bool,
                                                 _ interleave: (UnsafeMutablePointer<Float>, Lanes, Lanes) -> Void)
    where Lanes.Scalar == Float {
        // Aᵀ along each row of m (two columns out of four), then down the columns.
        @inline(__always) func row(_ a: Int) -> (Lanes, Lanes) {
            let p = src + 4 * a * stride + tx
            @inline(__always) func load(_ j: Int) -> Lanes {
                UnsafeRawPointer(p + j * stride).loadUnaligned(as: Lanes.self)
            }
            let (m0, m1, m2, m3) = (load(0), load(1), load(2), load(3))
            return (m0 + m1 + m2, m1 - m2 - m3)
        }
        let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3))
        interleave(top + 2 * tx, r0.0 + r1.0 + r2.0, r0.1 + r1.1 + r2.1)
        if hasBottom { interleave(top + width + 2 * tx, r1.0 - r2.0 - r3.0, r1.1 - r2.1 - r3.1) }
    }

    /// The lanes of ``winogradOutputGradient(_:_:_:outputs:images:)`` for the tiles from column `tx` on.
    @inline(__always)
    private static func outputGradientTiles<Lanes: SIMD>(_ top: UnsafePointer<Float>, tx: Int, width: Int, hasBottom: Bool,
                                                         into out: UnsafeMutablePointer<Float>, stride: Int,
                                                         _ split: (UnsafePointer<Float>) -> (Lanes, Lanes))
    where Lanes.Scalar == Float {
        let upper = split(top + 2 * tx), lower = hasBottom ? split(top + width + 2 * tx) : (Lanes.zero, Lanes.zero)
        // A down the columns, then along each row.
        @inline(__always) func store(_ a: Int, _ left: Lanes, _ right: Lanes) {
            let o = out + 4 * a * stride + tx
            UnsafeMutableRawPointer(o).storeBytes(of: left, as: Lanes.self)
            UnsafeMutableRawPointer(o + stride).storeBytes(of: left + right, as: Lanes.self)
            UnsafeMutableRawPointer(o + 2 * stride).storeBytes(of: left - right, as: Lanes.self)
            UnsafeMutableRawPointer(o + 3 * stride).storeBytes(of: Lanes.zero - right, as: Lanes.self)
        }
        store(0, upper.0, upper.1)
        store(1, upper.0 + lower.0, upper.1 + lower.1)
        store(2, upper.0 - lower.0, upper.1 - lower.1)
        store(3, Lanes.zero - lower.0, Lanes.zero - lower.1)
    }

    /// The even and odd entries of the 16, 8 or 4 floats at `p`.
    @inline(__always)
    private static func split16(_ p: UnsafePointer<Float>) -> (SIMD8<Float>, SIMD8<Float>) {
        let v = UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self)
        return (v.evenHalf, v.oddHalf)
    }

    @inline(__always)
    private static func split8(_ p: UnsafePointer<Float>) -> (SIMD4<Float>, SIMD4<Float>) {
        let v = UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
        return (v.evenHalf, v.oddHalf)
    }

    @inline(__always)
    private static func split4(_ p: UnsafePointer<Float>) -> (SIMD2<Float>, SIMD2<Float>) {
        let v = UnsafeRawPointer(p).loadUnaligned(as: SIMD4<Float>.self)
        return (v.evenHalf, v.oddHalf)
    }

    /// Stores `even` and `odd` interleaved as the 16, 8 or 4 floats at `p`.
    @inline(__always)
    private static func interleave16(_ p: UnsafeMutablePointer<Float>, _ even: SIMD8<Float>, _ odd: SIMD8<Float>) {
        var v = SIMD16<Float>()
        (v.evenHalf, v.oddHalf) = (even, odd)
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD16<Float>.self)
    }

    @inline(__always)
    private static func interleave8(_ p: UnsafeMutablePointer<Float>, _ even: SIMD4<Float>, _ odd: SIMD4<Float>) {
        var v = SIMD8<Float>()
        (v.evenHalf, v.oddHalf) = (even, odd)
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self)
    }

    @inline(__always)
    private static func interleave4(_ p: UnsafeMutablePointer<Float>, _ even: SIMD2<Float>, _ odd: SIMD2<Float>) {
        var v = SIMD4<Float>()
        (v.evenHalf, v.oddHalf) = (even, odd)
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD4<Float>.self)
    }
}
