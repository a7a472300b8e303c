import Testing
@testable import BLASNet

/// Finite-difference checks: the loss is `L = Σ y·r` for a fixed random `r`, so the
/// exact gradient with respect to `y` is `r`; central differences of `L` (summed in
/// Float64) must match what `backward(r)` returns and accumulates.
///
/// New tensors come from a buffer pool, uninitialized: every check first asserts that
/// the whole of every gradient is finite, so that a backward leaving memory unwritten
/// fails whichever entries are compared.
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

    /// Expects every entry of `gradient` to be finite (a NaN or infinity fails, and so does
    /// the garbage a pooled buffer left unwritten usually holds).
    static func expectFinite(_ name: String, _ gradient: [Float], sourceLocation: SourceLocation) {
        let bad = gradient.indices.filter { !gradient[$0].isFinite }
        #expect(bad.isEmpty, "\(name): \(bad.count) of \(gradient.count) entries not finite, first [\(bad.first ?? 0)] = \(bad.first.map { gradient[$0] } ?? 0)",
                sourceLocation: sourceLocation)
    }

    /// Checks the input gradient and every parameter gradient of `layer` at `x`.
    ///
    /// A tensor of at most `compareAllUpTo` entries is compared entry by entry, a larger one
    /// at `samples` entries spread over it. An entry passes when `|numeric − analytic| ≤
    /// tolerance · scale`, the scale being the largest `|numeric|` or `|analytic|` over the
    /// compared entries of its tensor (so an entry that is not compared cannot loosen it).
    static func check(_ layer: any Module, input x: Tensor, h: Float = 1e-2, tolerance: Double = 1e-2,
                      samples: Int = 24, compareAllUpTo: Int = 512, checkInput: Bool = true,
                      sourceLocation: SourceLocation = #_sourceLocation) throws {
        let y = try layer.forward(x)
        let r = random(y.shape, seed: 99)
        layer.zeroGrad()
        let dx = try layer.backward(r)
        let loss = { (input: Tensor) throws -> Double in dot(try layer.forward(input), r) }

        func compare(_ name: String, analytic: [Float], numeric: (Int) throws -> Double) throws {
            expectFinite(name, analytic, sourceLocation: sourceLocation)
            let indices = analytic.count <= compareAllUpTo ? Array(analytic.indices) : sample(analytic.count, samples)
            let numerics = try indices.map(numeric)
            let scale = zip(indices, numerics).reduce(1e-6) { s, e in Swift.max(s, abs(e.1), Double(abs(analytic[e.0]))) }
            for (i, n) in zip(indices, numerics) {
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
    /// Checks directional derivatives of `L = loss(layer(x))` along random directions,
    /// one tensor at a time: the input (when `checkInput`), then each parameter tensor on
    /// its own, `directions` directions each, every other tensor held fixed.
    ///
    /// For compositions with many ReLU and max-pool kinks, per-entry differences are
    /// dominated by the few inputs a step pushes across a kink; a derivative along a
    /// direction spread over a whole tensor is not, yet still fails for any wrong term.
    /// Each tensor's derivative passes when `|numeric − analytic| ≤ tolerance ·
    /// max(|analytic|, |g|·|v|/√n, floor)` for its gradient `g` and direction `v` of `n`
    /// entries: relative to that tensor's own derivative, so that a wrong gradient of a
    /// small tensor (a bias) cannot hide under a large one's. The middle term, the size
    /// of `g·v` over random directions, keeps a direction that happens to be nearly
    /// orthogonal to `g` from asking for more digits than a float32 forward has (garbage
    /// that made `|g|` large would make `g·v` wrong by as much); `floor` is the absolute
    /// size below which a derivative is lost in that rounding.
    ///
    /// A step that crosses a kink makes the central difference the mean of two slopes,
    /// whatever the step's size. So the slope along the direction is also taken (by
    /// backward) at both ends of the step: where one differs from the slope at the point by
    /// more than half the tolerance, a kink lies between, and the step is taken again four
    /// times shorter, up to `refinements` times; a kink still there lies at the point, and
    /// the one-sided difference on the side whose slope holds is compared. The slopes only
    /// choose the step: a comparison with finite differences is always made, and a wrong
    /// gradient, whose slopes agree with each other, fails it at the first step.
    static func checkDirectional(_ layer: any Module, input x: Tensor, directions: Int = 3, h: Float = 1e-3,
                                 tolerance: Double = 1e-2, floor: Double = 1e-3, refinements: Int = 3, checkInput: Bool = true,
                                 loss: ((Tensor) throws -> (Double, Tensor))? = nil,
                                 sourceLocation: SourceLocation = #_sourceLocation) throws {
        let y0 = try layer.forward(x)
        let r = random(y0.shape, seed: 77)
        let lossAndGradient = loss ?? { y in (GradientCheck.dot(y, r), r) }
        let named = layer.namedParameters()
        /// The loss at `input` and the gradients of the input and of every parameter (copied out).
        func lossAndGradients(_ input: Tensor) throws -> (loss: Double, input: [Float], parameters: [[Float]]) {
            let (l, dy) = try lossAndGradient(try layer.forward(input))
            layer.zeroGrad()
            let dx = try layer.backward(dy)
            return (l, dx.scalars, try named.map { try $0.parameter.requiredGrad().scalars })
        }
        let base = try lossAndGradients(x)
        if checkInput { expectFinite("input", base.input, sourceLocation: sourceLocation) }
        for (g, (name, _)) in zip(base.parameters, named) { expectFinite(name, g, sourceLocation: sourceLocation) }
        func norm(_ a: [Float]) -> Double { a.reduce(0) { $0 + Double($1) * Double($1) }.squareRoot() }
        func along(_ a: [Float], _ v: Tensor) -> Double { zip(a, v.scalars).reduce(0) { $0 + Double($1.0) * Double($1.1) } }

        /// Compares the derivative along `v` of the tensor `t` (`k`: its parameter index, nil
        /// for the input), `set` putting a value of it in place.
        func expectDerivative(_ name: String, _ d: Int, _ k: Int?, along v: Tensor, from t: Tensor,
                              set: (Tensor) -> Void, input: () -> Tensor) throws {
            defer { set(t) }
            let slope = { (g: (loss: Double, input: [Float], parameters: [[Float]])) in along(k.map { g.parameters[$0] } ?? g.input, v) }
            let gradient = k.map { base.parameters[$0] } ?? base.input
            // A random direction can be nearly orthogonal to the gradient, its derivative a
            // small difference of large terms: the scale is at least the derivative's typical
            // size over directions of v's length, |g|·|v|/√n.
            let typical = (norm(gradient) * norm(v.scalars) / Double(v.count).squareRoot())
            let analytic = slope(base), scale = max(abs(analytic), typical, floor)
            /// The scale of the comparison over `step`: the floor grows as the step shrinks, as the loss's rounding error does.
            let bound = { (step: Float) in max(abs(analytic), typical, floor * Double(h / step)) }
            var step = h, tries: [(step: Float, up: (loss: Double, slope: Double), down: (loss: Double, slope: Double))] = []
            for _ in 0...refinements {
                func evaluate(_ sign: Float) throws -> (loss: Double, slope: Double) {
                    set(try Tensor(shape: t.shape, scalars: zip(t.scalars, v.scalars).map { $0 + sign * step * $1 }))
                    let g = try lossAndGradients(input())
                    return (g.loss, slope(g))
                }
                tries.append((step, try evaluate(1), try evaluate(-1)))
                let (up, down) = (tries.last!.up, tries.last!.down)
                if max(abs(up.slope - analytic), abs(down.slope - analytic)) <= tolerance * scale / 2 {
                    let numeric = (up.loss - down.loss) / Double(2 * step)
                    #expect(abs(numeric - analytic) <= tolerance * bound(step),
                            "\(name), direction \(d): numeric \(numeric), analytic \(analytic) (step \(step))", sourceLocation: sourceLocation)
                    return
                }
                step /= 4
            }
            // A kink however short the step: at the point itself. The analytic slope is then
            // one side's, the side where the slope stays the same: compared with that side's
            // difference, over the longest step over which its slope held.
            let last = tries.last!
            let upward = abs(last.up.slope - analytic) <= abs(last.down.slope - analytic)
            let side = tries.first { abs((upward ? $0.up : $0.down).slope - analytic) <= tolerance * scale / 2 } ?? last
            let numeric = upward ? (side.up.loss - base.loss) / Double(side.step) : (base.loss - side.down.loss) / Double(side.step)
            #expect(abs(numeric - analytic) <= tolerance * bound(side.step / 2),
                    "\(name), direction \(d): one-sided numeric \(numeric), analytic \(analytic) (step \(upward ? "+" : "−")\(side.step); slopes \(tries.map { "\($0.down.slope), \($0.up.slope) at ∓\($0.step)" }.joined(separator: "; ")))",
                    sourceLocation: sourceLocation)
        }

        for d in 0..<directions {
            if checkInput {
                var perturbed = x
                try expectDerivative("input", d, nil, along: random(x.shape, seed: 1000 + UInt64(d)), from: x,
                                     set: { perturbed = $0 }, input: { perturbed })
            }
            for (k, (name, p)) in named.enumerated() {
                try expectDerivative(name, d, k, along: random(p.value.shape, seed: 2000 + UInt64(d * 1000 + k)), from: p.value,
                                     set: { p.value = $0 }, input: { x })
            }
        }
    }
}

