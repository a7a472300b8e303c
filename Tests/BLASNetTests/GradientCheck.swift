import Testing
@testable import BLASNet

/// Finite-difference checks: the loss is `L = Σ y·r` for a fixed random `r`, so the
/// exact gradient with respect to `y` is `r`; central differences of `L` (summed in
/// Float64) must match what `backward(r)` returns and accumulates.
enum GradientCheck {
    static func random(_ shape: [Int], scale: Float = 1, seed: UInt64) -> Tensor {
        var rng = SeededGenerator(seed: seed)
        return .uniform(shape: shape, bound: scale, using: &rng)
    }

    static func dot(_ a: Tensor, _ b: Tensor) -> Double {
        zip(a.scalars, b.scalars).reduce(0) { $0 + Double($1.0) * Double($1.1) }
    }

    /// Up to `count` indices spread over `0..<n`, always including the first and last.
    static func sample(_ n: Int, _ count: Int) -> [Int] {
        n <= count ? Array(0..<n) : (0..<count).map { $0 * (n - 1) / (count - 1) }
    }

    /// Checks the input gradient and every parameter gradient of `layer` at `x`.
    ///
    /// An entry passes when `|numeric − analytic| ≤ tolerance · max|analytic|` over its tensor.
    static func check(_ layer: any Module, input x: Tensor, h: Float = 1e-2, tolerance: Double = 1e-2,
                      samples: Int = 24, checkInput: Bool = true,
                      sourceLocation: SourceLocation = #_sourceLocation) throws {
        let y = try layer.forward(x)
        let r = random(y.shape, seed: 99)
        layer.zeroGrad()
        let dx = try layer.backward(r)
        let loss = { (input: Tensor) throws -> Double in dot(try layer.forward(input), r) }

        func compare(_ name: String, analytic: [Float], numeric: (Int) throws -> Double) throws {
            let scale = Double(analytic.map(abs).max() ?? 0) + 1e-6
            for i in sample(analytic.count, samples) {
                let n = try numeric(i)
                #expect(abs(n - Double(analytic[i])) <= tolerance * scale,
                        "\(name)[\(i)]: numeric \(n), analytic \(analytic[i]) (scale \(scale))", sourceLocation: sourceLocation)
            }
        }

        if checkInput {
            try compare("input", analytic: dx.scalars) { i in
                var plus = x, minus = x
                plus.scalars[i] += h
                minus.scalars[i] -= h
                return (try loss(plus) - loss(minus)) / Double(2 * h)
            }
        }
        for (name, p) in layer.namedParameters() {
            let analytic = try p.requiredGrad().scalars
            try compare(name, analytic: analytic) { i in
                let original = p.value.scalars[i]
                p.value.scalars[i] = original + h
                let up = try loss(x)
                p.value.scalars[i] = original - h
                let down = try loss(x)
                p.value.scalars[i] = original
                return (up - down) / Double(2 * h)
            }
        }
    }
}

extension GradientCheck {
    /// Checks directional derivatives of `L = loss(layer(x))` along random directions
    /// through the input and every parameter at once.
    ///
    /// For compositions with many ReLU and max-pool kinks, per-entry differences are
    /// dominated by the few inputs a step pushes across a kink; a derivative along a
    /// direction spread over all entries is not, yet still fails for any wrong term.
    static func checkDirectional(_ layer: any Module, input x: Tensor, directions: Int = 3, h: Float = 1e-3,
                                 tolerance: Double = 1e-2, checkInput: Bool = true,
                                 loss: ((Tensor) throws -> (Double, Tensor))? = nil,
                                 sourceLocation: SourceLocation = #_sourceLocation) throws {
        let y0 = try layer.forward(x)
        let r = random(y0.shape, seed: 77)
        let lossAndGradient = loss ?? { y in (dot(y, r), r) }
        layer.zeroGrad()
        let dx = try layer.backward(try lossAndGradient(y0).1)
        let parameters = layer.namedParameters().map(\.parameter)
        let grads = try parameters.map { try $0.requiredGrad() }
        let originals = parameters.map(\.value)
        for d in 0..<directions {
            let vx = random(x.shape, seed: 1000 + UInt64(d))
            let vp = parameters.enumerated().map { random($0.element.value.shape, seed: 2000 + UInt64(d * 1000 + $0.offset)) }
            func evaluate(_ sign: Float) throws -> Double {
                for (i, p) in parameters.enumerated() {
                    p.value = try Tensor(shape: originals[i].shape,
                                         scalars: zip(originals[i].scalars, vp[i].scalars).map { $0 + sign * h * $1 })
                }
                let input = checkInput ? try Tensor(shape: x.shape, scalars: zip(x.scalars, vx.scalars).map { $0 + sign * h * $1 }) : x
                return try lossAndGradient(try layer.forward(input)).0
            }
            let numeric = (try evaluate(1) - evaluate(-1)) / Double(2 * h)
            for (i, p) in parameters.enumerated() { p.value = originals[i] }
            let analytic = (checkInput ? dot(dx, vx) : 0) + zip(grads, vp).reduce(0) { $0 + dot($1.0, $1.1) }
            #expect(abs(numeric - analytic) <= tolerance * max(abs(analytic), 1e-3),
                    "direction \(d): numeric \(numeric), analytic \(analytic)", sourceLocation: sourceLocation)
        }
    }
}

extension GradientCheck {
    /// Checks the gradient a loss returns, for every logit, against central differences
    /// of the loss it returns: `|numeric − analytic| ≤ tolerance · max|analytic|`.
    static func checkLoss(_ loss: any Loss, logits: Tensor, targets: [Int], h: Float = 1e-2, tolerance: Double = 1e-3,
                          sourceLocation: SourceLocation = #_sourceLocation) throws {
        let analytic = try loss(logits, targets: targets).gradient
        let scale = analytic.scalars.map { Double(abs($0)) }.max()!
        for i in 0..<logits.count {
            var plus = logits, minus = logits
            plus[i] += h
            minus[i] -= h
            let numeric = (Double(try loss(plus, targets: targets).loss) - Double(try loss(minus, targets: targets).loss)) / Double(2 * h)
            #expect(abs(numeric - Double(analytic[i])) <= tolerance * scale, "[\(i)]: numeric \(numeric), analytic \(analytic[i])",
                    sourceLocation: sourceLocation)
        }
    }
}

extension Parameter {
    /// The gradient a backward pass must have left: a test without one fails instead of trapping.
    func requiredGrad(sourceLocation: SourceLocation = #_sourceLocation) throws -> Tensor {
        try #require(grad, "no gradient", sourceLocation: sourceLocation)
    }
}
