/// The transforms of Winograd's F(4×4, 3×3) (interpolation points 0, ±1, ±2, ∞; Lavin &
/// Gray 2016, section 4.2), for the driver in `Winograd.swift`:
///
///     Bᵀ = [4  0 −5  0  1  0]    G = [ 1/4     0     0 ]    Aᵀ = [1  1  1  1  1  0]
///          [0 −4 −4  1  1  0]        [−1/6  −1/6  −1/6 ]         [0  1 −1  2 −2  0]
///          [0  4 −4 −1  1  0]        [−1/6   1/6  −1/6 ]         [0  1  1  4  4  0]
///          [0 −2 −1  2  1  0]        [ 1/24  1/12  1/6 ]         [0  1 −1  8 −8  1]
///          [0  2 −1 −2  1  0]        [ 1/24 −1/12  1/6 ]
///          [0  4  0 −5  0  1]        [  0     0     1  ]
///
/// Position ξ = 6·a + b of a transformed tile is row a, column b of the 6×6 matrices.
/// Their larger entries cost accuracy: on random 3×3 convolutions over 128–256 channels
/// the float32 result is 5–10× further from a float64 direct sum than im2col's (relative
/// RMS 2e-6 to 3e-6 against 2e-7 to 3e-7), where F(2×2, 3×3)'s is within 2×.
///
/// Tiles are taken eight at a time, one per SIMD8 lane, and each 6×6 (or 4×4) transform
/// in two passes through a small scratch: one down the columns, one along the rows. Done
/// in one pass, a block's 36 vectors did not fit the registers of baseline x86-64 (16 SSE
/// registers, two per SIMD8) and the transforms ran 2–5× slower than F(2×2, 3×3)'s.
/// Tile rows are kept split into four phases (padded column X at `(X % 4)·phase + X / 4`)
/// so that column j of eight neighbouring tiles is one contiguous vector.
extension Kernels {
    typealias Six = (Lanes, Lanes, Lanes, Lanes, Lanes, Lanes)
    typealias Four = (Lanes, Lanes, Lanes, Lanes)

    /// `Bᵀ·x` for a column `x` of six.
    @inline(__always)
    private static func mulBT(_ x: Six) -> Six {
        let (x0, x1, x2, x3, x4, x5) = x
        let even = x4 - x2, odd = 2 * (x3 - x1)
        return (4 * x0 - 5 * x2 + x4, (x3 + x4) - 4 * (x1 + x2), (x4 - x3) + 4 * (x1 - x2),
                even + odd, even - odd, 4 * x1 - 5 * x3 + x5)
    }

    /// `Aᵀ·x` for a column `x` of six.
    @inline(__always)
    private static func mulAT(_ x: Six) -> Four {
        let (x0, x1, x2, x3, x4, x5) = x
        let (p, q, r, s) = (x1 + x2, x1 - x2, x3 + x4, x3 - x4)
        return (x0 + p + r, q + 2 * s, p + 4 * r, q + 8 * s + x5)
    }

    /// `A·x` for a column `x` of four: the adjoint of ``mulAT(_:)``.
    @inline(__always)
    private static func mulA(_ x: Four) -> Six {
        let (x0, x1, x2, x3) = x
        let (e, o, e4, o2) = (x0 + x2, x1 + x3, x0 + 4 * x2, 2 * x1 + 8 * x3)
        return (x0, e + o, e - o, e4 + o2, e4 - o2, x3)
    }

    // G's sixths, twelfths and twenty-fourths as multipliers (each rounded once) rather than
    // divisors, which are slower: the transform's own rounding dwarfs theirs.
    private static let sixth: Float = 1.0 / 6, twelfth: Float = 1.0 / 12, twentyFourth: Float = 1.0 / 24

    /// `G·x` for a column `x` of three.
    @inline(__always)
    private static func mulG(_ x0: Lanes, _ x1: Lanes, _ x2: Lanes) -> Six {
        let s = x0 + x2, t = twentyFourth * x0 + sixth * x2, u = twelfth * x1
        return (0.25 * x0, -sixth * (s + x1), sixth * (x1 - s), t + u, t - u, x2)
    }

