import ArgumentParser
import BLASNet
import Foundation

/// `--arch`, `--width`, `--stem` and `--norm` of the commands that read weights (`eval`,
/// `finetune`). A `blasnet` file records the model's shape, and these fill in only what it
/// does not say: a flag that contradicts the record is refused, and so is a stem that the
/// weights cannot tell. The cifar and strided stems have the same weights, so the wrong
/// one would load without an error and score a different network.
struct RecordedModelOptions: ParsableArguments {
    @Option(help: "Architecture, when the file does not name one.")
    var arch: Architecture?

    @Option(parsing: .unconditional, help: "Channels of the stem and first stage, when the file does not say.")
    var width: Int?

    @Option(help: "Stem, when the file does not say: imagenet is told from a 7×7 conv1, cifar and strided (both 3×3) need this.")
    var stem: Stem?

    @Option(help: "Norm layers (batch, group, group:G, layer or instance), when the file does not say (default: batch).",
            transform: Normalization.init(parsing:))
    var norm: Normalization?

    func validate() throws {
        if let width { try ModelOptions.check(width: width) }
    }

    /// Refuses weights just loaded from `path` into `model` that no computation could use:
    /// a non-finite value (a diverged run's, or a Float64 past Float32's range) or a
    /// negative running variance would turn every output into NaN without a word.
    static func checkUsable(_ model: ResNet, from path: String) throws {
        let tensors = model.namedParameters().map { ($0.name, $0.parameter.value) } + model.namedBuffers().map { ($0.name, $0.buffer.value) }
        for (name, tensor) in tensors {
            if let bad = tensor.scalars.first(where: { !$0.isFinite }) {
                throw BLASNetError.malformedFile(path: path, reason: "\(name) holds \(bad): weights must be finite")
            }
            if name.hasSuffix("running_var"), let negative = tensor.scalars.first(where: { $0 < 0 }) {
                throw BLASNetError.malformedFile(path: path, reason: "\(name) holds \(negative): a variance cannot be negative")
            }
        }
    }

    /// The shape of the model in `file`, read from `path`: its record, else these flags.
    /// The head's pooling grid is the recorded one, else the one `fc.weight` has room for
    /// (a PyTorch state_dict of a model with `AdaptiveAvgPool2d(2)` records none), else 1.
    func resolve(_ file: SafeTensorsFile, path: String)
        throws -> (arch: Architecture, width: Int?, stem: Stem, norm: Normalization, headGrid: Int) {
        func pick<T: Equatable>(_ flag: String, _ given: T?, _ parse: (String) throws -> T?) throws -> T? {
            try Self.recorded(flag, given, in: file, path: path, parse)
        }
        guard let arch = try pick("--arch", arch, Architecture.init(rawValue:)) else {
            throw ValidationError("\(path) does not name its architecture; pass --arch")
        }
        let width = try pick("--width", width) { Int($0).flatMap(ModelOptions.validWidth) }
            ?? Self.width(of: file)
        let norm = try pick("--norm", norm, Normalization.init(parsing:)) ?? .batch
        let headGrid = try Self.recorded("--head-grid", nil as Int?, in: file, path: path) {
            Int($0).flatMap { ModelOptions.headGrids.contains($0) ? $0 : nil }
        } ?? Self.headGrid(of: file, channels: arch.featureChannels(width: width))
        if let stem = try pick("--stem", stem, Stem.init(rawValue:)) { return (arch, width, stem, norm, headGrid) }
        return (arch, width, try Self.unrecordedStem(of: file, path: path) ?? .imagenet, norm, headGrid)
    }

    /// What `file` records under the metadata key of `flag` (`--head-grid`: `head_grid`),
    /// else `given`. A record that does not parse is a malformed file; a flag that
    /// contradicts the record is refused, since the weights fit only the recorded model.
    static func recorded<T: Equatable>(_ flag: String, _ given: T?, in file: SafeTensorsFile, path: String,
                                       _ parse: (String) throws -> T?) throws -> T? {
        let key = flag.dropFirst(2).replacingOccurrences(of: "-", with: "_")
        guard let recorded = file.metadata[key] else { return given }
        guard let value = try? parse(recorded) else {
            throw BLASNetError.malformedFile(path: path, reason: "unknown \(key) '\(recorded)' in its metadata")
        }
        if let given, given != value {
            throw ValidationError("\(flag) \(given) contradicts \(path), which records \(key) \(recorded)")
        }
        return value
    }

    /// The stem's width, `conv1.weight`'s output channels, for a file that records none.
    static func width(of file: SafeTensorsFile) -> Int? {
        file["conv1.weight"]?.shape.first.flatMap(ModelOptions.validWidth)
    }

    /// The grid `g` whose `channels·g²` features `fc.weight` reads; 1 when none fits, so
    /// that loading names the shape that does not.
    static func headGrid(of file: SafeTensorsFile, channels: Int) -> Int {
        guard let shape = file["fc.weight"]?.shape, shape.count == 2, shape[1] % channels == 0 else { return 1 }
        return ModelOptions.headGrids.first { $0 * $0 == shape[1] / channels } ?? 1
    }

    /// The stem of weights that record none, from their conv1: any but a 3×3 one is
    /// imagenet's (or fails to load with its shape named); a 3×3 one fits both cifar
    /// (stride 1) and strided (stride 2), so it is refused rather than loaded into a guess.
    /// Nil without a conv1.
    static func unrecordedStem(of file: SafeTensorsFile, path: String) throws -> Stem? {
        guard let kernel = file["conv1.weight"]?.shape.last else { return nil }
        guard kernel != 3 else {
            throw ValidationError("\(path) does not record its stem, and its 3×3 conv1 fits both cifar (stride 1) and strided (stride 2); pass --stem")
        }
        return .imagenet
    }
}
