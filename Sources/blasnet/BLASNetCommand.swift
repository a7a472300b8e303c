import ArgumentParser
import BLASNet
import Foundation

@main
struct BLASNetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "blasnet",
        abstract: "ResNet and SE-ResNet training and inference on OpenBLAS.",
        subcommands: [Train.self, Eval.self, Finetune.self, Run.self, Bench.self, ReceptiveFieldTable.self]
    )

    /// ArgumentParser's `main`, except that a `ValidationError` a command throws while it
    /// runs (a flag that contradicts a file's record, say) prints its message alone: the
    /// usage text it would add is the top-level command's, which helps no one there.
    static func main() {
        var command: any ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            exit(withError: error)
        }
        do {
            try command.run()
        } catch {
            // Into a file or pipe stdout is block-buffered: flushed first (all streams), the
            // progress printed before the error comes before it there too.
            fflush(nil)
            guard let error = error as? ValidationError else { exit(withError: error) }
            FileHandle.standardError.write(Data("Error: \(error.message)\n".utf8))
            exit(withError: ExitCode.validationFailure)
        }
    }
}

extension Architecture: ExpressibleByArgument {}
extension Stem: ExpressibleByArgument {}
extension ConvolutionAlgorithm: ExpressibleByArgument {}

/// Options that pick and shape a model, shared by the subcommands.
///
/// Numeric options here and in the subcommands parse `.unconditional`ly: otherwise a
/// negative value (`--width -3`) reads as an unknown flag and the user is told the value
/// is missing instead of what is wrong with it.
struct ModelOptions: ParsableArguments {
    @Option(help: "Architecture: \(Architecture.allCases.map(\.rawValue).joined(separator: ", ")), or any resnet/seresnet of depth 6n+2 up to \(Architecture.maximumCIFARDepth).")
    var arch: Architecture

    @Option(parsing: .unconditional, help: "Channels of the stem and first stage (default: what --weights records or its conv1.weight shows, else the architecture's, 64 or 16); each stage doubles it.")
    var width: Int?

    @Option(parsing: .unconditional, help: "Number of output classes (default: what --weights records or its fc.weight shows, else 1000).")
    var numClasses: Int?
    var classCount: Int { numClasses ?? 1000 }

    @Option(parsing: .unconditional, help: "Number of input channels (default: what --weights records or its conv1.weight shows, else 3).")
    var inChans: Int?
    var inputChannels: Int { inChans ?? 3 }

    @Option(help: "Stem: imagenet (7×7/2 conv + max-pool), cifar (3×3/1 conv) or strided (3×3/2 conv) (default: what --weights records, else the architecture's, imagenet or for 6n+2 depths cifar).")
    var stem: Stem?

    @Option(help: "Normalization of every norm slot: batch, group (32 groups), group:G, layer or instance (default: what --weights records, else batch).",
            transform: Normalization.init(parsing:))
    var norm: Normalization?

    @Option(parsing: .unconditional, help: "The head's pooling grid: fc reads each channel's mean over a G×G grid (default: what --weights records or its fc.weight shows, else 1: global average, torchvision's head).")
    var headGrid: Int?

    func validate() throws {
        if let headGrid { try Self.check(headGrid: headGrid) }
        if let numClasses, !(1...Self.maximumClasses).contains(numClasses) {
            throw ValidationError("--num-classes must be in 1...\(Self.maximumClasses), got \(numClasses)")
        }
        if let inChans, !(1...Self.maximumInputChannels).contains(inChans) {
            throw ValidationError("--in-chans must be in 1...\(Self.maximumInputChannels), got \(inChans)")
        }
        if let width { try Self.check(width: width) }
    }

    /// Widths past this many channels would ask for more memory than a machine has
    /// (ResNet-50 at 1024 has 256 times its usual parameters); refused rather than trapping.
    static let maximumWidth = 1024

