/// The normalization a ResNet puts in every norm slot (`bn1`, `bn2`, …, `downsample.1`).
///
/// Whatever the kind, the slot keeps its PyTorch state_dict names (`bn1.weight`,
/// `bn1.bias`); only ``batch`` has running buffers. All use `eps = 1e-5`.
public enum Normalization: Hashable, Sendable, CustomStringConvertible {
    /// `BatchNorm2d(C)`: batch statistics in training, running statistics in inference.
    case batch
    /// `GroupNorm(G, C)`: per sample, over groups of `C/G` channels; `G` must divide every slot's channels.
    case group(Int)
    /// Layer norm of images, `GroupNorm(1, C)`: per sample over `C × H × W`, per-channel affine.
    case layer
    /// Instance norm as `GroupNorm(C, C)`: per sample and channel over `H × W`, per-channel
    /// affine, no running statistics.
    case instance

    /// Groups of ``group(_:)`` when the text gives none (as in PyTorch's usual `GroupNorm(32, C)`).
    public static let defaultGroups = 32

    /// Parses the command-line form: `batch`, `group` (32 groups), `group:G`, `layer` or `instance`.
    public init(parsing text: String) throws {
        let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        switch (parts[0], parts.count) {
        case ("batch", 1): self = .batch
        case ("layer", 1): self = .layer
        case ("instance", 1): self = .instance
        case ("group", 1): self = .group(Self.defaultGroups)
        case ("group", _):
            guard let groups = Int(parts[1]), groups > 0 else {
                throw BLASNetError.invalidArgument("normalization '\(text)': the group count must be a positive integer")
            }
            self = .group(groups)
        default:
            throw BLASNetError.invalidArgument("unknown normalization '\(text)'; expected batch, group, group:G, layer or instance")
        }
    }

    /// The command-line form, which ``init(parsing:)`` reads back.
    public var description: String {
        switch self {
        case .batch: "batch"
        case let .group(groups): "group:\(groups)"
        case .layer: "layer"
        case .instance: "instance"
        }
    }

    /// The layer for a slot of `channels` channels named `slot` (for errors), with the
    /// following ReLU fused into it when `fusesReLU`.
    func layer(_ channels: Int, fusesReLU: Bool = false, slot: String) throws -> any Module {
        let groups: Int
        switch self {
        case .batch: return try BatchNorm2d(channels, fusesReLU: fusesReLU)
        case let .group(g): groups = g
        case .layer: groups = 1
        case .instance: groups = channels
        }
        guard groups > 0, channels % groups == 0 else {
            throw BLASNetError.invalidArgument(
                "normalization \(self) does not fit \(slot): its \(channels) channels are not a multiple of \(groups) groups")
        }
        return try GroupNorm(groups: groups, channels: channels, fusesReLU: fusesReLU)
    }
}
