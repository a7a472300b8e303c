/// The receptive field of a feature map: which input pixels each of its positions sees,
/// per axis (Araujo et al., "Computing Receptive Fields of Convolutional Neural Networks",
/// Distill 2019).
///
/// Coordinates are input pixels, pixel `i`'s centre at `i`. Position `p` of the map sees
/// the pixels `start + p·jump ± (size − 1)/2` (``Axis/span(at:)``). Fields count the zero
/// padding around the image like pixels, so near a border they reach outside the image.
public struct ReceptiveField: Sendable, Equatable {
    /// The field along one axis.
    public struct Axis: Sendable, Equatable {
        /// Positions of the feature map along this axis.
        public var outputSize: Int
        /// Input pixels between neighbouring positions: the product of the strides so far.
        public var jump: Int
        /// Input pixels that one position sees.
        public var size: Int
        /// Input coordinate of the centre of position 0's field; half-integral after
        /// even kernels, negative when padding shifts the map towards the top left.
        public var start: Double

        /// Input coordinates spanned by the field of `position`, ends included.
        public func span(at position: Int) -> ClosedRange<Double> {
            let centre = start + Double(position * jump), half = Double(size - 1) / 2
            return centre - half...centre + half
        }

        /// After a window of dilated extent `kernel`: Distill's recurrences
        /// `j·s`, `r + (k − 1)·j`, `start + ((k − 1)/2 − p)·j`.
        func through(kernel: Int, stride: Int, padding: Int, outputSize: Int) -> Axis {
            Axis(outputSize: outputSize, jump: jump * stride, size: size + (kernel - 1) * jump,
                 start: start + (Double(kernel - 1) / 2 - Double(padding)) * Double(jump))
        }

        /// The field of the sum of two aligned paths: the smallest that holds both, each
        /// side reaching as far as the farther path's. Where the paths share a centre (every
        /// ResNet block) that is the larger field, Distill's "maximum over paths".
        func union(_ other: Axis) -> Axis {
            let a = span(at: 0), b = other.span(at: 0)
            let low = min(a.lowerBound, b.lowerBound), high = max(a.upperBound, b.upperBound)
            return Axis(outputSize: outputSize, jump: jump, size: Int(high - low) + 1, start: (low + high) / 2)
        }
    }

    public var height: Axis
    public var width: Axis
}

extension ReceptiveField {
    /// The input image's own field: every pixel sees itself.
    init(inputSize: (h: Int, w: Int)) {
        height = Axis(outputSize: inputSize.h, jump: 1, size: 1, start: 0)
        width = Axis(outputSize: inputSize.w, jump: 1, size: 1, start: 0)
    }

    /// After a convolution or pooling `window`; `layer` names it in errors.
    func through(_ window: Window, layer: String) throws -> ReceptiveField {
        let out = window.outputSize(h: height.outputSize, w: width.outputSize)
        guard out.h > 0, out.w > 0 else {
            throw BLASNetError.shapeMismatch(layer: layer, expected: "an input at least as large as the window",
                                             got: [height.outputSize, width.outputSize])
        }
        let kernel = window.effectiveKernel
        return ReceptiveField(
            height: height.through(kernel: kernel.h, stride: window.stride.h, padding: window.padding.h, outputSize: out.h),
            width: width.through(kernel: kernel.w, stride: window.stride.w, padding: window.padding.w, outputSize: out.w))
    }

    /// The field of the sum of this path's output and `other`'s; `layer` names the sum in errors.
    func adding(_ other: ReceptiveField, layer: String) throws -> ReceptiveField {
        let sizes = (height.outputSize, width.outputSize), otherSizes = (other.height.outputSize, other.width.outputSize)
        guard sizes == otherSizes else {
            throw BLASNetError.shapeMismatch(layer: layer + " addition", expected: "\(sizes.0)×\(sizes.1)",
                                             got: [otherSizes.0, otherSizes.1])
        }
        // Paths whose positions sit at different spacings do not line up pixel for pixel,
        // and no single (jump, size, start) describes their sum.
        guard height.jump == other.height.jump, width.jump == other.width.jump else {
            throw BLASNetError.invalidArgument(
                "\(layer): paths with jumps \(height.jump)×\(width.jump) and \(other.height.jump)×\(other.width.jump) are added")
        }
        return ReceptiveField(height: height.union(other.height), width: width.union(other.width))
    }
}

