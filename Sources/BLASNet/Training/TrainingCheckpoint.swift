import Foundation

/// A training run's complete state in one safetensors file: the model under its PyTorch
/// state_dict names, the optimizer state under `optimizer.`, and in `__metadata__` the
/// completed epochs, the progress inside the current one, optimizer steps, skipped
/// steps, per-epoch history and the run's settings.
///
/// The random state is the run's seed and the epoch: batch order and augmentation are
/// functions of those two (see ``DataLoader``), so nothing else needs saving for a
/// resumed run to take the same steps an uninterrupted one would.
///
/// PyTorch reads the weights with `load_state_dict(strict=False)` (or after dropping the
/// `optimizer.` keys); ``modelStateDict`` gives them alone.
public struct TrainingCheckpoint {
    public static let format = "blasnet-checkpoint-1"
    /// The prefix ``Optimizer/stateTensors()`` puts on every key.
    static var optimizerPrefix: String { OptimizerStateLayout.prefix }

    /// JSON for the metadata, where a diverged run's NaN or infinite losses must still fit.
    private static var encoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return encoder
    }
    private static var decoder: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return decoder
    }

    /// Model parameters and buffers, optimizer state, and metadata.
    public private(set) var file: SafeTensorsFile

    /// Captures `trainer`'s model and optimizer; `settings` are stored as they are (the
    /// CLI keeps the model shape and training options there) next to the bookkeeping keys.
    public init(trainer: Trainer, history: [EpochSummary], settings: [String: String]) throws {
        let optimizerState = trainer.optimizer.stateTensors()
            .sorted { $0.key < $1.key }
            .map { ($0.key, SafeTensor($0.value)) }
        var metadata = settings
        metadata["format"] = Self.format
        metadata["completed_epochs"] = String(trainer.completedEpochs)
        metadata["optimizer_steps"] = String(trainer.optimizer.stepCount)
        metadata["skipped_steps"] = String(trainer.skippedSteps)
        metadata["epoch_progress"] = String(decoding: try Self.encoder.encode(trainer.epochProgress), as: UTF8.self)
        metadata["history"] = String(decoding: try Self.encoder.encode(history), as: UTF8.self)
        file = SafeTensorsFile(tensors: trainer.model.stateDict() + optimizerState, metadata: metadata)
    }

    /// Reads a checkpoint; throws if `path` is not one.
    public init(contentsOf path: String) throws {
        try self.init(file: SafeTensorsFile(contentsOf: path), path: path)
    }

    /// A checkpoint from the bytes of its file (``serialized()``); `path` names it in errors.
    public init(data: Data, path: String) throws {
        try self.init(file: SafeTensorsFile(data: data, path: path), path: path)
    }

    private init(file: SafeTensorsFile, path: String) throws {
        self.file = file
        guard file.metadata["format"] == Self.format else {
            throw BLASNetError.malformedFile(path: path, reason: "not a BLASNet training checkpoint (no \"format\": \"\(Self.format)\" in __metadata__)")
        }
        guard let epochs = completedEpochs, let steps = optimizerSteps, history != nil else {
            throw BLASNetError.malformedFile(path: path, reason: "checkpoint metadata lacks completed_epochs, optimizer_steps or history")
        }
        // Present but unreadable would resume as if at an epoch's start: another run than the one saved.
        if file.metadata["epoch_progress"] != nil && epochProgress == nil {
            throw BLASNetError.malformedFile(path: path, reason: "checkpoint metadata epoch_progress is not a readable epoch position")
        }
        // Counts that index batches and the schedule: a damaged file must not trap a resume.
        let progress = epochProgress ?? EpochProgress()
        let skipped = file.metadata["skipped_steps"].flatMap { Int($0) } ?? 0
        // At most 2⁵³ (a Float64 integer, far past any run), so that counting on cannot overflow.
        let counts = 0...(1 << 53)
        guard [epochs, steps, skipped, progress.steps, progress.seen].allSatisfy(counts.contains),
              (0...progress.steps).contains(progress.skipped), (0...progress.seen).contains(progress.correct) else {
            throw BLASNetError.malformedFile(path: path, reason: """
                checkpoint counts are out of range (completed_epochs \(epochs), optimizer_steps \(steps), skipped_steps \(skipped), \
                epoch progress \(progress.steps) steps, \(progress.skipped) skipped, \(progress.correct) of \(progress.seen) correct)
                """)
        }
    }

    public var metadata: [String: String] { file.metadata }
    public var completedEpochs: Int? { file.metadata["completed_epochs"].flatMap { Int($0) } }
    public var optimizerSteps: Int? { file.metadata["optimizer_steps"].flatMap { Int($0) } }
    /// Where the run stood inside epoch ``completedEpochs`` (empty when it stopped between epochs).
    public var epochProgress: EpochProgress? {
        file.metadata["epoch_progress"].flatMap { try? Self.decoder.decode(EpochProgress.self, from: Data($0.utf8)) }
    }
    public var history: [EpochSummary]? {
        file.metadata["history"].flatMap { try? Self.decoder.decode([EpochSummary].self, from: Data($0.utf8)) }
    }

    /// The model's tensors alone, as `load_state_dict` expects them.
    public var modelStateDict: SafeTensorsFile { file.withoutOptimizerState }

    /// Puts the model weights, optimizer state and epoch count back into `trainer`.
    public func restore(into trainer: Trainer) throws {
        try trainer.model.loadStateDict(modelStateDict)
        let optimizerState = Dictionary(uniqueKeysWithValues: file.tensors
            .filter { $0.name.hasPrefix(Self.optimizerPrefix) }
            .map { ($0.name, $0.tensor.floats()) })
        try trainer.optimizer.loadState(optimizerState, stepCount: optimizerSteps ?? 0)
        trainer.completedEpochs = completedEpochs ?? 0
        trainer.epochProgress = epochProgress ?? EpochProgress()
        trainer.skippedSteps = file.metadata["skipped_steps"].flatMap { Int($0) } ?? 0
    }

    /// The bytes of the checkpoint's file.
    public func serialized() throws -> Data {
        try file.serialized()
    }

    /// Writes atomically: a temporary file beside `path`, fsynced, then renamed over it.
    public func write(to path: String) throws {
        try file.write(to: path)
    }
}

extension SafeTensorsFile {
    /// This file without a training checkpoint's optimizer state (its `optimizer.*`
    /// tensors): the weights alone, which a strict ``Module/loadStateDict(_:strict:)`` accepts.
    /// Any other file is returned as it is.
    public var withoutOptimizerState: SafeTensorsFile {
        SafeTensorsFile(tensors: tensors.filter { !$0.name.hasPrefix(TrainingCheckpoint.optimizerPrefix) }, metadata: metadata)
    }
}
