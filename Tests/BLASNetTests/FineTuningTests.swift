import Foundation
import Testing
@testable import BLASNet

/// The pieces of fine-tuning: the closed-form head, the BatchNorm shift, the regimes.
struct FineTuningTests {
    static func data(count: Int, seed: UInt64) throws -> ImageDataset {
        var rng = SeededGenerator(seed: seed)
        return try ImageDataset(pixels: (0..<(count * 64)).map { _ in UInt8.random(in: 0...255, using: &rng) },
                                labels: (0..<count).map { $0 % 3 }, channels: 1, height: 8, width: 8,
                                classNames: ["a", "b", "c"])
    }

    /// timm's adapt_input_conv, written out: one channel sums the RGB kernels; C channels
    /// repeat them (channel c takes colour c mod 3) scaled by 3/C.
    @Test func rgbWeightsAdaptToOtherChannelCounts() throws {
        let rgb: [Float] = (0..<12).map { Float($0) - 4.5 }   // [O 2, I 3, 1, 2]
        let file = SafeTensorsFile(tensors: [("conv1.weight", SafeTensor(try Tensor(shape: [2, 3, 1, 2], scalars: rgb))),
                                             ("bn1.bias", SafeTensor(Tensor(shape: [2], repeating: 7)))])
        let gray = try #require(try file.adaptingInputChannels(to: 1)["conv1.weight"]).floats()
        #expect(gray.shape == [2, 1, 1, 2])
        var sums: [Float] = [], repeated: [Float] = []
        for o in 0..<2 {
            for t in 0..<2 {
                let (r, g, b) = (rgb[o * 6 + t], rgb[o * 6 + 2 + t], rgb[o * 6 + 4 + t])
                sums.append(r + g + b)
            }
            for c in 0..<4 {
                for t in 0..<2 { repeated.append(rgb[(o * 3 + c % 3) * 2 + t] * 0.75) }
            }
        }
        #expect(gray.scalars == sums)
        let four = try #require(try file.adaptingInputChannels(to: 4)["conv1.weight"]).floats()
        #expect(four.shape == [2, 4, 1, 2])
        #expect(four.scalars == repeated)
        #expect(try file.adaptingInputChannels(to: 1)["bn1.bias"]?.floats().scalars == [7, 7])
        #expect(try file.adaptingInputChannels(to: 3)["conv1.weight"]?.floats().scalars == rgb)
        let twoChannel = SafeTensorsFile(tensors: [("conv1.weight", SafeTensor(Tensor(shape: [2, 2, 1, 1])))])
        #expect(throws: BLASNetError.self) { try twoChannel.adaptingInputChannels(to: 4) }
        // Sized by the caller's count: an overflow or terabytes, refused before allocating.
        for huge in [1 << 60, 1 << 40] { #expect(throws: BLASNetError.self) { try file.adaptingInputChannels(to: huge) } }
    }

    /// Grid 1: 16 features for 30 images, the primal form; grid 2: 64, the dual.
    @Test(arguments: [1, 2])
    func ridgeHeadSolvesItsNormalEquations(headGrid: Int) throws {
        let model = try ResNet(.resnet8, numClasses: 3, inChannels: 1, stem: .cifar, width: 4, headGrid: headGrid, seed: 2)
        let dataset = try Self.data(count: 30, seed: 3)
        let loader = try DataLoader(dataset: dataset, batchSize: 7, shuffle: false, seed: 0, mean: [0.5], std: [0.3])
        let ridge = 1e-2
        // λ = 0 would leave the normal equations singular here: 17 features plus a bias, 30 images, dead channels possible.
        for bad in [0, -1, Double.nan] { #expect(throws: BLASNetError.self) { try RidgeHead.fit(model, on: loader, ridge: bad) } }
        try RidgeHead.fit(model, on: loader, ridge: ridge)

        // Independently: the gradient of ‖[X 1]θ − Y‖² + λ'‖W‖² vanishes at the fitted θ.
        let images = try Tensor(shape: [30, 1, 8, 8], scalars: loader.batches(epoch: 0).flatMap(\.images.scalars))
        let x = try model.features(images).scalars.map(Double.init)
        let f = model.fc.inFeatures
        let w = model.fc.weight.value.scalars.map(Double.init), b = model.fc.bias!.value.scalars.map(Double.init)
        let meanSquaredNorm = (0..<30).reduce(0.0) { s, r in s + (0..<f).reduce(0.0) { $0 + x[r * f + $1] * x[r * f + $1] } } / 30
        let lambda = ridge * meanSquaredNorm * 30
        var largest = 0.0, scale = 0.0
        for c in 0..<3 {
            let residual = (0..<30).map { r in (0..<f).reduce(b[c]) { $0 + x[r * f + $1] * w[c * f + $1] } - (r % 3 == c ? 1 : 0) }
            for j in 0...f {
                let feature = { (r: Int) in j < f ? x[r * f + j] : 1 }
                let gradient = (0..<30).reduce(0.0) { $0 + feature($1) * residual[$1] } + (j < f ? lambda * w[c * f + j] : 0)
                largest = nanMax(largest, abs(gradient))  // a NaN fails, as max would skip it
                scale = nanMax(scale, (0..<30).reduce(0.0) { $0 + abs(feature($1)) })
            }
        }
        #expect(largest < 1e-4 * scale, "normal-equation residual \(largest) (scale \(scale))")
        #expect(model.namedParameters().filter { !$0.name.hasPrefix("fc.") }.allSatisfy { $0.parameter.grad == nil })
    }

    /// A head too wide for its normal equations (64 channels over a 17×17 grid: 18,496
    /// features) and a negative stage count are refused before any work.
    @Test func fineTuningRefusesWhatItCannotHold() throws {
        let loader = try DataLoader(dataset: try Self.data(count: 6, seed: 3), batchSize: 3, shuffle: false, seed: 0,
                                    mean: [0.5], std: [0.3])
        let wide = try ResNet(.resnet8, numClasses: 3, inChannels: 1, stem: .cifar, width: 16, headGrid: 17)
        #expect(wide.fc.inFeatures > RidgeHead.maximumFeatures)
        #expect(throws: BLASNetError.self) { try RidgeHead.fit(wide, on: loader) }
        let model = try ResNet(.resnet8, numClasses: 3, inChannels: 1, stem: .cifar, width: 4)
        #expect(throws: BLASNetError.self) { try FineTuningStrategy.partial(stages: -1).apply(to: model) }
    }

    @Test func generalizedCrossValidationMatchesTheHatMatrix() throws {
        // Independently of the normal-equation shortcuts: build H = A(AᵀA + λ'D)⁻¹Aᵀ by
        // Gauss–Jordan inversion and score m·‖Y − HY‖² / (m − tr H)².
        let (m, f, k) = (30, 5, 3), n = f + 1
        var rng = SeededGenerator(seed: 11)
        let a = (0..<m).map { _ in (0..<f).map { _ in Double.random(in: 0...2, using: &rng) } + [1] }
        let y = (0..<m).map { r in (0..<k).map { Double(r % k == $0 ? 1 : 0) } }
        var gram = [Double](repeating: 0, count: n * n), rhs = [Double](repeating: 0, count: n * k)
        for r in 0..<m {
            for i in 0..<n {
                for j in 0..<n { gram[i * n + j] += a[r][i] * a[r][j] }
                for c in 0..<k { rhs[i * k + c] += a[r][i] * y[r][c] }
            }
        }
        let equations = try RidgeHead.NormalEquations(gram: gram, rhs: rhs, n: n, k: k, count: m)
        for ridge in [1e-4, 1e-2, 1.0] {
            let meanSquaredNorm = (0..<f).reduce(0.0) { $0 + gram[$1 * n + $1] } / Double(m)
            var inverse = (0..<n).map { i in (0..<n).map { j in gram[i * n + j] + (i == j && i < f ? ridge * meanSquaredNorm * Double(m) : 0) } + (0..<n).map { i == $0 ? 1.0 : 0 } }
            for p in 0..<n {
                let pivot = inverse[p][p]
                inverse[p] = inverse[p].map { $0 / pivot }
                for r in 0..<n where r != p {
                    let factor = inverse[r][p]
                    inverse[r] = zip(inverse[r], inverse[p]).map { $0 - factor * $1 }
                }
            }
            let hat = (0..<m).map { r in (0..<m).map { s in
                (0..<n).reduce(0.0) { t, i in t + a[r][i] * (0..<n).reduce(0.0) { $0 + inverse[i][n + $1] * a[s][$1] } }
            } }
            let trace = (0..<m).reduce(0.0) { $0 + hat[$1][$1] }
            let residual = (0..<m).reduce(0.0) { total, r in
                total + (0..<k).reduce(0.0) { t, c in
                    let fitted = (0..<m).reduce(0.0) { $0 + hat[r][$1] * y[$1][c] }
                    return t + (y[r][c] - fitted) * (y[r][c] - fitted)
                }
            }
            let expected = Double(m) * residual / ((Double(m) - trace) * (Double(m) - trace))
            let got = equations.gcv(ridge)
            #expect(abs(got - expected) < 1e-9 * expected, "λ \(ridge): GCV \(got), hat-matrix value \(expected)")
        }
        // The dual form scores and solves the same problem: here (30 images, 5 features), and
        // with fewer images than features, where ``fit`` uses it.
        for (images, features) in [(m, f), (6, 9)] {
            var rows: [Double] = [], targets: [Double] = [], g = [Double](repeating: 0, count: (features + 1) * (features + 1))
            for r in 0..<images {
                let row = (0..<features).map { _ in Double.random(in: 0...2, using: &rng) } + [1]
                rows += row
                targets += (0..<k).map { r % k == $0 ? 1 : 0 }
                for i in 0...features { for j in 0...features { g[i * (features + 1) + j] += row[i] * row[j] } }
            }
            let b = (0...features).flatMap { i in (0..<k).map { c in (0..<images).reduce(0.0) { $0 + rows[$1 * (features + 1) + i] * targets[$1 * k + c] } } }
            let primal = try RidgeHead.NormalEquations(gram: g, rhs: b, n: features + 1, k: k, count: images)
            let dual = try RidgeHead.KernelEquations(rows: rows, targets: targets, n: features + 1, k: k)
            for ridge in [1e-4, 1e-2, 1.0] {
                #expect(abs(primal.gcv(ridge) - dual.gcv(ridge)) < 1e-9 * primal.gcv(ridge), "\(images)×\(features), λ \(ridge)")
                let (p, d) = (primal.solve(ridge: ridge), dual.solve(ridge: ridge))
                let largest = p.map(abs).max()!
                #expect(zip(p, d).allSatisfy { abs($0 - $1) < 1e-9 * largest }, "\(images)×\(features), λ \(ridge)")
            }
        }
        // Features that are all 0 leave nothing to fit and no scale for λ: refused, not NaN weights.
        var empty = [Double](repeating: 0, count: n * n)
        empty[n * n - 1] = Double(m)
        #expect(throws: BLASNetError.self) { try RidgeHead.NormalEquations(gram: empty, rhs: rhs, n: n, k: k, count: m) }
    }

    @Test func batchNormShiftGrowsWithTheShiftAndLeavesTheModelAsItWas() throws {
        let model = try ResNet(.seresnet8, numClasses: 3, inChannels: 1, stem: .cifar, width: 4, seed: 2)
        var rng = SeededGenerator(seed: 5)
        let images = Tensor.normal(shape: [16, 1, 8, 8], std: 1, using: &rng)
        model.train()
        for _ in 0..<60 { _ = try model.forward(images) }    // running statistics ≈ these images'
        let buffers = model.namedBuffers().map(\.buffer.value.scalars)
        let near = try DomainShift.batchNormShift(model, images: images)
        var shifted = images
        shifted.scalars = images.scalars.map { $0 * 3 + 2 }
        let far = try DomainShift.batchNormShift(model, images: shifted)
        #expect(near >= 0 && near < 0.05, "shift of the training images themselves: \(near)")
        #expect(far > 10 * max(near, 0.01), "shift \(far) for rescaled images vs \(near)")
        #expect(model.namedBuffers().map(\.buffer.value.scalars) == buffers)
        #expect(model.modules.compactMap { $0 as? BatchNorm }.allSatisfy { $0.training && !$0.observesInput })
    }

    @Test func regimesFollowTheNotes() throws {
        #expect(FineTuningStrategy.choose(samplesPerClass: 100, shift: 0.1, stages: 4).0 == .head)
        #expect(FineTuningStrategy.choose(samplesPerClass: 100, shift: 5, stages: 4).0 == .partial(stages: 2))
        #expect(FineTuningStrategy.choose(samplesPerClass: 6000, shift: 0.1, stages: 4).0 == .full)
        #expect(FineTuningStrategy.choose(samplesPerClass: 6000, shift: 5, stages: 4).0 == .scratch)
        #expect(try FineTuningStrategy(parsing: "partial:2") == .partial(stages: 2))
        #expect(throws: BLASNetError.self) { try FineTuningStrategy(parsing: "partial:") }

        let model = try ResNet(.resnet18, numClasses: 3, inChannels: 1, stem: .cifar, width: 4, seed: 2)
        try FineTuningStrategy.head.apply(to: model)
        #expect(model.namedParameters().filter { $0.parameter.requiresGrad }.map(\.name) == ["fc.weight", "fc.bias"])
        try FineTuningStrategy.partial(stages: 1).apply(to: model)
        let frozen = Set(model.namedParameters().filter { !$0.parameter.requiresGrad }.map { $0.name.split(separator: ".")[0] })
        #expect(frozen == ["conv1", "bn1", "layer1"])
        try FineTuningStrategy(parsing: "partial:conv1,layer1.0").apply(to: model)
        let named = Set(model.namedParameters().filter { !$0.parameter.requiresGrad }.map { $0.name.split(separator: ".").prefix(2).joined(separator: ".") })
        #expect(named == ["conv1.weight", "layer1.0"])
        #expect(throws: BLASNetError.self) { try FineTuningStrategy(parsing: "partial:layer7").apply(to: model) }
        try FineTuningStrategy.full.apply(to: model)
        #expect(model.namedParameters().allSatisfy { $0.parameter.requiresGrad })
    }
}
