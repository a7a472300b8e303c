import Foundation
import Testing
@testable import BLASNet

/// Optimizers, learning-rate schedules and label smoothing against PyTorch, on the
/// fixture written by `scripts/make-optim-fixtures` (see make_optim_fixtures.py for the
/// scenarios and keys).
struct OptimizerTests {
    /// The scenarios of make_optim_fixtures.py; ``fixtureHasNoOtherScenarios()`` keeps the lists in step.
    static let scenarios = ["sgd_plain", "sgd_momentum_step", "sgd_nesterov_cosine", "sgd_dampening_warmup_step",
                            "adamw_default", "adamw_onecycle", "adamw_amsgrad_warmup_cosine"]
    /// Four ulps of the tensor's largest element: the operations of each step round
    /// (and fuse) differently in PyTorch's vectorized loops, about one ulp over the run.
    static let parameterTolerance = 4 * Double(Float.ulpOfOne)
    /// Rates are PyTorch's Float64 expressions, of the base rate rounded to Float32 and
    /// rounded to Float32 at the end: two half-ulp roundings.
    static let rateTolerance = Double(Float.ulpOfOne)

    struct Fixture {
        let file: SafeTensorsFile
        let steps: Int
        let scenarios: [String: [String: Any]]

        init() throws {
            let url = try #require(Bundle.module.url(forResource: "optimizers", withExtension: "safetensors", subdirectory: "Fixtures"))
            file = try SafeTensorsFile(contentsOf: url.path)
            steps = try #require(file.metadata["steps"].flatMap { Int($0) })
            let json = try #require(file.metadata["scenarios"]?.data(using: .utf8))
            scenarios = try #require(try JSONSerialization.jsonObject(with: json) as? [String: [String: Any]])
        }

        func tensor(_ key: String) throws -> Tensor { try #require(file[key], "fixture lacks \(key)").floats() }

        /// A float64 tensor's elements, unrounded.
        func doubles(_ key: String) throws -> [Double] {
            let t = try #require(file[key], "fixture lacks \(key)")
            try #require(t.dtype == .f64, "\(key) is \(t.dtype.rawValue), not F64")
            return t.bytes.withUnsafeBytes { raw in (0..<(raw.count / 8)).map { raw.loadUnaligned(fromByteOffset: $0 * 8, as: Double.self) } }
        }

        /// Fresh parameters holding the fixture's initial values.
        func parameters() throws -> [Parameter] {
            try (0..<3).map { Parameter(try tensor("param.\($0)")) }
        }

        /// Row `step` of a `[steps, *shape]` history tensor.
        func row(_ key: String, _ step: Int) throws -> Tensor {
            let history = try tensor(key)
            let shape = Array(history.shape.dropFirst()), count = shape.reduce(1, *)
            return try Tensor(shape: shape, scalars: Array(history.scalars[(step * count)..<((step + 1) * count)]))
        }

        /// The scenario's optimizer over `parameters`, and its schedule.
        func make(_ name: String, _ parameters: [Parameter]) throws -> (any Optimizer, LearningRateSchedule) {
            let scenario = try #require(scenarios[name])
            let config = try #require(scenario["optimizer"] as? [String: Any])
            func float(_ key: String, _ fallback: Float) -> Float { (config[key] as? Double).map { Float($0) } ?? fallback }
            let optimizer: any Optimizer
            let learningRate: Float
            switch config["name"] as? String {
            case "sgd":
                learningRate = float("lr", .nan)
                optimizer = try SGD(parameters, learningRate: learningRate, momentum: float("momentum", 0),
                                    dampening: float("dampening", 0), weightDecay: float("weight_decay", 0),
                                    nesterov: config["nesterov"] as? Bool ?? false)
            case "adamw":
                learningRate = float("lr", 1e-3)
                let betas = config["betas"] as? [Double] ?? [0.9, 0.999]
                optimizer = try AdamW(parameters, learningRate: learningRate, betas: (betas[0], betas[1]),
                                      eps: float("eps", 1e-8), weightDecay: float("weight_decay", 1e-2),
                                      amsgrad: config["amsgrad"] as? Bool ?? false)
            default:
                throw BLASNetError.invalidArgument("\(name): unknown optimizer \(config)")
            }
            let schedule = try LearningRateSchedule(
                kind: .init(parsing: try #require(scenario["schedule"] as? String)), baseLR: learningRate, totalSteps: steps,
                warmupSteps: scenario["warmup_steps"] as? Int ?? 0,
                warmupStartFactor: (scenario["warmup_start_factor"] as? Double).map { Float($0) } ?? 1.0 / 3)
            return (optimizer, schedule)
        }

        /// Sets each parameter's gradient for `step`, freezing those the scenario freezes at that step.
        func prepare(_ name: String, _ parameters: [Parameter], step: Int) throws {
            let frozenUntil = scenarios[name]?["frozen_until"] as? [String: Int] ?? [:]
            for (i, p) in parameters.enumerated() {
                p.grad = try row("grad.\(i)", step)
                p.requiresGrad = step >= frozenUntil[String(i)] ?? 0
            }
        }
    }

    /// `max|ours − reference| ≤ tolerance · max|reference|`.
    static func expectClose(_ ours: Tensor, _ reference: Tensor, tolerance: Double, _ what: String,
                            sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(ours.shape == reference.shape, "\(what): shape \(ours.shape), reference \(reference.shape)", sourceLocation: sourceLocation)
        // A NaN anywhere, in ours or in the reference, fails: max() would skip it after the first element.
        let scale = reference.scalars.map { Double(abs($0)) }.maxOrNaN() ?? 0
        let errors = zip(ours.scalars, reference.scalars).map { abs(Double($0) - Double($1)) }
        #expect(scale.isFinite && errors.allSatisfy { $0 <= tolerance * scale },
                "\(what): max error \(errors.maxOrNaN() ?? 0), scale \(scale)", sourceLocation: sourceLocation)
    }

