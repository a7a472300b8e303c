import Foundation

/// A learning rate for every optimizer step of a run: an optional linear warm-up, then
/// one of PyTorch's schedulers over the remaining steps.
///
/// The rate is a pure function of the step index, so a resumed run needs nothing but
/// the optimizer's ``Optimizer/stepCount``: ``Optimizer/step(following:)`` applies it.
/// ``Trainer`` indexes it by batch instead, so that a skipped non-finite step still
/// advances the schedule, as PyTorch's `scheduler.step()` after every batch does.
/// Step `s` (from 0) gets the rate PyTorch's scheduler holds after `s` calls of
/// `scheduler.step()`; with warm-up, the schedule is
/// `SequentialLR([LinearLR(warmupStartFactor, total_iters=warmupSteps), <kind>], milestones=[warmupSteps])`
/// with `<kind>` spanning `totalSteps − warmupSteps` steps. Steps at or past `totalSteps`
/// keep the rate of the last one. Rates are computed in Float64 and rounded once.
public struct LearningRateSchedule: Sendable, Equatable {
    /// The schedule after warm-up; `t` counts steps from its start, `T` is its length.
    public enum Kind: Sendable, Equatable {
        /// The base rate throughout.
        case constant
        /// `StepLR`: `lr·gamma^⌊t / every⌋`.
        case step(every: Int, gamma: Float = 0.1)
        /// `CosineAnnealingLR(T_max=T, eta_min=minimum)`: `minimum + (lr − minimum)·(1 + cos(π·t/T))/2`.
        case cosine(minimum: Float = 0)
        /// `OneCycleLR(max_lr=lr, total_steps=T)` with cosine annealing and two phases: from
        /// `lr/divFactor` up to `lr` at step `pctStart·T − 1`, then down to
        /// `lr/(divFactor·finalDivFactor)` at the last step. Momentum is not cycled
        /// (as with `cycle_momentum=False`); it has its own warm-up, so no other.
        case oneCycle(pctStart: Float = 0.3, divFactor: Float = 25, finalDivFactor: Float = 1e4)
    }

    public let kind: Kind
    /// The rate the schedule is relative to: the rate after warm-up, and the peak of ``Kind/oneCycle(pctStart:divFactor:finalDivFactor:)``.
    public let baseLR: Float
    /// Steps in the run, warm-up included.
    public let totalSteps: Int
    /// Steps of linear warm-up before ``kind`` starts.
    public let warmupSteps: Int
    /// Warm-up starts at `baseLR·warmupStartFactor` (`LinearLR`'s `start_factor`, same default).
    public let warmupStartFactor: Float

    /// Throws if a value is outside the domain PyTorch accepts or would leave a phase without steps.
    public init(kind: Kind, baseLR: Float, totalSteps: Int, warmupSteps: Int = 0, warmupStartFactor: Float = 1.0 / 3) throws {
        func fail(_ message: String) -> BLASNetError { .invalidArgument("learning-rate schedule: " + message) }
        guard baseLR >= 0, baseLR.isFinite else { throw fail("base learning rate \(baseLR) must be finite and non-negative") }
        guard totalSteps > 0 else { throw fail("total steps \(totalSteps) must be positive") }
        guard (0..<totalSteps).contains(warmupSteps) else {
            throw fail("warm-up steps \(warmupSteps) must lie in 0..<\(totalSteps) (the total)")
        }
        guard warmupStartFactor > 0, warmupStartFactor <= 1 else {
            throw fail("warm-up start factor \(warmupStartFactor) must lie in (0, 1]")
        }
        switch kind {
        case .constant:
            break
        case let .step(every, gamma):
            guard every > 0, gamma > 0, gamma.isFinite else { throw fail("step needs every > 0 and gamma > 0, got \(kind)") }
        case let .cosine(minimum):
            guard minimum >= 0, minimum.isFinite else { throw fail("cosine minimum \(minimum) must be finite and non-negative") }
        case let .oneCycle(pctStart, divFactor, finalDivFactor):
            guard warmupSteps == 0 else { throw fail("onecycle warms up by itself (pct-start); warm-up steps must be 0") }
            guard pctStart * Float(totalSteps) > 1, pctStart < 1 else {
                throw fail("onecycle pct-start \(pctStart) leaves a phase of the \(totalSteps) steps empty; " +
                           "it must lie strictly between 1/\(totalSteps) and 1")
            }
            guard divFactor > 0, finalDivFactor > 0, divFactor.isFinite, finalDivFactor.isFinite else {
                throw fail("onecycle div-factor \(divFactor) and final-div-factor \(finalDivFactor) must be positive and finite (as Float32)")
            }
        }
        self.kind = kind
        self.baseLR = baseLR
        self.totalSteps = totalSteps
        self.warmupSteps = warmupSteps
        self.warmupStartFactor = warmupStartFactor
    }

