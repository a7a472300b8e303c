import Foundation

/// How far new data sits from what a pretrained network's BatchNorm layers saw: for each
/// BatchNorm, each channel's input on the new images is summarized as a Gaussian and
/// compared with the Gaussian of its running statistics by the symmetric Kullback–Leibler
/// divergence `KL(p‖q) + KL(q‖p) = (σp² + Δμ²)/(2σq²) + (σq² + Δμ²)/(2σp²) − 1`.
///
/// Zero means the new images drive the network exactly as its training data did;
/// values of order one mean the early features respond very differently.
public enum DomainShift {
    /// The mean over BatchNorm layers of the mean over channels of the symmetric KL
    /// divergence, with the model in inference mode (each layer sees the activations the
    /// pretrained network would produce). The model's state and modes are unchanged.
    public static func batchNormShift(_ model: any Module, images: Tensor) throws -> Double {
        let norms = model.modules.compactMap { $0 as? BatchNorm }
        guard !norms.isEmpty else { throw BLASNetError.invalidArgument("DomainShift: the model has no BatchNorm layers") }
        let modes = norms.map(\.training)
        defer {
            for (norm, training) in zip(norms, modes) {
                norm.observesInput = false
                norm.training = training
            }
        }
        for norm in norms {
            norm.observesInput = true
            norm.training = false
        }
        _ = try withoutGradients { try model.forward(images) }
        let divergences = norms.map { norm -> Double in
            guard let (mean, variance) = norm.observedStatistics else { return 0 }
            let runningMean = norm.runningMean.value.scalars, runningVar = norm.runningVar.value.scalars
            let eps = Double(norm.eps)
            let total = (0..<norm.channels).reduce(0.0) { sum, c in
                let (vp, vq) = (variance[c] + eps, Double(runningVar[c]) + eps)
                let d2 = (mean[c] - Double(runningMean[c])) * (mean[c] - Double(runningMean[c]))
                return sum + (vp + d2) / (2 * vq) + (vq + d2) / (2 * vp) - 1
            }
            return total / Double(norm.channels)
        }
        return divergences.reduce(0, +) / Double(divergences.count)
    }
}
