/// Modules applied in order, named "0", "1", … as in `torch.nn.Sequential`.
public final class Sequential: Module {
    public let layers: [any Module]
    /// False when nothing before this container needs its input gradient (everything
    /// upstream is frozen): backward then ends at the first layer that still trains.
    var computesInputGradient = true

    /// `layers` applied in order; their state_dict names are their indices, as in `nn.Sequential`.
    public init(_ layers: [any Module]) { self.layers = layers }

    public var children: [(name: String, module: any Module)] {
        layers.enumerated().map { (String($0.offset), $0.element) }
    }

    public func forward(_ x: Tensor) throws -> Tensor {
        try layers.reduce(x) { try $1.observedForward($0) }
    }

    /// `dy` has the shape of the last layer's output; returns the gradient with respect to
    /// the first layer's input, or an empty tensor when ``computesInputGradient`` is false.
    public func backward(_ dy: Tensor) throws -> Tensor {
        if computesInputGradient { return try layers.reversed().reduce(dy) { try $1.observedBackward($0) } }
        guard let first = layers.firstIndex(where: \.isTrainable) else { return Tensor(shape: [0]) }
        _ = try layers[first...].reversed().reduce(dy) { try $1.observedBackward($0) }
        return Tensor(shape: [0])
    }
}

extension Sequential: SpatialModule {
    public var spatialStructure: SpatialStructure { .chain(children) }
}
