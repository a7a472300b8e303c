import Foundation

/// The four fine-tuning regimes of the notes, chosen by how much new data there is and
/// how much it resembles the data the network was trained on.
///
/// |                | similar data | different data |
/// | -------------- | ------------ | -------------- |
/// | little data    | ``head``     | ``partial(stages:)`` |
/// | much data      | ``full``     | ``scratch``    |
public enum FineTuningStrategy: Equatable, Sendable, CustomStringConvertible {
    /// Retrain only a new classifier; everything else frozen.
    case head
    /// Freeze the stem and the first `stages` stages; retrain the rest.
    case partial(stages: Int)
    /// Freeze the named sub-modules (state_dict prefixes such as `conv1`, `layer1`,
    /// `layer2.0`); retrain the rest. Written `partial:conv1,bn1,layer1`.
    case freezing(layers: [String])
    /// Train everything, from the pretrained weights (at a lower learning rate).
    case full
    /// Ignore the pretrained weights and train from a fresh initialization.
    case scratch

    /// Parses `head`, `partial:K`, `partial:NAME,NAME,…`, `full` or `scratch`.
    public init(parsing text: String) throws {
        switch text {
        case "head": self = .head
        case "full": self = .full
        case "scratch": self = .scratch
        default:
            let detail = text.hasPrefix("partial:") ? String(text.dropFirst(8)) : ""
            let names = detail.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            if let k = Int(detail), k >= 0 {
                self = .partial(stages: k)
            } else if Int(detail) == nil, !names.contains(where: \.isEmpty) {
                self = .freezing(layers: names)
            } else {
                throw BLASNetError.invalidArgument(
                    "fine-tuning strategy '\(text)': expected head, partial:K, partial:NAME,NAME,…, full or scratch")
            }
        }
    }

    public var description: String {
        switch self {
        case .head: "head"
        case let .partial(k): "partial:\(k)"
        case let .freezing(names): "partial:" + names.joined(separator: ",")
        case .full: "full"
        case .scratch: "scratch"
        }
    }

    /// The first of `names` that would freeze the head, which is new (fitted for the new
    /// classes) and, frozen, would keep random weights; nil when none does.
    public static func frozenHead(_ names: [String]) -> String? {
        names.first { $0 == "fc" || $0.hasPrefix("fc.") }
    }

    /// Freezes what the regime keeps fixed (nothing for ``full`` and ``scratch``).
    public func apply(to model: ResNet) throws {
        model.unfreeze()
        switch self {
        case .head:
            for (name, child) in model.children where name != "fc" { child.freeze() }
        case let .partial(k):
            guard (0...model.stages.count).contains(k) else {
                throw BLASNetError.invalidArgument("partial:\(k): \(model.architecture.rawValue) has \(model.stages.count) stages")
            }
            for (name, child) in model.children where ["conv1", "bn1"].contains(name) { child.freeze() }
            for stage in model.stages.prefix(k) { stage.freeze() }
        case let .freezing(names):
            if let head = Self.frozenHead(names) {
                throw BLASNetError.invalidArgument("fine-tuning freezes layers before the head, not '\(head)': the new classifier always trains")
            }
            try model.freeze(layers: names)
        case .full, .scratch:
            break
        }
    }

    /// Below this many images per class the data counts as little.
    public static let muchDataPerClass = 1000.0
    /// Above this ``DomainShift/batchNormShift(_:images:)`` the data counts as different.
    public static let differentShift = 1.0

    /// The regime for `samplesPerClass` new images per class whose BatchNorm shift from the
    /// pretrained statistics is `shift`, and a sentence saying why.
    public static func choose(samplesPerClass: Double, shift: Double, stages: Int) -> (FineTuningStrategy, String) {
        let much = samplesPerClass >= muchDataPerClass, different = shift > differentShift
        let size = String(format: "%.0f images per class (%@ %.0f: %@ data)", samplesPerClass, much ? "≥" : "<",
                          muchDataPerClass, much ? "much" : "little")
        let similarity = String(format: "BatchNorm shift %.3f (%@ %.1f: %@ domain)", shift, different ? ">" : "≤",
                                differentShift, different ? "different" : "similar")
        let strategy: FineTuningStrategy = switch (much, different) {
        case (false, false): .head
        case (false, true): .partial(stages: max(1, stages / 2))
        case (true, false): .full
        case (true, true): .scratch
        }
        let why: String = switch strategy {
        case .head: "the pretrained features fit; too few images to move them safely, so only a new classifier is fitted"
        case .partial, .freezing: "early features are generic but later ones do not fit, and too few images to retrain all: the later stages are retrained"
        case .full: "enough images to adapt every layer without overfitting, starting from features that already fit"
        case .scratch: "enough images to learn the features anew, and the pretrained ones do not fit"
        }
        return (strategy, "\(size); \(similarity) -> \(strategy): \(why)")
    }
}

extension SafeTensorsFile {
    /// These weights with the first convolution, `conv1.weight` `[O, I, kh, kw]`, adapted
    /// to images of `channels` channels as timm's `adapt_input_conv` does, so that RGB
    /// weights fine-tune on gray or multispectral data: for one channel the kernel is
    /// summed over its `I ≤ 3` colours (a gray image then meets the response of a
    /// colourless one); for `C` channels from `I = 3` it is repeated over them and scaled
    /// by `3 / C`. Returned unchanged when `conv1.weight` is absent or already takes
    /// `channels`, or when `channels` is 3 (as timm, which leaves RGB weights alone).
    /// Throws for the other shapes, which timm does not convert either.
    public func adaptingInputChannels(to channels: Int) throws -> SafeTensorsFile {
        guard let weight = self["conv1.weight"]?.floats(), weight.shape.count == 4, weight.shape[1] != channels, channels != 3 else {
            return self
        }
        let (o, i, k) = (weight.shape[0], weight.shape[1], weight.shape[2] * weight.shape[3])
        guard let count = Tensor.elementCount([o, channels, k]), count <= Parameter.maximumCount else {
            throw BLASNetError.invalidArgument("conv1.weight adapted to \(channels) input channels would be more than \(Parameter.maximumCount) elements")
        }
        guard channels > 0, channels == 1 ? i <= 3 : i == 3 else {
            throw BLASNetError.invalidArgument("conv1.weight takes \(i) input channels; only RGB (3) weights adapt to \(channels)")
        }
        let w = weight.scalars
        var adapted = [Float](repeating: 0, count: o * channels * k)
        for out in 0..<o {
            for c in 0..<channels {
                for t in 0..<k {
                    adapted[(out * channels + c) * k + t] = channels == 1
                        ? (0..<i).reduce(0) { $0 + w[(out * i + $1) * k + t] }
                        : w[(out * i + c % 3) * k + t] * (3 / Float(channels))
                }
            }
        }
        let conv1 = SafeTensor(try Tensor(shape: [o, channels, weight.shape[2], weight.shape[3]], scalars: adapted))
        return SafeTensorsFile(tensors: tensors.map { $0.name == "conv1.weight" ? ($0.name, conv1) : $0 }, metadata: metadata)
    }
}
