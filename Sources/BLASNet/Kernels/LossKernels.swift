import Foundation

extension Kernels {
    /// Mean softmax cross-entropy of `rows` rows of `classes` logits against target
    /// indices, with label smoothing `smoothing` (ε); writes its gradient with respect to
    /// the logits, `(p − (1 − ε)·onehot − ε/K) / rows`, and returns the loss.
    ///
    /// Works in Float64 with each row's maximum subtracted, so large logits neither
    /// overflow nor lose the small probabilities.
    static func softmaxCrossEntropy(_ logits: UnsafePointer<Float>, targets: UnsafePointer<Int>,
                                    gradient: UnsafeMutablePointer<Float>, rows: Int, classes: Int, smoothing: Double) -> Double {
        let n = Double(rows), k = Double(classes)
        var total = 0.0
        for i in 0..<rows {
            let x = logits + i * classes, dx = gradient + i * classes
            var top = -Double.infinity
            for j in 0..<classes { top = max(top, Double(x[j])) }
            var expSum = 0.0, logitSum = 0.0
            for j in 0..<classes {
                expSum += exp(Double(x[j]) - top)
                logitSum += Double(x[j])
            }
            // −log p_j = logSum − x_j; smoothing mixes in its mean over the classes.
            let logSum = log(expSum) + top, target = targets[i]
            total += (1 - smoothing) * (logSum - Double(x[target])) + smoothing * (logSum - logitSum / k)
            for j in 0..<classes {
                let weight = (j == target ? 1 - smoothing : 0) + smoothing / k
                dx[j] = Float((exp(Double(x[j]) - logSum) - weight) / n)
            }
        }
        return total / n
    }
}
