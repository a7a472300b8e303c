/// Modules applied in order, named "0", "1", … as in `torch.nn.Sequential`.
public final class Sequential: Module {
    public let layers: [any Module]

    public init(_ layers: [any Module]) { self.layers = layers }

    public var children: [(name: String, module: any Module)] {
        layers.enumerated().map { (String($0.offset), $0.element) }
    }

    public func forward(_ x: Tensor) throws -> Tensor {
        try layers.reduce(x) { try $1.observedForward($0) }
    }

    public func backward(_ dy: Tensor) throws -> Tensor {
        try layers.reversed().reduce(dy) { try $1.observedBackward($0) }
    }
}

extension Sequential: SpatialModule {
    public var spatialStructure: SpatialStructure { .chain(children) }
}
