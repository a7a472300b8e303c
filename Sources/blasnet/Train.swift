import ArgumentParser
import BLASNet
import BLASNetDistributed
import Foundation

extension DatasetName: ExpressibleByArgument {}

/// Trains a ResNet / SE-ResNet on an image dataset, with live progress, per-epoch
/// metrics, a chart, and atomic checkpoints from which `--resume` continues exactly.
struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a ResNet or SE-ResNet on Fashion-MNIST, MNIST, CIFAR-10 or CIFAR-100.",
        discussion: """
            Writes DIR/metrics.csv, DIR/curves.svg, DIR/last.safetensors (every epoch) and \
            DIR/best.safetensors (best test accuracy). The defaults train a small SE-ResNet on \
            Fashion-MNIST to about 92% test accuracy in under five minutes on two cores; \
            `--preset long` trains at full resolution with random crops for 30 epochs (94.2% measured).

            Ctrl-C (or SIGTERM) stops after the current step and saves DIR/last.safetensors, \
            from which `--resume DIR` continues exactly; a second Ctrl-C exits at once. A step \
            whose loss or gradient is not finite stops the run, naming the layer where it began, \
            and leaves the last checkpoint as it was.
            """
    )

    enum OptimizerName: String, ExpressibleByArgument, CaseIterable { case sgd, adamw }
    enum Preset: String, ExpressibleByArgument, CaseIterable { case quick, long }
    /// The settings a flag not given takes, named in the help texts.
    private static let quick = RunSettings(preset: .quick), long = RunSettings(preset: .long)

    @Option(help: "Settings bundle: quick (the default: 5 epochs at half resolution, about 92% in under 5 minutes) or long (30 epochs at full resolution with random crops, 94.2% measured).")
    var preset: Preset?

    @Option(help: "Architecture (default: \(quick.archName)): resnet/seresnet 18…152, or CIFAR-style 6n+2 (up to \(Architecture.maximumCIFARDepth)) such as seresnet20.")
    var arch: Architecture?

    @Option(parsing: .unconditional, help: "Channels of the stem and first stage (default: \(quick.width), for every architecture; torchvision's ResNets have 64).")
    var width: Int?

    @Option(help: "Stem: imagenet (7×7/2 conv + max-pool), cifar (3×3/1 conv) or strided (3×3/2 conv) (default: \(quick.stemName), or \(long.stemName) with --preset long).")
    var stem: Stem?

    @Option(help: "Normalization of every norm slot (default batch): batch, group (32 groups), group:G, layer or instance.",
            transform: Normalization.init(parsing:))
    var norm: Normalization?

    @Option(help: "Dataset: \(DatasetName.allCases.map(\.rawValue).joined(separator: ", ")) (default: \(quick.datasetName)).")
    var dataset: DatasetName?

    @Option(help: "Directory holding the dataset's files (default for fashion-mnist: /usr/share/datasets/fashion-mnist, from Debian's dataset-fashion-mnist; for mnist: /usr/share/datasets/mnist; the CIFAR datasets need it).")
    var data: String?

    @Option(help: "Only these classes, relabelled in the order given: a list (5,6,7) or a range (0-4).",
            transform: ClassList.init(parsing:))
    var classes: ClassList?

    @Option(parsing: .unconditional, help: "Total epochs of the run (the schedule spans them) (default: \(quick.epochs), or \(long.epochs) with --preset long).")
    var epochs: Int?

    @Option(parsing: .unconditional, help: "Images per training step (default: \(quick.batchSize)).")
    var batchSize: Int?

    @Option(parsing: .unconditional, help: "Peak learning rate (default: \(quick.learningRate) for sgd, \(RunSettings.adamW.learningRate) for adamw, torch.optim.AdamW's).")
    var lr: Float?

    @Option(help: "Optimizer: sgd (momentum 0.9, Nesterov) or adamw (default: \(quick.optimizer)).")
    var optimizer: OptimizerName?

    @Option(help: "Learning-rate schedule, per step: constant, cosine[:minimum=M], step:every=N[,gamma=G], onecycle[:pct-start=P,div-factor=D,final-div-factor=F] (default: \(quick.schedule)).")
    var schedule: String?

    @Option(parsing: .unconditional, help: "Linear warm-up, in epochs (fractions allowed); not with onecycle, which warms up by itself (default: none).")
    var warmup: Double?

    @Option(parsing: .unconditional, help: "Weight decay, decoupled for adamw (default: \(quick.weightDecay) for sgd, \(RunSettings.adamW.weightDecay) for adamw, torch.optim.AdamW's).")
    var weightDecay: Float?

    @Option(parsing: .unconditional, help: "Label smoothing for cross-entropy, in [0, 1) (default: \(quick.labelSmoothing); none for focal loss).")
    var labelSmoothing: Float?

    @OptionGroup var loss: LossOptions

    @Option(parsing: .unconditional, help: "Random crop after zero padding by this many pixels (0: off) (default: \(quick.cropPadding), or \(long.cropPadding) with --preset long).")
    var cropPadding: Int?

    @Option(help: "Random horizontal flips: true or false (default: \(quick.flip)).")
    var flip: Bool?

    @Option(parsing: .unconditional, help: "Probability of random erasing (torchvision's RandomErasing: 2–33% of the image, aspect 0.3–3.3; 0: off).")
    var randomErasing: Double?

    @Option(parsing: .unconditional, help: "Seed for initialization, batch order and augmentation (default: \(quick.seed)).")
    var seed: UInt64?

    @OptionGroup var compute: ComputeOptions

    @Option(help: "Directory for metrics, chart and checkpoints, created if needed (default: runs/latest, or the --resume directory).")
    var out: String?
    static let defaultOut = "runs/latest"

    /// Where a run in `directory` keeps the checkpoint `--resume` reads.
    static func checkpointPath(_ directory: String) -> String { TrainingRun.path(.last, in: directory) }

    @Option(help: "Continue the run whose checkpoint is DIR/last.safetensors, to --epochs in all.")
    var resume: String?

    @Flag(help: "Start a new run even if --out holds one, removing its checkpoints, metrics and chart first.")
    var overwrite = false

    @Flag(help: "Skip steps whose loss or gradient is not finite (counting them) instead of stopping.")
    var skipNonfinite = false

    @Flag(help: "Data-parallel training over MPI: run under mpirun or srun; each process trains on its shard of every --batch-size batch.")
    var distributed = false

    @Flag(help: "With --distributed: BatchNorm normalizes with the statistics of the global batch (SyncBatchNorm).")
    var syncBn = false

    func validate() throws {
        // The settings' ranges are checked once flags and any resumed run's settings are merged.
        if syncBn && !distributed { throw ValidationError("--sync-bn synchronizes the processes of a --distributed run") }
        let target = out ?? resume ?? Self.defaultOut
        if !resumesInPlace {
            try OutputDirectory.checkNothingReplaced(TrainingRun.path(.last, in: target), overwrite: overwrite,
                                                     otherwise: "continue that run with --resume \(target)")
            try OutputDirectory.checkNothingReplaced(TrainingRun.path(.best, in: target), overwrite: overwrite,
                                                     otherwise: "it holds an earlier run's best weights, and no checkpoint to resume")
        }
        if let preset, resume != nil {
            throw ValidationError("--preset \(preset.rawValue) picks a new run's settings; a resumed run keeps its own (set --epochs and the like instead)")
        }
    }

    /// Whether the run continues in the directory it was resumed from.
    private var resumesInPlace: Bool {
        // Through symlinks: --overwrite must not take the resumed run's files for an earlier run's.
        func canonical(_ path: String) -> String {
            guard let resolved = realpath(path, nil) else { return URL(fileURLWithPath: path).standardizedFileURL.path }
            defer { free(resolved) }
            return String(cString: resolved)
        }
        return resume.map(canonical) == canonical(out ?? resume ?? Self.defaultOut)
    }

    func run() throws {
        try OutputDirectory.removingIfLeftEmpty(out ?? resume ?? Self.defaultOut, runTraining)
    }

    private func runTraining() throws {
        let processes = distributed ? try MPIProcessGroup() : nil
        processes?.reportFromRootOnly()
        compute.apply(processes: processes)
        let checkpoint = try resume.map { directory in
            let path = Self.checkpointPath(directory)
            guard let processes else { return try TrainingCheckpoint(contentsOf: path) }
            // Rank 0's file, wherever the other ranks run.
            return try TrainingCheckpoint(data: processes.broadcast(processes.isRoot ? Data(contentsOf: URL(fileURLWithPath: path)) : nil),
                                          path: path)
        }
        let run = try TrainingRun(settings: resolvedSettings(checkpoint), dataDirectory: data, out: out ?? resume ?? Self.defaultOut,
                                  processes: processes, syncBatchNorm: syncBn)
        if let checkpoint { try run.restore(checkpoint) }
        if overwrite && !resumesInPlace { try run.removeEarlierRun() }
        // A run continued elsewhere keeps its best epoch's weights beside the new ones.
        if let resume, !resumesInPlace { try run.adoptBest(from: resume) }
        try run.synchronizeWithRoot()
        run.trainer.skipNonFinite = skipNonfinite
        compute.configure(run.trainer.model)
        Interruption.install()
        try run.train()
        processes?.finalize()
    }


    /// The run's settings: the preset's (or on resume the checkpoint's), overridden by the
    /// flags given. What shapes the model or the data cannot change on resume.
    private func resolvedSettings(_ checkpoint: TrainingCheckpoint?) throws -> RunSettings {
        var s = try checkpoint.map { try RunSettings(checkpoint: $0, path: Self.checkpointPath(resume ?? "")) }
            ?? RunSettings(preset: preset ?? .quick)
        func apply<T>(_ value: T?, to path: WritableKeyPath<RunSettings, T>) {
            if let value { s[keyPath: path] = value }
        }
        if checkpoint != nil {
            let fixed = [("--arch", arch?.rawValue, s.arch.rawValue), ("--width", width.map(String.init), String(s.width)),
                         ("--stem", stem?.rawValue, s.stem.rawValue), ("--norm", norm?.description, s.norm.description),
                         ("--dataset", dataset?.rawValue, s.dataset.rawValue),
                         ("--seed", seed.map(String.init), String(s.seed)),
                         // The checkpoint holds this optimizer's state, which the other cannot take.
                         ("--optimizer", optimizer?.rawValue, s.optimizer),
                         ("--classes", classes.map { "\($0.values)" }, "\(s.classes ?? [])")]
            for (flag, given, saved) in fixed where given != nil && given != saved {
                throw ValidationError("\(flag) \(given!) differs from the resumed run's \(saved); start a new run instead")
            }
            // Steps done inside the epoch count batches of the size they ran with.
            if let batchSize, batchSize != s.batchSize, let progress = checkpoint?.epochProgress, progress.steps > 0 {
                throw ValidationError("""
                    --batch-size \(batchSize) differs from the \(s.batchSize) the run stopped with inside an epoch \
                    (after step \(progress.steps)); resume without it, and change it at an epoch's end
                    """)
            }
        }
        apply(dataset, to: \.dataset)
        apply(stem, to: \.stem)
        apply(seed, to: \.seed)
        if let classes { s.classes = classes.values }
        apply(arch, to: \.arch)
        apply(width, to: \.width)
        apply(norm, to: \.norm)
        apply(epochs, to: \.epochs)
        apply(batchSize, to: \.batchSize)
        apply(lr, to: \.learningRate)
        apply(optimizer?.rawValue, to: \.optimizer)
        // The presets' rate and decay are SGD's; a new AdamW run takes torch's.
        if checkpoint == nil && s.optimizer == OptimizerName.adamw.rawValue {
            s.learningRate = lr ?? RunSettings.adamW.learningRate
            s.weightDecay = weightDecay ?? RunSettings.adamW.weightDecay
        }
        apply(schedule, to: \.schedule)
        apply(warmup, to: \.warmupEpochs)
        apply(weightDecay, to: \.weightDecay)
        apply(labelSmoothing, to: \.labelSmoothing)
        apply(loss.loss, to: \.loss)
        // Not `apply`: with an optional setting its `T?` is `Float??`, and a flag not given
        // would wipe what the resumed run recorded.
        if let gamma = loss.focalGamma { s.focalGamma = gamma }
        if let alpha = loss.focalAlpha { s.focalAlpha = alpha }
        try loss.checkFocalOptions(for: s.loss)
        // Recorded as used, so that a later change of the defaults cannot change a resumed run.
        if s.loss == .focal {
            s.focalGamma = s.focalGamma ?? LossOptions.defaultFocalGamma
            s.focalAlpha = s.focalAlpha ?? LossOptions.defaultFocalAlpha
        }
        // The presets smooth labels for cross-entropy; focal loss takes none unless asked (and then refuses).
        if s.loss == .focal && labelSmoothing == nil { s.labelSmoothing = 0 }
        apply(cropPadding, to: \.cropPadding)
        apply(flip, to: \.flip)
        if let randomErasing { s.randomErasing = randomErasing }
        try s.validate()
        return s
    }
}
