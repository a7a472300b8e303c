/// Winograd's minimal filtering F(m×m, 3×3) (Lavin & Gray, "Fast Algorithms for
/// Convolutional Neural Networks", 2016) for 3×3 stride-1 convolutions, with output
/// tiles of m = 2 (this file's transforms) or m = 4 (`Winograd4x4.swift`).
///
/// The output is cut into m×m tiles. Each tile reads an (m+2)×(m+2) input patch `d`; with
/// `U = G·w·Gᵀ` (the 3×3 kernel taken to (m+2)×(m+2)) and `V = Bᵀ·d·B`, the tile is
/// `Aᵀ·(U ⊙ V)·A`. Summed over input channels, the (m+2)² products `U ⊙ V` are as many
/// independent sgemms `M_ξ[K, tiles] = U_ξ[K, C] · V_ξ[C, tiles]`: per output and channel
/// pair, 16/4 = 4 multiply-adds for m = 2 and 36/16 = 2.25 for m = 4 instead of im2col's 9.
///
/// The weight gradient is the same identity differentiated with respect to `w`:
/// `dW = Gᵀ·Σ_tiles (A·dY·Aᵀ) ⊙ (Bᵀ·d·B)·G`, again one sgemm per position, over the tiles.
///
/// For m = 2 the matrices (interpolation points 0, 1, −1, ∞) have entries 0, ±1 and ±½,
/// so the transforms add at most four terms and lose little accuracy against a direct sum.
enum WinogradTile: Sendable {
    /// F(2×2, 3×3): 4×4 patches, 16 positions.
    case f2x2
    /// F(4×4, 3×3): 6×6 patches, 36 positions.
    case f4x4

    /// Output rows and columns of a tile.
    var size: Int { self == .f2x2 ? 2 : 4 }
    /// Entries of a transformed tile: one sgemm each.
    var positions: Int { (size + 2) * (size + 2) }
}

extension ConvGeometry {
    /// Whether F(m×m, 3×3) computes this convolution: a 3×3 kernel, stride 1, no dilation.
    var allowsWinograd: Bool {
        window.kernel == (3, 3) && window.stride == (1, 1) && window.dilation == (1, 1)
    }

    /// Rows and columns of `tile`-sized tiles that cover an output plane.
    func tiles(_ tile: WinogradTile) -> (rows: Int, columns: Int) {
        ((outHeight + tile.size - 1) / tile.size, (outWidth + tile.size - 1) / tile.size)
    }

    func tilesPerImage(_ tile: WinogradTile) -> Int {
        let (rows, columns) = tiles(tile)
        return rows * columns
    }

    /// What a 3×3 kernel (one output–input channel pair) costs on this batch, in
    /// multiply-adds: im2col's 9 per output position, or a Winograd tile's positions per
    /// tile plus its kernel transform, which writes every position once per call whatever
    /// the batch and (measured on the 2-core VM) costs about as much as 384 multiply-adds
    /// in the sgemms.
    func costPerKernel(_ tile: WinogradTile?) -> Int {
        guard let tile else { return 9 * batch * outPlane }
        return tile.positions * (batch * tilesPerImage(tile) + 384)
    }
}

extension Kernels {
    /// Floats of the zero-bordered band ``winogradInput(_:_:_:images:)`` copies each plane
    /// into (256 KiB a worker): whole planes up to about 250×250, bands of rows beyond.
    static let paddedBandFloats = 1 << 16

    /// Floats between consecutive positions of a `[ξ, rows, columns]` buffer holding
    /// `matrix` floats per position. A transform writes (or reads) all positions of a
    /// tile at once; at power-of-two strides, common here (`64·64`, `256·256` tiles), those
    /// streams share one cache set and evict each other, so each position is padded by
    /// one cache line, which also lets 8-tile vectors read past a position's last tile.
    @inline(__always)
    static func positionStride(_ matrix: Int) -> Int { matrix + 16 }

