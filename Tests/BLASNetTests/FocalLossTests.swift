import Foundation
import Testing
@testable import BLASNet

/// Focal loss against PyTorch (the `focal.*` cases of `scripts/make-optim-fixtures`),
/// cross-entropy and finite differences.
struct FocalLossTests {
    /// A focal loss case of make_optim_fixtures.py: α is a number or a list of them.
    static func loss(_ json: [String: Any]) throws -> FocalLoss {
        let gamma = try #require(json["gamma"] as? Double)
        let alpha: FocalLoss.Alpha = if let list = json["alpha"] as? [Double] {
            .perClass(list.map(Float.init))
        } else {
            .uniform(Float(try #require(json["alpha"] as? Double)))
        }
        return try FocalLoss(gamma: Float(gamma), alpha: alpha)
    }

    @Test func matchesPyTorch() throws {
        let fixture = try OptimizerTests.Fixture()
        let logits = try fixture.tensor("ce.logits")
        let targets = try #require(fixture.file["focal.target"]).integers().map { Int($0) }
        let json = try #require(fixture.file.metadata["focal_cases"]?.data(using: .utf8))
        let cases = try #require(try JSONSerialization.jsonObject(with: json) as? [[String: Any]])
        #expect(cases.count == 4)
        for (j, item) in cases.enumerated() {
            let (loss, gradient) = try Self.loss(item)(logits, targets: targets)
            // References are Float64 rounded once; ours rounds once more.
            OptimizerTests.expectClose(Tensor(scalar: loss), try fixture.tensor("focal.\(j).loss"), tolerance: 1e-6, "loss, \(item)")
            OptimizerTests.expectClose(gradient, try fixture.tensor("focal.\(j).grad"), tolerance: 1e-6, "gradient, \(item)")
        }
    }

    @Test func gammaZeroAndAlphaOneIsCrossEntropy() throws {
        let logits = GradientCheck.random([5, 7], scale: 4, seed: 60), targets = [6, 0, 3, 3, 1]
        let (focal, focalGradient) = try FocalLoss(gamma: 0, alpha: .uniform(1))(logits, targets: targets)
        let (ce, ceGradient) = try CrossEntropyLoss()(logits, targets: targets)
        #expect(abs(focal - ce) <= 1e-6 * ce)
        #expect(zip(focalGradient.scalars, ceGradient.scalars).allSatisfy { abs($0 - $1) <= 1e-7 })
    }

    @Test(arguments: [(0.5 as Float, FocalLoss.Alpha.uniform(0.25)), (2, .uniform(1)), (3, .perClass([0.2, 1, 0.5, 0.7, 0.1, 0.9]))])
    func gradientMatchesFiniteDifferences(gamma: Float, alpha: FocalLoss.Alpha) throws {
        try GradientCheck.checkLoss(try FocalLoss(gamma: gamma, alpha: alpha),
                                    logits: GradientCheck.random([4, 6], scale: 3, seed: 61), targets: [5, 0, 2, 2])
    }

    @Test func certainPredictionsHaveZeroLossAndGradient() throws {
        // p_t rounds to 1 in Float64: (1 − p)^(γ − 1) is infinite for γ < 1, yet the limit is 0.
        let logits = try Tensor(shape: [2, 3], scalars: [200, 0, -5, 1, 2, 3])
        for gamma: Float in [0, 0.5, 2] {
            let (loss, gradient) = try FocalLoss(gamma: gamma, alpha: .uniform(1))(logits, targets: [0, 1])
            #expect(loss.isFinite && gradient.scalars.allSatisfy(\.isFinite))
            #expect(gradient.scalars.prefix(3).allSatisfy { $0 == 0 })
        }
    }

    /// With γ = 0 and the default α, focal loss is cross-entropy, loss and gradient: the
    /// default does not scale the step size.
    @Test func zeroGammaWithTheDefaultAlphaIsCrossEntropy() throws {
        let logits = GradientCheck.random([4, 5], seed: 61)
        let targets = [0, 3, 4, 1]
        let (focal, focalGradient) = try FocalLoss(gamma: 0)(logits, targets: targets)
        let (crossEntropy, crossEntropyGradient) = try CrossEntropyLoss()(logits, targets: targets)
        #expect(abs(focal - crossEntropy) <= 1e-6 * abs(crossEntropy), "\(focal) against \(crossEntropy)")
        for (a, b) in zip(focalGradient.scalars, crossEntropyGradient.scalars) { #expect(abs(a - b) <= 1e-6) }
    }

    @Test func rejectsBadSettings() throws {
        #expect(throws: BLASNetError.self) { try FocalLoss(gamma: -1) }
        #expect(throws: BLASNetError.self) { try FocalLoss(gamma: .nan) }
        #expect(throws: BLASNetError.self) { try FocalLoss(alpha: .uniform(-0.5)) }
        #expect(throws: BLASNetError.self) { try FocalLoss(alpha: .perClass([])) }
        let logits = Tensor(shape: [2, 3])
        #expect(throws: BLASNetError.self) { try FocalLoss(alpha: .perClass([1, 1]))(logits, targets: [0, 1]) }
        #expect(throws: BLASNetError.self) { try FocalLoss()(logits, targets: [0, 3]) }
        #expect(throws: BLASNetError.self) { try FocalLoss()(logits, targets: [0]) }
    }
}