    /// Largest `--input` side: 64 times ImageNet's, far from overflowing any size computed from it.
    static let maximumInputSide = 16384

    static func check(input: [Int]) throws {
        guard input.count == 2, input.allSatisfy({ (1...maximumInputSide).contains($0) }) else {
            throw ValidationError("--input takes two sizes H W in 1...\(maximumInputSide), got \(input.map(String.init).joined(separator: " "))")
        }
    }

    /// A 2²⁰-class head and a 4096-channel input are far past any dataset's; larger values
    /// are typos, and would exhaust memory before an error could name the flag.
    static let maximumClasses = 1 << 20
    static let maximumInputChannels = 4096

    /// Head pooling grids: 64×64 already outnumbers the positions of a 2048² image's last feature map.
    static let headGrids = 1...64

    static func check(headGrid: Int) throws {
        guard headGrids.contains(headGrid) else {
            throw ValidationError("--head-grid must be in \(headGrids.lowerBound)...\(headGrids.upperBound), got \(headGrid)")
        }
    }

    /// `width` if it is one `--width` accepts (for values read from files), else nil.
    static func validWidth(_ width: Int) -> Int? { (try? check(width: width)) != nil ? width : nil }

    static func check(width: Int) throws {
        guard (1...maximumWidth).contains(width) else { throw ValidationError("--width must be in 1...\(maximumWidth), got \(width)") }
    }

    func makeModel() throws -> ResNet {
        try ResNet(arch, numClasses: classCount, inChannels: inputChannels, stem: stem, width: width, norm: norm ?? .batch,
                   headGrid: headGrid ?? 1)
    }

    /// The model for `weights`, read from `path`, with their state loaded. What the file
    /// records (a `blasnet` checkpoint's shape) fills in the flags not given, and a flag
    /// that contradicts it is refused: the norm variants share their weights' shapes, and
    /// so do the cifar and strided stems, so a wrong one would load and compute another
    /// network. Without a record, the stem is the one conv1 shows and the head grid the
    /// one `fc.weight` has room for.
    func makeModel(loading weights: SafeTensorsFile, path: String) throws -> ResNet {
        func recorded<T: Equatable>(_ flag: String, _ given: T?, _ parse: (String) throws -> T?) throws -> T? {
            try RecordedModelOptions.recorded(flag, given, in: weights, path: path, parse)
        }
        var options = self
        _ = try recorded("--arch", arch, Architecture.init(rawValue:))
        let classes = { (n: Int) in (1...Self.maximumClasses).contains(n) ? n : nil }
        options.numClasses = try recorded("--num-classes", numClasses) { Int($0).flatMap(classes) }
            ?? weights["fc.weight"]?.shape.first.flatMap(classes)
        options.width = try recorded("--width", width) { Int($0).flatMap(Self.validWidth) }
            ?? RecordedModelOptions.width(of: weights)
        let channels = { (n: Int) in (1...Self.maximumInputChannels).contains(n) ? n : nil }
        options.inChans = try recorded("--in-chans", inChans) { Int($0).flatMap(channels) }
            ?? (weights["conv1.weight"]?.shape).flatMap { $0.count == 4 ? channels($0[1]) : nil }
        options.norm = try recorded("--norm", norm, Normalization.init(parsing:))
        options.stem = try recorded("--stem", stem, Stem.init(rawValue:))
            ?? (stem == nil ? RecordedModelOptions.unrecordedStem(of: weights, path: path) : nil)
        options.headGrid = try recorded("--head-grid", headGrid) { Int($0).flatMap { Self.headGrids.contains($0) ? $0 : nil } }
            ?? RecordedModelOptions.headGrid(of: weights, channels: arch.featureChannels(width: options.width))
        let net = try options.makeModel()
        // A `train` checkpoint loads as its weights.
        try net.loadStateDict(weights.withoutOptimizerState)
        try RecordedModelOptions.checkUsable(net, from: path)
        return net
    }
}