    /// `y[K, N, Ho, Wo] = conv(x[C, N, H, W], w[K, C, 3, 3])` by F(m×m, 3×3), a chunk of
    /// images at a time so that the transformed tiles stay in cache between the
    /// transform and the sgemms. `scratch` holds the transformed kernel and one chunk.
    static func winogradConvolve(_ x: UnsafePointer<Float>, _ g: ConvGeometry, tile: WinogradTile,
                                 weights w: UnsafePointer<Float>, outputs: Int, into y: UnsafeMutablePointer<Float>,
                                 scratch: Workspace, chunkBytes: Int, minimumTiles: Int) {
        let (c, k) = (g.channels, outputs)
        let chunks = winogradChunks(g, tile, outputs: k, chunkBytes: chunkBytes, minimumTiles: minimumTiles)
        let (kernelStride, inputStride, outputStride) = winogradStrides(c, k, tiles: chunks.maxTiles)
        let buffer = scratch.floats(tile.positions * (kernelStride + inputStride + outputStride))
        let u = buffer, v = u + tile.positions * kernelStride, m = v + tile.positions * inputStride
        switch tile {
        case .f2x2: winogradKernels(w, u, outputs: k, inputs: c)
        case .f4x4: winograd4x4Kernels(w, u, outputs: k, inputs: c)
        }
        for images in chunks.ranges {
            let tiles = images.count * g.tilesPerImage(tile)
            winogradInput(x, v, g, tile, images: images)
            let shape = Profiler.GEMMShape(transA: false, transB: false, m: k, n: tiles, k: c, lda: c, ldb: tiles, ldc: tiles, beta: 0)
            BLAS.sgemmBatch(shape, count: tile.positions, (shape, u, v, m, kernelStride, c, k, tiles)) { range, captures in
                let (shape, u, v, m, kernelStride, c, k, tiles) = captures
                for xi in range {
                    BLAS.serialSGEMM(shape, a: u + xi * kernelStride, b: v + xi * positionStride(c * tiles),
                                     c: m + xi * positionStride(k * tiles))
                }
            }
            switch tile {
            case .f2x2: winogradOutput(m, y, g, outputs: k, images: images)
            case .f4x4: winograd4x4Output(m, y, g, outputs: k, images: images)
            }
        }
    }

    /// `dW[K, C, 3, 3] += ∂/∂w` of the convolution above, given `dy[K, N, Ho, Wo]`.
    static func winogradWeightGradient(_ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ g: ConvGeometry,
                                       tile: WinogradTile, outputs: Int, into dw: UnsafeMutablePointer<Float>,
                                       scratch: Workspace, chunkBytes: Int, minimumTiles: Int) {
        // No tiles, no sgemm to write the sums: nothing to add.
        guard g.batch > 0 else { return }
        let (c, k) = (g.channels, outputs)
        let chunks = winogradChunks(g, tile, outputs: k, chunkBytes: chunkBytes, minimumTiles: minimumTiles)
        let (kernelStride, inputStride, outputStride) = winogradStrides(c, k, tiles: chunks.maxTiles)
        let buffer = scratch.floats(tile.positions * (kernelStride + inputStride + outputStride))
        let m = buffer, v = m + tile.positions * kernelStride, u = v + tile.positions * inputStride
        for (index, images) in chunks.ranges.enumerated() {
            let tiles = images.count * g.tilesPerImage(tile)
            winogradInput(x, v, g, tile, images: images)
            switch tile {
            case .f2x2: winogradOutputGradient(dy, u, g, outputs: k, images: images)
            case .f4x4: winograd4x4OutputGradient(dy, u, g, outputs: k, images: images)
            }
            let shape = Profiler.GEMMShape(transA: false, transB: true, m: k, n: c, k: tiles, lda: tiles, ldb: tiles, ldc: c,
                                           beta: index == 0 ? 0 : 1)
            BLAS.sgemmBatch(shape, count: tile.positions, (shape, u, v, m, kernelStride, c, k, tiles)) { range, captures in
                let (shape, u, v, m, kernelStride, c, k, tiles) = captures
                for xi in range {
                    BLAS.serialSGEMM(shape, a: u + xi * positionStride(k * tiles), b: v + xi * positionStride(c * tiles),
                                     c: m + xi * kernelStride)
                }
            }
        }
        switch tile {
        case .f2x2: winogradKernelGradient(m, dw, outputs: k, inputs: c)
        case .f4x4: winograd4x4KernelGradient(m, dw, outputs: k, inputs: c)
        }
    }