    @Test func fixtureHasNoOtherScenarios() throws {
        #expect(Set(try Fixture().scenarios.keys) == Set(Self.scenarios))
    }

    @Test(arguments: scenarios)
    func matchesPyTorch(_ name: String) throws {
        let fixture = try Fixture()
        let parameters = try fixture.parameters()
        let (optimizer, schedule) = try fixture.make(name, parameters)
        let rates = try fixture.doubles("\(name).lr")
        for step in 0..<fixture.steps {
            try fixture.prepare(name, parameters, step: step)
            optimizer.step(following: schedule)
            let rate = schedule.learningRate(at: step)
            #expect(abs(Double(rate) - rates[step]) <= Self.rateTolerance * rates[step],
                    "\(name) step \(step): rate \(rate), PyTorch \(rates[step])")
            for (i, p) in parameters.enumerated() {
                Self.expectClose(p.value, try fixture.row("\(name).param.\(i)", step), tolerance: Self.parameterTolerance,
                                 "\(name) step \(step) parameter \(i)")
            }
        }
        #expect(optimizer.stepCount == fixture.steps)
    }

    /// A safetensors checkpoint: parameter values, optimizer state, and the step count in the metadata.
    static func checkpoint(_ parameters: [Parameter], _ optimizer: any Optimizer) throws -> Data {
        let tensors = parameters.enumerated().map { ("param.\($0.offset)", SafeTensor($0.element.value)) }
            + optimizer.stateTensors().sorted { $0.key < $1.key }.map { ($0.key, SafeTensor($0.value)) }
        return try SafeTensorsFile(tensors: tensors, metadata: ["step": String(optimizer.stepCount)]).serialized()
    }