    /// The rate for optimizer step `step` (0 for the first update).
    public func learningRate(at step: Int) -> Float {
        let step = min(max(step, 0), totalSteps - 1)
        let lr = Double(baseLR)
        if step < warmupSteps {
            let start = Double(warmupStartFactor)
            return Float(lr * (start + (1 - start) * Double(step) / Double(warmupSteps)))
        }
        let t = step - warmupSteps, span = totalSteps - warmupSteps
        switch kind {
        case .constant:
            return baseLR
        case let .step(every, gamma):
            return Float(lr * pow(Double(gamma), Double(t / every)))
        case let .cosine(minimum):
            let low = Double(minimum)
            return Float(low + (lr - low) * (1 + cos(.pi * Double(t) / Double(span))) / 2)
        case let .oneCycle(pctStart, divFactor, finalDivFactor):
            let initial = lr / Double(divFactor), final = initial / Double(finalDivFactor)
            // PyTorch's phase boundaries are fractional steps; the peak is the last step of the first phase.
            let peak = Double(pctStart) * Double(span) - 1, last = Double(span - 1), x = Double(t)
            return Float(x <= peak ? Self.anneal(from: initial, to: lr, x / peak)
                                   : Self.anneal(from: lr, to: final, (x - peak) / (last - peak)))
        }
    }

    /// `OneCycleLR._annealing_cos`: from `start` at `fraction` 0 to `end` at 1 along a half cosine.
    private static func anneal(from start: Double, to end: Double, _ fraction: Double) -> Double {
        end + (start - end) / 2 * (cos(.pi * fraction) + 1)
    }
}

extension LearningRateSchedule.Kind: CustomStringConvertible {
    /// Parses the command-line form `name[:option=value,…]`, as ``description`` writes it:
    /// `constant`, `step:every=N[,gamma=G]`, `cosine[:minimum=M]`,
    /// `onecycle[:pct-start=P,div-factor=D,final-div-factor=F]`; omitted options take
    /// the defaults of the enum cases. Values are range-checked by ``LearningRateSchedule/init(kind:baseLR:totalSteps:warmupSteps:warmupStartFactor:)``.
    public init(parsing text: String) throws {
        let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        let name = String(parts[0])
        func fail(_ message: String) -> BLASNetError { .invalidArgument("learning-rate schedule '\(text)': " + message) }
        var values: [String: Substring] = [:]
        for item in parts.dropFirst().first?.split(separator: ",", omittingEmptySubsequences: false) ?? [] {
            let pair = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard pair.count == 2 else { throw fail("expected option=value, got '\(item)'") }
            guard values.updateValue(pair[1], forKey: String(pair[0])) == nil else { throw fail("\(pair[0]) given twice") }
        }
        var known: [String] = []
        func value<T: LosslessStringConvertible>(_ option: String, default fallback: T? = nil) throws -> T {
            known.append(option)
            guard let text = values[option] else {
                guard let fallback else { throw fail("\(name) needs \(option)=…") }
                return fallback
            }
            guard let parsed = T(String(text)) else { throw fail("\(option)=\(text) is not a valid \(T.self)") }
            return parsed
        }
        switch name {
        case "constant": self = .constant
        case "step": self = .step(every: try value("every"), gamma: try value("gamma", default: 0.1))
        case "cosine": self = .cosine(minimum: try value("minimum", default: 0))
        case "onecycle":
            self = .oneCycle(pctStart: try value("pct-start", default: 0.3), divFactor: try value("div-factor", default: 25),
                             finalDivFactor: try value("final-div-factor", default: 1e4))
        default: throw fail("unknown schedule '\(name)'; expected constant, step, cosine or onecycle")
        }
        if let unknown = values.keys.sorted().first(where: { !known.contains($0) }) {
            throw fail("\(name) has no option '\(unknown)'" + (known.isEmpty ? "" : "; it takes \(known.joined(separator: ", "))"))
        }
    }

    /// The command-line form with every option, which ``init(parsing:)`` reads back.
    public var description: String {
        switch self {
        case .constant: "constant"
        case let .step(every, gamma): "step:every=\(every),gamma=\(gamma)"
        case let .cosine(minimum): "cosine:minimum=\(minimum)"
        case let .oneCycle(pctStart, divFactor, finalDivFactor):
            "onecycle:pct-start=\(pctStart),div-factor=\(divFactor),final-div-factor=\(finalDivFactor)"
        }
    }
}