extension GradientCheck {
    /// Checks the gradient a loss returns, for every logit, against central differences
    /// of the loss it returns: `|numeric − analytic| ≤ tolerance · max|analytic|`, after
    /// expecting every entry of the gradient finite.
    static func checkLoss(_ loss: any Loss, logits: Tensor, targets: [Int], h: Float = 1e-2, tolerance: Double = 1e-3,
                          sourceLocation: SourceLocation = #_sourceLocation) throws {
        let analytic = try loss(logits, targets: targets).gradient
        expectFinite("logits", analytic.scalars, sourceLocation: sourceLocation)
        let scale = analytic.scalars.reduce(0.0) { Swift.max($0, Double(abs($1))) }
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

extension GradientCheck {
    /// β for a normalization with a fused ReLU: per channel, minus the middle of the widest
    /// gap between the channel's values of `γ·x̂` (`scaled`, for `x: [C, N, …]`), so that its
    /// kink lies as far as it can from every value while some outputs stay on each side.
    static func betaBetweenValues(_ scaled: [Double], channels: Int) -> [Float] {
        let size = scaled.count / channels
        return (0..<channels).map { c in
            let values = scaled[(c * size)..<((c + 1) * size)].sorted()
            let widest = zip(values, values.dropFirst()).max { $0.1 - $0.0 < $1.1 - $1.0 }!
            return Float(-(widest.0 + widest.1) / 2)
        }
    }

    /// Expects the fused ReLU of a normalization to stay clear of its kink through every
    /// step ``check(_:input:h:tolerance:samples:compareAllUpTo:checkInput:sourceLocation:)``
    /// takes: each input entry, each γ and each β moved by ±h. `preActivation(x, γ, β)` is
    /// `γ·x̂ + β` in Float64; its smallest magnitude must be ten times the largest change any
    /// step makes to any of it, so no step crosses the kink whatever the seed.
    static func expectClearOfKink(x: Tensor, gamma: [Float], beta: [Float], h: Float,
                                  preActivation: (Tensor, [Float], [Float]) -> [Double],
                                  sourceLocation: SourceLocation = #_sourceLocation) {
        let base = preActivation(x, gamma, beta)
        let margin = base.map(abs).reduce(Double.infinity) { $0.isNaN || $1.isNaN ? .nan : min($0, $1) }
        var shift = 0.0
        func step(_ moved: [Double]) {
            shift = zip(moved, base).reduce(shift) { nanMax($0, abs($1.0 - $1.1)) }
        }
        for sign: Float in [1, -1] {
            for i in 0..<x.count {
                var moved = x
                moved.scalars[i] += sign * h
                step(preActivation(moved, gamma, beta))
            }
            for c in gamma.indices {
                var (g, b) = (gamma, beta)
                g[c] += sign * h
                b[c] += sign * h
                step(preActivation(x, g, beta))
                step(preActivation(x, gamma, b))
            }
        }
        #expect(shift > 0 && margin.isFinite && margin >= 10 * shift,  // false for a NaN in either
                "smallest |γ·x̂ + β| \(margin), largest change a step makes \(shift)", sourceLocation: sourceLocation)
    }
}

/// `max(a, b)`, but NaN when either is: Swift's `max` returns the other argument when the
/// second is NaN, and `Sequence.max()` skips a NaN after the first element, so a largest
/// error taken with them can pass a test that produced NaN.
func nanMax<T: FloatingPoint>(_ a: T, _ b: T) -> T { a.isNaN || b.isNaN ? .nan : max(a, b) }

extension Sequence where Element: FloatingPoint {
    /// The largest element, NaN when any is; nil when there is none.
    func maxOrNaN() -> Element? {
        reduce(nil) { (largest: Element?, value: Element) in largest.map { nanMax($0, value) } ?? value }
    }
}
