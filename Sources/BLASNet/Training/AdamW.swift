import Foundation

/// Adam with decoupled weight decay, with the semantics and arithmetic order of
/// `torch.optim.AdamW` (single-tensor implementation). At a parameter's `t`-th update:
///
///     w ← w·(1 − lr·wd)
///     m ← lerp(m, g, 1 − β1)                 v ← β2·v + (1 − β2)·g²
///     w ← w − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε)
///
/// With `amsgrad`, `√v` is taken of the running maximum of `v` instead.
///
/// Checkpoint state, for each parameter updated so far: `optimizer.exp_avg.<index>` (m),
/// `optimizer.exp_avg_sq.<index>` (v), `optimizer.max_exp_avg_sq.<index>` with amsgrad,
/// and `optimizer.step.<index>`, the parameter's own `t` as a Float32 scalar (as PyTorch
/// stores it; exact to 2²⁴ steps, long after both bias corrections have reached 1).
public final class AdamW: Optimizer {
    public let parameters: [Parameter]
    public var learningRate: Float
    /// β1 and β2 as PyTorch holds them, Python floats: `1 − β2` rounded from Float64 is
    /// 0.001 at β2 = 0.999, but 0.000999987 from Float32's 0.999 (1.3·10⁻⁵ off).
    public let beta1: Double
    public let beta2: Double
    public let eps: Float
    public let weightDecay: Float
    public let amsgrad: Bool
    public private(set) var stepCount = 0
    private var moments: [Moments?]

    /// One parameter's state; a class so the kernel can write its tensors side by side.
    private final class Moments {
        /// Updates of this parameter so far (`t`); fewer than ``stepCount`` if it was frozen for some.
        var step: Int
        var mean: Tensor
        var squareMean: Tensor
        var maxSquareMean: Tensor?

        init(step: Int, mean: Tensor, squareMean: Tensor, maxSquareMean: Tensor?) {
            self.step = step
            self.mean = mean
            self.squareMean = squareMean
            self.maxSquareMean = maxSquareMean
        }
    }

    private var layout: OptimizerStateLayout {
        OptimizerStateLayout(optimizer: "AdamW",
                             buffers: ["step", "exp_avg", "exp_avg_sq"] + (amsgrad ? ["max_exp_avg_sq"] : []),
                             scalars: ["step"])
    }

    /// PyTorch's defaults: `lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 1e-2`.
    public init(_ parameters: [Parameter], learningRate: Float = 1e-3, betas: (Double, Double) = (0.9, 0.999),
                eps: Float = 1e-8, weightDecay: Float = 1e-2, amsgrad: Bool = false) throws {
        guard [learningRate, eps, weightDecay].allSatisfy({ $0 >= 0 && $0.isFinite }) else {
            throw BLASNetError.invalidArgument(
                "AdamW: learning rate \(learningRate), eps \(eps) and weight decay \(weightDecay) must be finite and non-negative")
        }
        guard (0..<1).contains(betas.0), (0..<1).contains(betas.1) else {
            throw BLASNetError.invalidArgument("AdamW: betas (\(betas.0), \(betas.1)) must lie in [0, 1)")
        }
        self.parameters = parameters
        self.learningRate = learningRate
        (beta1, beta2) = betas
        self.eps = eps
        self.weightDecay = weightDecay
        self.amsgrad = amsgrad
        moments = Array(repeating: nil, count: parameters.count)
    }

    public func step() {
        // PyTorch forms these scalars in Float64 from its Python floats, then each
        // tensor operation rounds its scalar to Float32.
        let lr = Double(learningRate), (b1, b2) = (beta1, beta2)
        // As PyTorch, a parameter no backward pass has reached (no gradient) is not updated.
        for (index, p) in parameters.enumerated() where p.requiresGrad {
            guard let grad = p.grad else { continue }
            let shape = p.value.shape
            let state = moments[index] ?? Moments(step: 0, mean: Tensor(shape: shape), squareMean: Tensor(shape: shape),
                                                  maxSquareMean: amsgrad ? Tensor(shape: shape) : nil)
            moments[index] = state
            state.step += 1
            let t = Double(state.step)
            let biasCorrection1 = 1 - pow(b1, t), biasCorrection2 = 1 - pow(b2, t)
            let count = p.value.count
            grad.withUnsafePointer { g in
                p.value.withUnsafeMutablePointer { w in
                    state.mean.withUnsafeMutablePointer { m in
                        state.squareMean.withUnsafeMutablePointer { v in
                            withOptionalMutablePointer(&state.maxSquareMean) { vMax in
                                Kernels.adamWStep(w, grad: g, mean: m, squareMean: v, maxSquareMean: vMax, count: count,
                                                  decay: Float(1 - lr * Double(weightDecay)),
                                                  meanWeight: Float(1 - b1), beta2: Float(b2), squareWeight: Float(1 - b2),
                                                  biasCorrection2Root: Float(biasCorrection2.squareRoot()),
                                                  epsilon: eps, negativeStepSize: Float(-(lr / biasCorrection1)))
                            }
                        }
                    }
                }
            }
        }
        stepCount += 1
    }

    public func stateTensors() -> [String: Tensor] {
        var state: [String: Tensor] = [:]
        for (index, moments) in moments.enumerated() {
            guard let moments else { continue }
            state[OptimizerStateLayout.key("step", index)] = Tensor(scalar: Float(moments.step))
            state[OptimizerStateLayout.key("exp_avg", index)] = moments.mean
            state[OptimizerStateLayout.key("exp_avg_sq", index)] = moments.squareMean
            if let maxSquareMean = moments.maxSquareMean {
                state[OptimizerStateLayout.key("max_exp_avg_sq", index)] = maxSquareMean
            }
        }
        return state
    }

    public func loadState(_ tensors: [String: Tensor], stepCount: Int) throws {
        let grouped = try layout.parse(tensors, parameters: parameters, stepCount: stepCount)
        for (index, state) in grouped.enumerated() {
            guard let step = state?["step"]?[0] else { continue }
            guard step >= 1, step <= Float(stepCount), step == step.rounded() else {
                throw BLASNetError.invalidArgument(
                    "AdamW state: \(OptimizerStateLayout.key("step", index)) is \(step), not a whole number in 1...\(stepCount)")
            }
        }
        moments = grouped.map { state in
            state.map { Moments(step: Int($0["step"]![0]), mean: $0["exp_avg"]!, squareMean: $0["exp_avg_sq"]!,
                                maxSquareMean: $0["max_exp_avg_sq"]) }
        }
        self.stepCount = stepCount
    }
}