    @Test(arguments: scenarios)
    func checkpointResumesExactly(_ name: String) throws {
        // After step 2 some scenarios have parameters still frozen, hence without state.
        let fixture = try Fixture(), split = 2
        let parameters = try fixture.parameters()
        let (optimizer, schedule) = try fixture.make(name, parameters)
        for step in 0..<split {
            try fixture.prepare(name, parameters, step: step)
            optimizer.step(following: schedule)
        }
        let file = try SafeTensorsFile(data: Self.checkpoint(parameters, optimizer))
        let restoredParameters = try fixture.parameters()
        for (i, p) in restoredParameters.enumerated() { p.value = try #require(file["param.\(i)"]).floats() }
        let (restored, _) = try fixture.make(name, restoredParameters)
        try restored.loadState(Dictionary(uniqueKeysWithValues: file.tensors.map { ($0.name, $0.tensor.floats()) }),
                               stepCount: try #require(file.metadata["step"].flatMap { Int($0) }))
        #expect(restored.stepCount == split)
        #expect(restored.stateTensors() == optimizer.stateTensors())
        for step in split..<fixture.steps {
            try fixture.prepare(name, parameters, step: step)
            try fixture.prepare(name, restoredParameters, step: step)
            optimizer.step(following: schedule)
            restored.step(following: schedule)
            #expect(restored.learningRate == optimizer.learningRate)
            for (a, b) in zip(parameters, restoredParameters) { #expect(a.value == b.value, "\(name) step \(step)") }
        }
    }

    @Test func frozenParametersAreUntouched() throws {
        let frozen = Parameter(try Tensor(shape: [3], scalars: [1, -2, 3]))
        let trained = Parameter(try Tensor(shape: [2], scalars: [0.5, -0.5]))
        frozen.requiresGrad = false
        let optimizers: [any Optimizer] = [
            try SGD([frozen, trained], learningRate: 0.1, momentum: 0.9, weightDecay: 0.1),
            try AdamW([frozen, trained], learningRate: 0.1, amsgrad: true),
        ]
        for optimizer in optimizers {
            let before = (frozen.value, trained.value)
            frozen.grad = Tensor(shape: [3], repeating: 1)
            trained.grad = Tensor(shape: [2], repeating: 1)
            for _ in 0..<3 { optimizer.step() }
            #expect(frozen.value == before.0)
            #expect(trained.value != before.1)
            #expect(!optimizer.stateTensors().isEmpty)
            #expect(optimizer.stateTensors().keys.allSatisfy { $0.hasSuffix(".1") }, "\(optimizer.stateTensors().keys)")
        }
    }

    /// AdamW's moments as PyTorch's, to the bit at these values (PyTorch's lerp is one fused
    /// multiply-add, which elsewhere can round one ulp away from these two roundings):
    /// - the first is `exp_avg.lerp_(grad, 1 − β1)`, and ATen's lerp takes a weight of ½ or
    ///   more from the far end, `g − (g − m)·(1 − w)`: at β1 = 0 that is the gradient
    ///   exactly, where `m + w·(g − m)` rounds 1 + (1e-8 − 1) to 0, and at β1 = 0.3 the two
    ///   differ in the last bit;
    /// - `1 − β1` and `1 − β2` are rounded from Float64 betas, as from Python's floats.
    /// Expected values from torch 2.15 (`foreach=False`), gradients 1 then `g`, at a rate
    /// of 2⁻¹⁰, which Float32 holds exactly.
    @Test(arguments: [(0.0, Float(1e-8), [Float(0x1.5798eep-27), 0x1.05e1c2p-10, -0x1.fffffcp-11]),
                      (0.3, 0.1, [0x1.1eb852p-2, 0x1.0880d8p-10, -0x1.6edef0p-10]),
                      (0.9, 0.1, [0x1.99999ap-4, 0x1.0880d8p-10, -0x1.bda5c2p-10])])
    func adamWMomentsAreTorchs(beta1: Double, g: Float, expected: [Float]) throws {
        let p = Parameter(Tensor(shape: [1]))
        let adam = try AdamW([p], learningRate: 0x1p-10, betas: (beta1, 0.999), weightDecay: 0)
        for gradient in [1, g] {
            p.grad = Tensor(shape: [1], repeating: gradient)
            adam.step()
        }
        let state = adam.stateTensors()
        let mean = try #require(state["optimizer.exp_avg.0"]), squareMean = try #require(state["optimizer.exp_avg_sq.0"])
        #expect([mean[0], squareMean[0], p.value[0]] == expected, "β1 \(beta1): exp_avg, exp_avg_sq, weight")
    }

    /// As PyTorch's optimizers, a parameter without a gradient (no backward pass reached
    /// it) is skipped: no weight decay, no momentum, no state.
    @Test func parametersWithoutGradientsAreSkipped() throws {
        for make in [{ try SGD($0, learningRate: 0.1, momentum: 0.9, weightDecay: 0.1) as any Optimizer },
                     { try AdamW($0, learningRate: 0.1, weightDecay: 0.1) as any Optimizer }] {
            let unreached = Parameter(try Tensor(shape: [3], scalars: [1, -2, 3]))
            let reached = Parameter(try Tensor(shape: [2], scalars: [0.5, -0.5]))
            let optimizer = try make([unreached, reached])
            reached.grad = Tensor(shape: [2], repeating: 1)
            let before = (unreached.value, reached.value)
            optimizer.step()
            #expect(unreached.grad == nil)
            #expect(unreached.value == before.0)
            #expect(reached.value != before.1)
            #expect(optimizer.stateTensors().keys.allSatisfy { !$0.hasSuffix(".0") }, "\(optimizer.stateTensors().keys)")
        }
    }

    @Test func invalidHyperparametersThrow() {
        let p = [Parameter(Tensor(shape: [2]))]
        #expect(throws: BLASNetError.self) { try SGD(p, learningRate: -1) }
        #expect(throws: BLASNetError.self) { try SGD(p, learningRate: 0.1, nesterov: true) }
        #expect(throws: BLASNetError.self) { try SGD(p, learningRate: 0.1, momentum: 0.9, dampening: 0.1, nesterov: true) }
        #expect(throws: BLASNetError.self) { try AdamW(p, learningRate: -1e-3) }
        #expect(throws: BLASNetError.self) { try AdamW(p, learningRate: .nan) }
        #expect(throws: BLASNetError.self) { try AdamW(p, betas: (1, 0.999)) }
        #expect(throws: BLASNetError.self) { try AdamW(p, betas: (0.9, -0.1)) }
        #expect(throws: BLASNetError.self) { try AdamW(p, eps: -1) }
        #expect(throws: BLASNetError.self) { try AdamW(p, weightDecay: -1) }
        // Infinite or NaN settings passed `>= 0` and made every weight NaN at the first step.
        #expect(throws: BLASNetError.self) { try SGD(p, learningRate: .infinity) }
        #expect(throws: BLASNetError.self) { try SGD(p, learningRate: 0.1, momentum: 0.9, dampening: .nan) }
        #expect(throws: BLASNetError.self) { try SGD(p, learningRate: 0.1, weightDecay: .infinity) }
        #expect(throws: BLASNetError.self) { try AdamW(p, eps: .infinity) }
        #expect(throws: BLASNetError.self) { try AdamW(p, weightDecay: .infinity) }
        for norm in [{ try BatchNorm(4, eps: .nan) }, { try BatchNorm(4, momentum: 1.5) }, { try GroupNorm(groups: 2, channels: 4, eps: -1) },
                     { try InstanceNorm2d(4, momentum: -0.1) }, { try LayerNorm(normalizedShape: 4, eps: .infinity) }] as [() throws -> any Module] {
            #expect(throws: BLASNetError.self) { _ = try norm() }
        }
        #expect(throws: BLASNetError.self) { try CrossEntropyLoss(labelSmoothing: -0.1) }
        #expect(throws: BLASNetError.self) { try CrossEntropyLoss(labelSmoothing: 1.5) }
        #expect(throws: BLASNetError.self) { try CrossEntropyLoss(labelSmoothing: .nan) }

        let invalidSchedules: [(LearningRateSchedule.Kind, Float, Int, Int, Float)] = [
            (.constant, -1, 10, 0, 0.5), (.constant, 0.1, 0, 0, 0.5), (.constant, 0.1, 10, 10, 0.5),
            (.constant, 0.1, 10, 2, 0), (.constant, 0.1, 10, 2, 1.5), (.step(every: 0), 0.1, 10, 0, 0.5),
            (.step(every: 2, gamma: 0), 0.1, 10, 0, 0.5), (.cosine(minimum: -1), 0.1, 10, 0, 0.5),
            (.oneCycle(pctStart: 0.1), 0.1, 10, 0, 0.5), (.oneCycle(pctStart: 1), 0.1, 10, 0, 0.5),
            (.oneCycle(divFactor: 0), 0.1, 10, 0, 0.5), (.oneCycle(), 0.1, 10, 2, 0.5),
        ]
        for (kind, lr, total, warmup, start) in invalidSchedules {
            #expect(throws: BLASNetError.self, "\(kind) lr \(lr) total \(total) warm-up \(warmup) from \(start)") {
                try LearningRateSchedule(kind: kind, baseLR: lr, totalSteps: total, warmupSteps: warmup, warmupStartFactor: start)
            }
        }
    }

    @Test func invalidStateThrowsAndChangesNothing() throws {
        let p = [Parameter(Tensor(shape: [2], repeating: 1)), Parameter(Tensor(shape: [3], repeating: 1))]
        for q in p { q.grad = Tensor(shape: q.value.shape, repeating: 0.5) }
        let adam = try AdamW(p)
        adam.step()
        let state = adam.stateTensors()
        var wrongShape = state, incomplete = state, unexpected = state, badStep = state, late = state
        wrongShape["optimizer.exp_avg.1"] = Tensor(shape: [2])
        incomplete["optimizer.exp_avg_sq.0"] = nil
        unexpected["optimizer.momentum_buffer.0"] = Tensor(shape: [2])
        badStep["optimizer.step.0"] = Tensor(scalar: 1.5)
        late["optimizer.step.1"] = Tensor(scalar: 2)
        let fresh = try AdamW(p)
        for (name, broken) in [("wrong shape", wrongShape), ("incomplete", incomplete), ("unexpected", unexpected),
                               ("fractional step", badStep), ("step beyond the count", late)] {
            #expect(throws: BLASNetError.self, "\(name)") { try fresh.loadState(broken, stepCount: 1) }
            #expect(fresh.stateTensors().isEmpty && fresh.stepCount == 0, "\(name): a failed load changes nothing")
        }
        #expect(throws: BLASNetError.self) { try fresh.loadState(state, stepCount: -1) }
        // Int.max used to load, and the next step's `stepCount += 1` trapped.
        #expect(throws: BLASNetError.self) { try fresh.loadState(state, stepCount: Int.max) }
        #expect(throws: BLASNetError.self) { try SGD(p, learningRate: 0.1).loadState([:], stepCount: (1 << 53) + 1) }
        #expect(throws: BLASNetError.self) { try SGD(p, learningRate: 0.1, momentum: 0.9).loadState(state, stepCount: 1) }
        #expect(throws: BLASNetError.self) { try AdamW(p, amsgrad: true).loadState(state, stepCount: 1) }
        var withModel = state
        withModel["fc.weight"] = Tensor(shape: [7])
        try fresh.loadState(withModel, stepCount: 1)
        #expect(fresh.stateTensors() == state, "keys outside optimizer. are ignored")
    }

    @Test func scheduleValuesAtKnownPoints() throws {
        // Exact up to the one rounding to Float32.
        func rates(_ schedule: LearningRateSchedule, _ steps: [Int], _ expected: [Double],
                   sourceLocation: SourceLocation = #_sourceLocation) {
            for (step, value) in zip(steps, expected) {
                let rate = schedule.learningRate(at: step)
                #expect(abs(Double(rate) - value) <= 1e-7 * value, "step \(step): \(rate), expected \(value)", sourceLocation: sourceLocation)
            }
        }
        let cosine = try LearningRateSchedule(kind: .cosine(minimum: 0.01), baseLR: 0.1, totalSteps: 100)
        rates(cosine, [0, 50, 1000], [0.1, 0.055, cosine.learningRate(at: 99)].map { Double($0) })

        let oneCycle = try LearningRateSchedule(kind: .oneCycle(), baseLR: 0.1, totalSteps: 100)
        rates(oneCycle, [0, 99], [0.1 / 25, 0.1 / 25 / 1e4])
        #expect(oneCycle.learningRate(at: 29) == 0.1, "the peak ends the first pct-start of the steps")
        #expect(oneCycle.learningRate(at: 28) < 0.1 && oneCycle.learningRate(at: 30) < 0.1)

        let step = try LearningRateSchedule(kind: .step(every: 10, gamma: 0.5), baseLR: 0.2, totalSteps: 100,
                                            warmupSteps: 4, warmupStartFactor: 0.25)
        rates(step, [0, 1, 2, 3, 4, 13, 14, 34], [0.05, 0.0875, 0.125, 0.1625, 0.2, 0.2, 0.1, 0.025])

        let constant = try LearningRateSchedule(kind: .constant, baseLR: 0.3, totalSteps: 5)
        #expect((0..<7).allSatisfy { constant.learningRate(at: $0) == 0.3 })
    }

    @Test func scheduleKindsParse() throws {
        typealias Kind = LearningRateSchedule.Kind
        #expect(try Kind(parsing: "constant") == .constant)
        #expect(try Kind(parsing: "step:every=30") == .step(every: 30, gamma: 0.1))
        #expect(try Kind(parsing: "step:gamma=0.5,every=3") == .step(every: 3, gamma: 0.5))
        #expect(try Kind(parsing: "cosine") == .cosine(minimum: 0))
        #expect(try Kind(parsing: "cosine:minimum=1e-5") == .cosine(minimum: 1e-5))
        #expect(try Kind(parsing: "onecycle:pct-start=0.25") == .oneCycle(pctStart: 0.25, divFactor: 25, finalDivFactor: 1e4))
        for kind: Kind in [.constant, .step(every: 7, gamma: 0.3), .cosine(minimum: 1e-6),
                           .oneCycle(pctStart: 0.4, divFactor: 10, finalDivFactor: 100)] {
            #expect(try Kind(parsing: kind.description) == kind, "\(kind)")
        }
        for bad in ["", "linear", "Cosine", "step", "step:every=1.5", "step:every=3,every=4", "cosine:min=0",
                    "constant:gamma=1", "onecycle:pct-start", "cosine:"] {
            #expect(throws: BLASNetError.self, "\(bad)") { try Kind(parsing: bad) }
        }
        #expect(throws: BLASNetError.invalidArgument(
            "learning-rate schedule 'exponential': unknown schedule 'exponential'; expected constant, step, cosine or onecycle")) {
            try Kind(parsing: "exponential")
        }
    }