    /// `Gᵀ·x` for a column `x` of six: the adjoint of ``mulG(_:_:_:)``.
    @inline(__always)
    private static func mulGT(_ x: Six) -> (Lanes, Lanes, Lanes) {
        let (x0, x1, x2, x3, x4, x5) = x
        let (p, q, r, s) = (x1 + x2, x2 - x1, x3 + x4, x3 - x4)
        return (0.25 * x0 - sixth * p + twentyFourth * r, sixth * q + twelfth * s, sixth * (r - p) + x5)
    }

    /// Stores the first `count` lanes of `x` at `p`: all eight in one store when they fit.
    @inline(__always)
    private static func store(_ x: Lanes, _ p: UnsafeMutablePointer<Float>, count: Int = 8) {
        if count == 8 { return UnsafeMutableRawPointer(p).storeBytes(of: x, as: Lanes.self) }
        // Copied through memory: extracting lanes made the compiler compute them one by one.
        withUnsafeBytes(of: x) { UnsafeMutableRawPointer(p).copyMemory(from: $0.baseAddress!, byteCount: count * MemoryLayout<Float>.size) }
    }

    /// Stores the vectors of `v` at `p`, `p + stride`, … `p + 5·stride`, the first `count`
    /// lanes of each.
    @inline(__always)
    private static func store(_ v: Six, _ p: UnsafeMutablePointer<Float>, stride: Int, count: Int) {
        store(v.0, p, count: count)
        store(v.1, p + stride, count: count)
        store(v.2, p + 2 * stride, count: count)
        store(v.3, p + 3 * stride, count: count)
        store(v.4, p + 4 * stride, count: count)
        store(v.5, p + 5 * stride, count: count)
    }

    /// Floats of one phase of a split tile row: a column of every tile in whole 8-tile
    /// blocks, and one block more, which the reads of a patch's columns 4 and 5 (the next
    /// tile's 0 and 1) reach into.
    static func winograd4x4PhaseFloats(tileColumns: Int) -> Int { (tileColumns + 7) / 8 * 8 + 8 }

    /// Writes `count` floats of `source` (zeros for nil) from column `offset` on into the
    /// four phases of `row`, through `staging`: `4·phase` floats that are zero outside
    /// `offset..<offset + count` and stay so. Every phase is rewritten up to past
    /// `tileColumns`, so `row` needs no zeroing, and whole aligned 4×4 transposes do it.
    @inline(__always)
    static func splitPhases(_ source: UnsafePointer<Float>?, count: Int, offset: Int, phase: Int, tileColumns: Int,
                            staging: UnsafeMutablePointer<Float>, into row: UnsafeMutablePointer<Float>) {
        if let source { (staging + offset).update(from: source, count: count) } else { (staging + offset).update(repeating: 0, count: count) }
        for t in Swift.stride(from: 0, through: tileColumns, by: 4) {
            @inline(__always) func q(_ i: Int) -> SIMD4<Float> {
                UnsafeRawPointer(staging + 4 * (t + i)).loadUnaligned(as: SIMD4<Float>.self)
            }
            let (q0, q1, q2, q3) = (q(0), q(1), q(2), q(3))
            for j in 0..<4 {
                UnsafeMutableRawPointer(row + j * phase + t).storeBytes(of: SIMD4(q0[j], q1[j], q2[j], q3[j]), as: SIMD4<Float>.self)
            }
        }
    }

    // Each pass is its own function: inlined together, the compiler interleaved the two
    // passes' vectors into shuffles and stack spills, and the transforms ran 2× slower.

    /// `Bᵀ·d·B` for a row of tiles whose 6×6 patches start every four columns of `patch`:
    /// six phase-split rows of `4·phase` floats. `scratch` holds six such rows. `room`
    /// tiles from `out` on may be written: a block of eight runs past the row into tiles
    /// this worker writes later, so only the channel's last row is stored lane by lane.
    @inline(__always)
    static func winograd4x4InputTileRow(_ patch: UnsafePointer<Float>, phase: Int, tileColumns: Int,
                                        into out: UnsafeMutablePointer<Float>, room: Int, stride: Int,
                                        scratch t: UnsafeMutablePointer<Float>) {
        // Bᵀ down the columns: the same sum of the six rows at every column, whatever its phase.
        columnPass(patch, phase: phase, tileColumns: tileColumns, into: t) { mulBT(($0(0), $0(1), $0(2), $0(3), $0(4), $0(5))) }
        // ·B along each row.
        rowPass(t, phase: phase, tileColumns: tileColumns, into: out, room: room, stride: stride) {
            mulBT(($0(0), $0(1), $0(2), $0(3), $0(4), $0(5)))
        }
    }