extension SpatialModule {
    /// The receptive field after every layer, in the order the data flows, for an input of
    /// `inputSize` pixels.
    ///
    /// Rows are named by state_dict path (`conv1`, `maxpool`, `layer1.0.conv1`,
    /// `layer1.0.downsample.0`, `layer1.0`, …). Each layer kind's rule:
    /// - convolution and pooling: Distill's recurrences over the layer's ``Window``;
    /// - BatchNorm, GroupNorm, InstanceNorm, LayerNorm, ReLU, `Linear` (which sees one
    ///   position, after global pooling): the field passes through unchanged (a norm's
    ///   statistics, taken over the whole batch, group or plane, are left out);
    /// - a residual block: rows for its branch and its shortcut, then one for the block's
    ///   output, whose field is the smallest holding both paths' (each side reaching as far
    ///   as the farther path's). The paths must have equal jumps; in a ResNet they share a
    ///   centre, so the block's field is the larger one (the branch's) and `start` the common one;
    /// - squeeze-and-excitation: pointwise, the field of the *spatial path*. Its gate is
    ///   computed from a global average, so strictly every output of an SE block depends
    ///   on the whole input; the table leaves that channel gate out;
    /// - global average pooling: a window over the whole map, so the field covers every
    ///   input pixel (and the padding around them), and one position is left; adaptive
    ///   pooling to a `g × g` grid: windows of a `g`-th of the map, which `g` must divide.
    ///
    /// - Throws: ``BLASNetError`` for a sub-module that is not a ``SpatialModule``, an
    ///   input too small for a window, or added paths that do not line up.
    public func receptiveFields(inputSize: (h: Int, w: Int)) throws -> [(name: String, field: ReceptiveField)] {
        guard inputSize.h > 0, inputSize.w > 0 else {
            throw BLASNetError.invalidArgument("receptive fields need a positive input size, got \(inputSize.h)×\(inputSize.w)")
        }
        var table: [(name: String, field: ReceptiveField)] = []
        _ = try trace(self, name: "", from: ReceptiveField(inputSize: inputSize), into: &table)
        return table
    }
}

/// Appends the rows of `module` (at state_dict path `name`) to `table` and returns the
/// field of its output: the one place where each ``SpatialStructure`` is applied.
private func trace(_ module: any Module, name: String, from field: ReceptiveField,
                   into table: inout [(name: String, field: ReceptiveField)]) throws -> ReceptiveField {
    let label = name.isEmpty ? "(model)" : name
    guard let module = module as? any SpatialModule else {
        throw BLASNetError.invalidArgument("\(label): \(type(of: module)) is not a SpatialModule; receptive fields cannot be traced through it")
    }
    let out: ReceptiveField
    switch module.spatialStructure {
    case .pointwise:
        out = field
    case .window(let window):
        // A custom module's window has not been through a layer's initializer.
        try window.validate(label)
        out = try field.through(window, layer: label)
    case .adaptive(let grid):
        guard grid > 0 else { throw BLASNetError.invalidArgument("\(label): adaptive pooling to a \(grid)×\(grid) grid") }
        // adaptive_avg_pool2d(x, g) is AvgPool2d with kernel and stride map/g when g divides
        // the map; other bins differ in size and step, which no single window describes.
        let map = (h: field.height.outputSize, w: field.width.outputSize)
        guard map.h % grid == 0, map.w % grid == 0 else {
            throw BLASNetError.invalidArgument(
                "\(label): adaptive pooling to a \(grid)×\(grid) grid has no single window over a \(map.h)×\(map.w) map; receptive fields need the grid to divide the map")
        }
        let bin = (map.h / grid, map.w / grid)
        out = try field.through(Window(kernel: bin, stride: bin, padding: (0, 0), dilation: (1, 1)), layer: label)
    case .chain(let layers):
        return try trace(chain: layers, name: name, from: field, into: &table)
    case .sum(let paths):
        guard let first = paths.first else { throw BLASNetError.invalidArgument("\(label): a sum of no paths") }
        let firstField = try trace(chain: first, name: name, from: field, into: &table)
        out = try paths.dropFirst().reduce(firstField) { sum, path in
            try sum.adding(trace(chain: path, name: name, from: field, into: &table), layer: label)
        }
    }
    table.append((label, out))
    return out
}

/// ``trace(_:name:from:into:)`` through `layers` one after the other, each named below `name`.
private func trace(chain layers: [(name: String, module: any Module)], name: String, from field: ReceptiveField,
                   into table: inout [(name: String, field: ReceptiveField)]) throws -> ReceptiveField {
    try layers.reduce(field) { field, layer in
        try trace(layer.module, name: name.isEmpty ? layer.name : name + "." + layer.name, from: field, into: &table)
    }
}
