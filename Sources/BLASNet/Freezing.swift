/// A normalization with running statistics (``BatchNorm``, ``InstanceNorm2d`` with
/// `trackRunningStats`), which a frozen model keeps in inference mode.
public protocol RunningStatistics: Module {
    /// When true the layer normalizes with its running statistics and never updates
    /// them, whatever mode the model is switched to.
    var freezesStatistics: Bool { get set }
}

/// The mode of a layer with running statistics: the model's, unless the layer is frozen.
struct StatisticsMode {
    /// The mode the model was last put in, whatever ``frozen`` says.
    private var model = true
    /// Batch statistics and running-average updates when true.
    var training = true
    /// Inference mode whatever mode the model is put in; cleared, the model's mode again.
    var frozen = false {
        didSet { if frozen != oldValue { training = model && !frozen } }
    }

    mutating func setModel(training: Bool) {
        model = training
        self.training = training && !frozen
    }
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
    public var isTrainable: Bool {
        localParameters.contains { $0.parameter.requiresGrad } || children.contains { $0.module.isTrainable }
    }

    /// This module and all of its descendants, parents before children.
    public var modules: [any Module] { [self] + children.flatMap(\.module.modules) }

    private func setFrozen(_ frozen: Bool) {
        for (_, p) in namedParameters() { p.requiresGrad = !frozen }
        for case let norm as any RunningStatistics in modules { norm.freezesStatistics = frozen }
    }
}

extension Module {
    /// The descendant at a state_dict path such as `layer2.0.conv1` (`""` is this module).
    public func module(at path: String) -> (any Module)? {
        guard !path.isEmpty else { return self }
        return path.split(separator: ".").reduce(Optional<any Module>(self)) { module, name in
            module?.children.first { $0.name == name }?.module
        }
    }

    /// Freezes the descendants at `paths` (state_dict prefixes such as `conv1`, `layer1`,
    /// `layer2.0`), as `requires_grad_(False)` and `.eval()` on those sub-modules' norms would
    /// in PyTorch (`requires_grad_(False)` alone would leave their running statistics moving).
    /// Throws, naming the paths this module has, if one of them does not exist; then
    /// nothing is frozen.
    public func freeze(layers paths: [String]) throws {
        let found = paths.map { (path: $0, module: module(at: $0)) }
        if let unknown = found.first(where: { $0.module == nil || $0.path.isEmpty }) {
            let known = children.map(\.name).joined(separator: ", ")
            throw BLASNetError.invalidArgument("no layer '\(unknown.path)' to freeze: expected a state_dict prefix such as \(known), or a block inside one (layer1.0)")
        }
        for case let (_, module?) in found { module.freeze() }
    }
}