    /// Position strides of the transformed kernels `[ξ, K, C]`, inputs `[ξ, C, tiles]` and
    /// outputs `[ξ, K, tiles]` for chunks of at most `tiles` tiles.
    private static func winogradStrides(_ c: Int, _ k: Int, tiles: Int) -> (kernels: Int, inputs: Int, outputs: Int) {
        (positionStride(k * c), positionStride(c * tiles), positionStride(k * tiles))
    }

    /// The batch in runs of whole images whose transformed input and output tiles take
    /// about `chunkBytes`, but at least `minimumTiles` tiles (the sgemms' columns), and the
    /// most tiles any run has.
    private static func winogradChunks(_ g: ConvGeometry, _ tile: WinogradTile, outputs: Int, chunkBytes: Int,
                                       minimumTiles: Int) -> (ranges: ImageChunks, maxTiles: Int) {
        let tilesPerImage = g.tilesPerImage(tile)
        let perImage = tile.positions * (g.channels + outputs) * tilesPerImage * MemoryLayout<Float>.size
        let imagesForTiles = (minimumTiles + tilesPerImage - 1) / tilesPerImage
        let step = min(g.batch, max(1, chunkBytes / perImage, imagesForTiles))
        return (ImageChunks(batch: g.batch, size: step), step * tilesPerImage)
    }

    /// F(2×2, 3×3)'s `u[ξ, K, C] = (G·w·Gᵀ)[ξ]` for every kernel of `w[K, C, 3, 3]`.
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

    /// F(2×2, 3×3)'s `dw[K, C, 3, 3] += Gᵀ·m[·, k, c]·G` for the summed products `m[ξ, K, C]`.
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

    /// `v[ξ, C, tiles] = (Bᵀ·d·B)[ξ]` for the (m+2)×(m+2) patch `d` of every output tile of
    /// `images` of `x: [C, N, H, W]`, zero outside the input. Tiles run image by image,
    /// row by row. Input channels are split over the workers.
    static func winogradInput(_ x: UnsafePointer<Float>, _ v: UnsafeMutablePointer<Float>, _ g: ConvGeometry,
                              _ tile: WinogradTile, images: Range<Int>) {
        parallelFor(g.channels, (x, v, g, tile, images)) { channels, captures in
            let (x, v, g, tile, images) = captures
            let tileColumns = g.tiles(tile).columns, tiles = images.count * g.tilesPerImage(tile)
            let stride = positionStride(g.channels * tiles)
            let left = g.window.padding.w
            switch tile {
            case .f2x2:
                forEachPatchRow(x, g, .f2x2, paddedWidth: 2 * tileColumns + 2, channels: channels, images: images) { dst, src, _ in
                    if let src { (dst + left).update(from: src, count: g.width) } else { (dst + left).update(repeating: 0, count: g.width) }
                } _: { patch, width, out, _ in
                    inputTileRow(patch, width: width, tileColumns: tileColumns, into: v + out, stride: stride)
                }
            case .f4x4:
                let phase = winograd4x4PhaseFloats(tileColumns: tileColumns)
                // Scratch: six rows of Bᵀ·d, then a staging row for the phase split.
                forEachPatchRow(x, g, .f4x4, paddedWidth: 4 * phase, scratchFloats: 7 * 4 * phase, channels: channels,
                                images: images) { dst, src, scratch in
                    splitPhases(src, count: g.width, offset: left, phase: phase, tileColumns: tileColumns,
                                staging: scratch + 6 * 4 * phase, into: dst)
                } _: { patch, _, out, scratch in
                    winograd4x4InputTileRow(patch, phase: phase, tileColumns: tileColumns, into: v + out,
                                            room: (out / tiles + 1) * tiles - out, stride: stride, scratch: scratch)
                }
            }
        }
    }