    /// Phase-split rows `out[r]` = `transform(i ↦ rows[i])[r]` for the blocks of each phase
    /// that a row of `tileColumns` tiles uses (columns 0…`tileColumns`, the last for columns
    /// 4 and 5 of the last tile): a transform down the columns, 4 or 6 rows in and `Rows`,
    /// a tuple of 4 or 6 vectors, out.
    @inline(never)
    private static func columnPass<Rows>(_ rows: UnsafePointer<Float>, phase: Int, tileColumns: Int,
                                         into out: UnsafeMutablePointer<Float>,
                                         _ transform: ((Int) -> Lanes) -> Rows) {
        let width = 4 * phase, count = MemoryLayout<Rows>.size / MemoryLayout<Lanes>.size
        for j in 0..<4 {
            for block in Swift.stride(from: j * phase, through: j * phase + tileColumns, by: 8) {
                var r = transform { load(rows + $0 * width + block) }
                withUnsafeBytes(of: &r) { results in
                    for i in 0..<count {
                        store(results.loadUnaligned(fromByteOffset: i * MemoryLayout<Lanes>.stride, as: Lanes.self),
                              out + i * width + block)
                    }
                }
            }
        }
    }

    /// Positions `out[6·a + b]` = `transform(j ↦ column j of row a)[b]` for the six
    /// phase-split rows at `rows`, eight tiles at a time: a transform along the rows, 4 or
    /// 6 columns in and six out. Stores as ``winograd4x4InputTileRow`` does.
    @inline(never)
    private static func rowPass(_ rows: UnsafePointer<Float>, phase: Int, tileColumns: Int,
                                into out: UnsafeMutablePointer<Float>, room: Int, stride: Int,
                                _ transform: ((Int) -> Lanes) -> Six) {
        let width = 4 * phase
        for a in 0..<6 {
            for tx in Swift.stride(from: 0, to: tileColumns, by: 8) {
                let count = min(8, room - tx), p = rows + a * width + tx
                // Columns 4 and 5 of a patch are columns 0 and 1 of the next tile.
                let v = transform { $0 < 4 ? load(p + $0 * phase) : load(p + ($0 - 4) * phase + 1) }
                let o = out + 6 * a * stride + tx
                store(v, o, stride: stride, count: count)
            }
        }
    }

    /// `y[K, N, Ho, Wo]` of `images` from the products `m[ξ, K, tiles]`: each tile is
    /// `Aᵀ·m·A`, cut at the output's edge. Output channels are split over the workers.
    static func winograd4x4Output(_ m: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ g: ConvGeometry,
                                  outputs k: Int, images: Range<Int>) {
        parallelFor(k, (m, y, g, images, outputTileSizes(g, .f4x4, outputs: k, images: images))) { channels, captures in
            let (m, y, g, images, (tileColumns, ow, stride)) = captures
            let plane = g.batch * g.outPlane
            let phase = winograd4x4PhaseFloats(tileColumns: tileColumns), width = 4 * phase
            // Six rows of m·A, then the four output rows: phase-split.
            ThreadScratch.withFloats(10 * width) { t in
                let rows4 = t + 6 * width
                forEachOutputTileRow(g, .f4x4, channels: channels, images: images) { tile, outputRow, rows in
                    outputRowPass(m + tile, stride: stride, phase: phase, tileColumns: tileColumns, into: t)
                    // Aᵀ down the columns.
                    columnPass(t, phase: phase, tileColumns: tileColumns, into: rows4) { mulAT(($0(0), $0(1), $0(2), $0(3), $0(4), $0(5))) }
                    mergePhases(rows4, phase: phase, rows: rows, tileColumns: tileColumns, into: y, row: outputRow, outputWidth: ow,
                                channelEnd: (outputRow / plane + 1) * plane)
                }
            }
        }
    }