    @Test func labelSmoothingMatchesPyTorch() throws {
        let fixture = try Fixture()
        let logits = try fixture.tensor("ce.logits")
        let targets = try #require(fixture.file["ce.target"]).integers().map { Int($0) }
        let json = try #require(fixture.file.metadata["ce_label_smoothing"]?.data(using: .utf8))
        let smoothings = try #require(try JSONSerialization.jsonObject(with: json) as? [Double])
        for (j, smoothing) in smoothings.enumerated() {
            let (loss, gradient) = try CrossEntropyLoss(labelSmoothing: Float(smoothing))(logits, targets: targets)
            // References are Float64 rounded once; ours rounds once more.
            Self.expectClose(Tensor(scalar: loss), try fixture.tensor("ce.\(j).loss"), tolerance: 1e-6, "loss, ε \(smoothing)")
            Self.expectClose(gradient, try fixture.tensor("ce.\(j).grad"), tolerance: 1e-6, "gradient, ε \(smoothing)")
        }
    }

    @Test(arguments: [0.1, 0.3, 1.0] as [Float])
    func labelSmoothingGradientMatchesFiniteDifferences(_ smoothing: Float) throws {
        try GradientCheck.checkLoss(try CrossEntropyLoss(labelSmoothing: smoothing),
                                    logits: GradientCheck.random([4, 6], scale: 3, seed: 5), targets: [5, 0, 2, 2])
    }
}