    /// Visits every row of input patches of `images` in the input channels `channels` (a
    /// worker's share): `body(patch, width, out, scratch)` gets the row's first patch,
    /// `m + 2` rows of `width` floats, the row's first tile in a `[C, tiles]` slice, and
    /// `scratchFloats` floats of its own, zeroed once. `copy(row, source, scratch)` writes
    /// a plane row (or zeros, for a nil source) into a padded row.
    ///
    /// Each plane is first copied into a zero-bordered one, so that every patch is read
    /// without bounds checks; its border is never written, so it is zeroed once per call.
    /// Padding every tile row instead made each input row two memmove and four memset
    /// calls of a few floats: F(2×2, 3×3)'s transform ran 1.3× (14×14 planes) to 2× (7×7,
    /// 4×4) slower. A plane larger than ``paddedBandFloats`` allows is taken a band of
    /// tile rows at a time. `width` must hold a plane row between its side padding.
    @inline(__always)
    private static func forEachPatchRow(_ x: UnsafePointer<Float>, _ g: ConvGeometry, _ tile: WinogradTile, paddedWidth: Int,
                                        scratchFloats: Int = 0, channels: Range<Int>, images: Range<Int>,
                                        _ copy: (_ row: UnsafeMutablePointer<Float>, _ source: UnsafePointer<Float>?,
                                                 _ scratch: UnsafeMutablePointer<Float>) -> Void,
                                        _ body: (_ patch: UnsafePointer<Float>, _ width: Int, _ out: Int,
                                                 _ scratch: UnsafeMutablePointer<Float>) -> Void) {
        let (tileRows, tileColumns) = g.tiles(tile), m = tile.size
        let tiles = images.count * tileRows * tileColumns, planeSize = g.height * g.width
        let bandTileRows = max(1, min(tileRows, (paddedBandFloats / paddedWidth - 2) / m))
        // In one band the rows outside the plane are the same for every plane: zeroed once.
        let banded = bandTileRows < tileRows
        let top = g.window.padding.h
        let bandFloats = (m * bandTileRows + 2) * paddedWidth
        ThreadScratch.withFloats(bandFloats + scratchFloats) { padded in
            padded.initialize(repeating: 0, count: bandFloats + scratchFloats)
            for c in channels {
                for n in images {
                    let plane = x + (c * g.batch + n) * planeSize
                    for first in Swift.stride(from: 0, to: tileRows, by: bandTileRows) {
                        let bandRows = min(bandTileRows, tileRows - first)
                        // Padded row i of the band is the plane's row m·first − top + i, zero outside it.
                        for i in 0..<(m * bandRows + 2) {
                            let row = m * first - top + i, dst = padded + i * paddedWidth
                            if (0..<g.height).contains(row) {
                                copy(dst, plane + row * g.width, padded + bandFloats)
                            } else if banded {
                                copy(dst, nil, padded + bandFloats)
                            }
                        }
                        for ty in first..<(first + bandRows) {
                            body(padded + m * (ty - first) * paddedWidth, paddedWidth,
                                 c * tiles + ((n - images.lowerBound) * tileRows + ty) * tileColumns, padded + bandFloats)
                        }
                    }
                }
            }
        }
    }

