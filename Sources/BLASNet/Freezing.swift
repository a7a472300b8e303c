/// A normalization with running statistics (``BatchNorm``, ``InstanceNorm2d`` with
/// `trackRunningStats`), which a frozen model keeps in inference mode.
public protocol RunningStatistics: Module {
    /// When true the layer normalizes with its running statistics and never updates
    /// them, whatever mode the model is switched to.
    var freezesStatistics: Bool { get set }
}

/// Freezing, for fine-tuning: a frozen part of a model computes no parameter gradients,
/// its optimizer state never starts, and its normalizations use and keep their running
/// statistics; ``ResNet`` ends its backward pass at the first layer that still trains.
extension Module {
    /// Freezes this module and everything under it.
    public func freeze() { setFrozen(true) }

    /// Undoes ``freeze()``: every parameter trains and normalizations follow the model's mode again.
    public func unfreeze() { setFrozen(false) }

    /// Whether some parameter of this module or its descendants requires a gradient.
    public var isTrainable: Bool { namedParameters().contains { $0.parameter.requiresGrad } }

    /// This module and all of its descendants, parents before children.
    public var modules: [any Module] { [self] + children.flatMap(\.module.modules) }

    private func setFrozen(_ frozen: Bool) {
        for (_, p) in namedParameters() { p.requiresGrad = !frozen }
        for case let norm as any RunningStatistics in modules { norm.freezesStatistics = frozen }
    }
}
