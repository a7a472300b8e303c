import ArgumentParser
import BLASNet

/// The training loss, shared by `run` and `train`; unset options keep the default (or, in
/// `train`, the preset's or resumed run's setting).
struct LossOptions: ParsableArguments {
    enum Name: String, ExpressibleByArgument, CaseIterable {
        case crossEntropy = "cross-entropy"
        case focal
    }

    @Option(help: "Loss: cross-entropy (default) or focal.")
    var loss: Name?

    @Option(parsing: .unconditional, help: "Focal loss γ, the focusing exponent (default 2).")
    var focalGamma: Float?

    @Option(help: "Focal loss α: one weight for every class, or a comma-separated weight per class (default 1: a single α only scales the loss).",
            transform: LossOptions.weights)
    var focalAlpha: [Float]?

    static func weights(_ text: String) throws -> [Float] {
        let items = text.split(separator: ",", omittingEmptySubsequences: false)
        let weights = items.compactMap { Float($0) }
        guard weights.count == items.count else {
            throw ValidationError("'\(text)' is not a number or a comma-separated list of numbers")
        }
        return weights
    }

    /// Throws if focal options were given for a loss that is not focal.
    func checkFocalOptions(for name: Name) throws {
        guard name == .focal || (focalGamma == nil && focalAlpha == nil) else {
            throw ValidationError("--focal-gamma and --focal-alpha go with --loss focal")
        }
    }

    /// Focal loss's γ and α when the flags give none (``FocalLoss``'s defaults).
    static let defaultFocalGamma: Float = 2
    static let defaultFocalAlpha: [Float] = [1]

    /// The loss these settings describe (the focal options apply to focal loss, label
    /// smoothing to cross-entropy).
    static func make(_ name: Name, focalGamma: Float?, focalAlpha: [Float]?, labelSmoothing: Float) throws -> any Loss {
        switch name {
        case .crossEntropy:
            return try CrossEntropyLoss(labelSmoothing: labelSmoothing)
        case .focal:
            guard labelSmoothing == 0 else { throw ValidationError("--label-smoothing goes with --loss cross-entropy") }
            let alpha = focalAlpha ?? defaultFocalAlpha
            return try FocalLoss(gamma: focalGamma ?? defaultFocalGamma, alpha: alpha.count == 1 ? .uniform(alpha[0]) : .perClass(alpha))
        }
    }
}