    /// F(2×2, 3×3)'s `Bᵀ·d·B` for a row of tiles whose 4×4 patches start every two columns of `patch`.
    @inline(__always)
    private static func inputTileRow(_ patch: UnsafePointer<Float>, width: Int, tileColumns: Int,
                                     into out: UnsafeMutablePointer<Float>, stride: Int) {
        let done = laneBlocks { tx, lanes in tx + lanes <= tileColumns } eight: {
            inputTiles(patch, width: width, tx: $0, into: out, stride: stride, split16)
        } four: {
            inputTiles(patch, width: width, tx: $0, into: out, stride: stride, split8)
        } two: {
            inputTiles(patch, width: width, tx: $0, into: out, stride: stride, split4)
        }
        for tx in done..<tileColumns {
            // Bᵀ·d down the columns (a row of four columns at a time), then ·B along rows.
            @inline(__always) func load(_ i: Int) -> SIMD4<Float> {
                UnsafeRawPointer(patch + i * width + 2 * tx).loadUnaligned(as: SIMD4<Float>.self)
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

    /// `y[K, N, Ho, Wo]` of `images` from the products `m[ξ, K, tiles]`: each tile is
    /// `Aᵀ·m·A`, cut at the output's edge. Output channels are split over the workers.
    static func winogradOutput(_ m: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ g: ConvGeometry,
                               outputs k: Int, images: Range<Int>) {
        parallelFor(k, (m, y, g, images, outputTileSizes(g, .f2x2, outputs: k, images: images))) { channels, captures in
            let (m, y, g, images, (tileColumns, ow, stride)) = captures
            forEachOutputTileRow(g, .f2x2, channels: channels, images: images) { tile, outputRow, rows in
                let hasBottom = rows > 1
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
    static func outputTileSizes(_ g: ConvGeometry, _ tile: WinogradTile, outputs k: Int, images: Range<Int>)
        -> (tileColumns: Int, ow: Int, stride: Int) {
        (g.tiles(tile).columns, g.outWidth, positionStride(k * images.count * g.tilesPerImage(tile)))
    }

    /// Visits every row of output tiles of `images` in the output channels `channels` (a
    /// worker's share): `body(tile, row, rows)` gets the row's first tile in a
    /// `[K, tiles]` slice, its top output row in `[K, N, Ho, Wo]`, and how many of its m
    /// output rows lie inside the output.
    ///
    /// Callers pass `body` as a literal inside their `parallelFor` closure, so it inlines
    /// into the loop, as im2col's `forEachColumnRow` does.
    @inline(__always)
    static func forEachOutputTileRow(_ g: ConvGeometry, _ tile: WinogradTile, channels: Range<Int>, images: Range<Int>,
                                     _ body: (_ tile: Int, _ row: Int, _ rows: Int) -> Void) {
        let (tileRows, tileColumns) = g.tiles(tile), m = tile.size
        let tiles = images.count * tileRows * tileColumns, (oh, ow) = (g.outHeight, g.outWidth)
        for kk in channels {
            for n in images {
                for ty in 0..<tileRows {
                    body(kk * tiles + ((n - images.lowerBound) * tileRows + ty) * tileColumns,
                         (kk * g.batch + n) * oh * ow + m * ty * ow, min(m, oh - m * ty))
                }
            }
        }
    }

    /// `u[ξ, K, tiles] = (A·g·Aᵀ)[ξ]` for the 2×2 tile `g` of `dy[K, N, Ho, Wo]` at every
    /// output tile of `images`, zero past the output's edge: the adjoint of
    /// ``winogradOutput(_:_:_:outputs:images:)``. Output channels are split over the workers.
    static func winogradOutputGradient(_ dy: UnsafePointer<Float>, _ u: UnsafeMutablePointer<Float>, _ g: ConvGeometry,
                                       outputs k: Int, images: Range<Int>) {
        parallelFor(k, (dy, u, g, images, outputTileSizes(g, .f2x2, outputs: k, images: images))) { channels, captures in
            let (dy, u, g, images, (tileColumns, ow, stride)) = captures
            forEachOutputTileRow(g, .f2x2, channels: channels, images: images) { tile, outputRow, rows in
                let hasBottom = rows > 1
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