    /// The six phase-split rows of `m·A` (`Aᵀ` along each row of the 6×6 products at
    /// `m[ξ·stride + tile]`), eight tiles at a time. Lanes past the last tile read the next
    /// row's tiles or the position's padding, and are dropped.
    @inline(never)
    private static func outputRowPass(_ m: UnsafePointer<Float>, stride: Int, phase: Int, tileColumns: Int,
                                      into t: UnsafeMutablePointer<Float>) {
        let width = 4 * phase
        for a in 0..<6 {
            for tx in Swift.stride(from: 0, to: tileColumns, by: 8) {
                let p = m + 6 * a * stride + tx
                let r = mulAT((load(p), load(p + stride), load(p + 2 * stride), load(p + 3 * stride),
                               load(p + 4 * stride), load(p + 5 * stride)))
                let o = t + a * width + tx
                store(r.0, o)
                store(r.1, o + phase)
                store(r.2, o + 2 * phase)
                store(r.3, o + 3 * phase)
            }
        }
    }

    /// Writes the first `rows` phase-split rows at `src` as the output rows that start at
    /// `row`, `row + outputWidth`, … of `y`. Whole tiles, four floats each, even past the row's end into rows this worker
    /// writes later; float by float only where that would leave the channel.
    @inline(never)
    private static func mergePhases(_ src: UnsafePointer<Float>, phase: Int, rows: Int, tileColumns: Int,
                                    into y: UnsafeMutablePointer<Float>, row: Int, outputWidth: Int, channelEnd: Int) {
        for i in 0..<rows {
            let start = row + i * outputWidth, p = src + i * 4 * phase
            if start + 4 * ((tileColumns + 3) & ~3) <= channelEnd {
                // Four tiles at a time: a 4×4 transpose.
                for tx in Swift.stride(from: 0, to: tileColumns, by: 4) {
                    @inline(__always) func q(_ j: Int) -> SIMD4<Float> {
                        UnsafeRawPointer(p + j * phase + tx).loadUnaligned(as: SIMD4<Float>.self)
                    }
                    let (q0, q1, q2, q3) = (q(0), q(1), q(2), q(3))
                    for l in 0..<4 {
                        UnsafeMutableRawPointer(y + start + 4 * (tx + l)).storeBytes(of: SIMD4(q0[l], q1[l], q2[l], q3[l]),
                                                                                     as: SIMD4<Float>.self)
                    }
                }
            } else {
                for column in 0..<outputWidth { y[start + column] = p[(column & 3) * phase + column >> 2] }
            }
        }
    }

    /// `u[ξ, K, tiles] = (A·g·Aᵀ)[ξ]` for the 4×4 tile `g` of `dy[K, N, Ho, Wo]` at every
    /// output tile of `images`, zero past the output's edge: the adjoint of
    /// ``winograd4x4Output(_:_:_:outputs:images:)``. Output channels are split over the workers.
    static func winograd4x4OutputGradient(_ dy: UnsafePointer<Float>, _ u: UnsafeMutablePointer<Float>, _ g: ConvGeometry,
                                          outputs k: Int, images: Range<Int>) {
        parallelFor(k, (dy, u, g, images, outputTileSizes(g, .f4x4, outputs: k, images: images))) { channels, captures in
            let (dy, u, g, images, (tileColumns, ow, stride)) = captures
            let tiles = images.count * g.tilesPerImage(.f4x4)
            let phase = winograd4x4PhaseFloats(tileColumns: tileColumns), width = 4 * phase
            // The tile row's four rows of dy, phase-split, six rows of A·dy, and a staging row.
            ThreadScratch.withFloats(11 * width) { t in
                let rows6 = t + 4 * width, staging = t + 10 * width
                staging.initialize(repeating: 0, count: width)
                forEachOutputTileRow(g, .f4x4, channels: channels, images: images) { tile, outputRow, rows in
                    for i in 0..<4 {
                        splitPhases(i < rows ? dy + outputRow + i * ow : nil, count: ow, offset: 0, phase: phase,
                                    tileColumns: tileColumns, staging: staging, into: t + i * width)
                    }
                    // A down the columns, then ·Aᵀ along each row, stored as the input transform stores.
                    columnPass(t, phase: phase, tileColumns: tileColumns, into: rows6) { mulA(($0(0), $0(1), $0(2), $0(3))) }
                    rowPass(rows6, phase: phase, tileColumns: tileColumns, into: u + tile, room: (tile / tiles + 1) * tiles - tile,
                            stride: stride) { mulA(($0(0), $0(1), $0(2), $0(3))) }
                }
            }
        }
    }

