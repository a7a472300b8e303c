/// How a module maps positions of its input feature map onto positions of its output:
/// what receptive fields are computed from (``SpatialModule/receptiveFields(inputSize:)``).
public enum SpatialStructure {
    /// Each output position depends on the input position under it only (BatchNorm, ReLU, …).
    case pointwise
    /// A sliding window: convolution or pooling.
    case window(Window)
    /// Adaptive average pooling to a `grid × grid` output; grid 1 is global pooling, a
    /// single output position that depends on every input position.
    case adaptive(grid: Int)
    /// Named sub-modules applied one after the other; adds no row of its own to a table.
    case chain([(name: String, module: any Module)])
    /// Paths applied to the same input whose outputs are added, as in a residual block
    /// (anything pointwise after the addition, such as its ReLU, included). Each path is a
    /// chain; an empty one is the identity shortcut. Adds a row for the sum.
    case sum([[(name: String, module: any Module)]])
}

/// A module whose ``SpatialStructure`` is known, so receptive fields can be traced through it.
///
/// BLASNet's convolution, pooling, normalization, activation, SE, container and ResNet
/// types conform; so does any model built from them.
public protocol SpatialModule: Module {
    var spatialStructure: SpatialStructure { get }
}
