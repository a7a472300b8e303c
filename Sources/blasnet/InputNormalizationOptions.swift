import ArgumentParser
import BLASNet
import Foundation

/// `--mean` and `--std` of the commands that read weights (`eval`, `finetune`): how the
/// images are normalized before the network, per channel on the 0–1 pixel scale, as
/// torchvision's `Normalize` does.
struct InputNormalizationOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: "Per-channel input mean on the 0–1 pixel scale, comma-separated (one value: every channel): 0.485,0.456,0.406 for torchvision's ImageNet weights (default: the weights' record, else the training split's).",
            transform: InputNormalizationOptions.values)
    var mean: [Float]?

    @Option(parsing: .unconditional, help: "Per-channel input standard deviation, as --mean: 0.229,0.224,0.225 for torchvision's ImageNet weights.",
            transform: InputNormalizationOptions.values)
    var std: [Float]?

    static func values(_ text: String) throws -> [Float] {
        let values = text.split(separator: ",", omittingEmptySubsequences: false).map { Float($0.trimmingCharacters(in: .whitespaces)) }
        guard !values.isEmpty, values.allSatisfy({ $0?.isFinite == true }) else {
            throw ValidationError("expected comma-separated finite numbers, got '\(text)'")
        }
        return values.map { $0! }
    }

    func validate() throws {
        guard (mean == nil) == (std == nil) else { throw ValidationError("--mean and --std go together") }
        // A subnormal deviation would scale pixels to infinity.
        if let std, !std.allSatisfy({ $0 > 0 && $0.isNormal }) { throw ValidationError("--std must be positive, got \(std)") }
    }

    /// The statistics for images of `channels` channels: the flags' (one value serves every
    /// channel, as torchvision's `Normalize` broadcasts it), else those `metadata` records,
    /// else `computed()`.
    func resolve(channels: Int, metadata: [String: String], path: String,
                 computed: () throws -> (mean: [Float], std: [Float])) throws -> (mean: [Float], std: [Float]) {
        if var mean, var std {
            if mean.count == 1 { mean = Array(repeating: mean[0], count: channels) }
            if std.count == 1 { std = Array(repeating: std[0], count: channels) }
            guard mean.count == channels, std.count == channels else {
                throw ValidationError("--mean and --std need one value, or one per input channel (\(channels)), got \(mean.count) and \(std.count)")
            }
            return (mean, std)
        }
        // Recorded values must read as the flags would: a damaged record is not quietly replaced.
        func recorded(_ key: String) throws -> [Float]? {
            guard let text = metadata[key] else { return nil }
            guard let values = try? Self.values(text), key == "mean" || values.allSatisfy({ $0 > 0 && $0.isNormal }) else {
                throw BLASNetError.malformedFile(path: path, reason: "its metadata \(key) '\(text)' is not a list of finite numbers\(key == "std" ? " above zero" : "")")
            }
            return values
        }
        // Another channel count is the pretrained network's (RGB weights for gray images): the new data's own, then.
        if let mean = try recorded("mean"), let std = try recorded("std"), mean.count == channels, std.count == channels { return (mean, std) }
        return try computed()
    }
}