    /// Runs `body(first, count, stride, captures)` on the `k·c` kernels of a `[ξ, K, C]`
    /// buffer eight at a time (`count` fewer at the end), split over the workers; `stride`
    /// is the buffer's position stride.
    @inline(__always)
    private static func forEachKernelBlock<Captures>(outputs k: Int, inputs c: Int, _ captures: Captures,
                                                     _ body: @escaping (_ first: Int, _ count: Int, _ stride: Int, Captures) -> Void) {
        parallelFor((k * c + 7) / 8, grain: 512, (captures, positionStride(k * c), k * c, body)) { blocks, all in
            let (captures, stride, kernels, body) = all
            for block in blocks { body(8 * block, min(8, kernels - 8 * block), stride, captures) }
        }
    }

    /// `u[ξ, K, C] = (G·w·Gᵀ)[ξ]` for every kernel of `w[K, C, 3, 3]`, eight kernels a time.
    static func winograd4x4Kernels(_ w: UnsafePointer<Float>, _ u: UnsafeMutablePointer<Float>,
                                   outputs k: Int, inputs c: Int) {
        forEachKernelBlock(outputs: k, inputs: c, (w, u)) { first, count, stride, captures in
            let (w, u) = captures
            @inline(__always) func tap(_ t: Int) -> Lanes {
                var x = Lanes()
                if count == 8 {
                    for l in 0..<8 { x[l] = w[(first + l) * 9 + t] }
                } else {
                    for l in 0..<count { x[l] = w[(first + l) * 9 + t] }
                }
                return x
            }
            // G down the kernel's columns, then along each of the six rows.
            let r0 = mulG(tap(0), tap(3), tap(6)), r1 = mulG(tap(1), tap(4), tap(7)), r2 = mulG(tap(2), tap(5), tap(8))
            @inline(__always) func row(_ a: Int, _ x0: Lanes, _ x1: Lanes, _ x2: Lanes) {
                let v = mulG(x0, x1, x2), o = u + 6 * a * stride + first
                store(v, o, stride: stride, count: count)
            }
            row(0, r0.0, r1.0, r2.0)
            row(1, r0.1, r1.1, r2.1)
            row(2, r0.2, r1.2, r2.2)
            row(3, r0.3, r1.3, r2.3)
            row(4, r0.4, r1.4, r2.4)
            row(5, r0.5, r1.5, r2.5)
        }
    }

    /// `dw[K, C, 3, 3] += Gᵀ·m[·, k, c]·G` for the summed products `m[ξ, K, C]`, eight
    /// kernels a time.
    static func winograd4x4KernelGradient(_ m: UnsafePointer<Float>, _ dw: UnsafeMutablePointer<Float>,
                                          outputs k: Int, inputs c: Int) {
        forEachKernelBlock(outputs: k, inputs: c, (m, dw)) { first, count, stride, captures in
            let (m, dw) = captures
            // Gᵀ along each row of m, then down the columns. Lanes past the last kernel
            // read the position's padding or the next position, and are dropped.
            @inline(__always) func row(_ a: Int) -> (Lanes, Lanes, Lanes) {
                let p = m + 6 * a * stride + first
                return mulGT((load(p), load(p + stride), load(p + 2 * stride), load(p + 3 * stride),
                           load(p + 4 * stride), load(p + 5 * stride)))
            }
            let (r0, r1, r2, r3, r4, r5) = (row(0), row(1), row(2), row(3), row(4), row(5))
            let columns = (mulGT((r0.0, r1.0, r2.0, r3.0, r4.0, r5.0)), mulGT((r0.1, r1.1, r2.1, r3.1, r4.1, r5.1)),
                           mulGT((r0.2, r1.2, r2.2, r3.2, r4.2, r5.2)))
            for l in 0..<count {
                let d = dw + (first + l) * 9
                // Tap (i, j) of the kernel is row i of column j.
                d[0] += columns.0.0[l]; d[1] += columns.1.0[l]; d[2] += columns.2.0[l]
                d[3] += columns.0.1[l]; d[4] += columns.1.1[l]; d[5] += columns.2.1[l]
                d[6] += columns.0.2[l]; d[7] += columns.1.2[l]; d[8] += columns.2.2[l]
            }
        }
    }
}
