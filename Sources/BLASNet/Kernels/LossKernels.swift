import Foundation

/// Softmax losses, row by row in Float64 with each row's maximum subtracted, so large
/// logits neither overflow nor lose the small probabilities.
extension Kernels {
    /// `log Σ_j exp(x_j)` over one row of `count` logits.
    @inline(__always)
    static func logSumExp(_ x: UnsafePointer<Float>, count: Int) -> Double {
        var top = -Double.infinity
        for j in 0..<count { top = max(top, Double(x[j])) }
        var expSum = 0.0
        for j in 0..<count { expSum += exp(Double(x[j]) - top) }
        return log(expSum) + top
    }

    /// Mean softmax cross-entropy of `rows` rows of `classes` logits against target
    /// indices, with label smoothing `smoothing` (ε); writes its gradient with respect to
    /// the logits, `(p − (1 − ε)·onehot − ε/K) / rows`, and returns the loss.
    static func softmaxCrossEntropy(_ logits: UnsafePointer<Float>, targets: UnsafePointer<Int>,
                                    gradient: UnsafeMutablePointer<Float>, rows: Int, classes: Int, smoothing: Double) -> Double {
        let n = Double(rows), k = Double(classes)
        var total = 0.0
        for i in 0..<rows {
            let x = logits + i * classes, dx = gradient + i * classes
            var logitSum = 0.0
            for j in 0..<classes { logitSum += Double(x[j]) }
            // −log p_j = logSum − x_j; smoothing mixes in its mean over the classes.
            let logSum = logSumExp(x, count: classes), target = targets[i]
            total += (1 - smoothing) * (logSum - Double(x[target])) + smoothing * (logSum - logitSum / k)
            for j in 0..<classes {
                let weight = (j == target ? 1 - smoothing : 0) + smoothing / k
                dx[j] = Float((exp(Double(x[j]) - logSum) - weight) / n)
            }
        }
        return total / n
    }

    /// Mean softmax focal loss `−α_t·(1 − p_t)^γ·log p_t` of `rows` rows of `classes`
    /// logits, `α_t = alpha[target]`; writes its gradient with respect to the logits,
    /// `F·(p − onehot) / rows` with `F = α_t·((1 − p_t)^γ − γ·p_t·(1 − p_t)^(γ−1)·log p_t)`,
    /// and returns the loss.
    static func softmaxFocal(_ logits: UnsafePointer<Float>, targets: UnsafePointer<Int>, alpha: UnsafePointer<Double>,
                             gradient: UnsafeMutablePointer<Float>, rows: Int, classes: Int, gamma: Double) -> Double {
        let n = Double(rows)
        var total = 0.0
        for i in 0..<rows {
            let x = logits + i * classes, dx = gradient + i * classes, target = targets[i]
            let logSum = logSumExp(x, count: classes)
            let logP = Double(x[target]) - logSum, p = exp(logP)
            // 1 − p_t from log p_t, exact where p_t is close to 1.
            let q = -expm1(logP), w = pow(q, gamma)
            // (1 − p)^(γ−1)·log p as w·(log p)/(1 − p), whose ratio tends to −1 as p → 1:
            // finite for γ < 1, where (1 − p)^(γ−1) alone is not.
            let factor = alpha[target] * (w - gamma * p * w * (q > 0 ? logP / q : -1))
            total -= alpha[target] * w * logP
            for j in 0..<classes {
                let pMinusOnehot = j == target ? -q : exp(Double(x[j]) - logSum)
                dx[j] = Float(factor * pMinusOnehot / n)
            }
        }
        return total / n
    }
}
