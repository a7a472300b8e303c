import ArgumentParser
import BLASNet
import Foundation

/// Times a training or inference step and, in the same run, the step's sgemm calls alone.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time a step per layer and against its sgemm calls alone (GEMM efficiency).",
        discussion: "Build with -c release. GEMM efficiency = time of the step's sgemm calls replayed alone ÷ step time, from profiled steps that alternate with the replays."
    )

    enum Mode: String, ExpressibleByArgument, CaseIterable { case train, inference }

    @OptionGroup var model: ModelOptions
    @OptionGroup var compute: ComputeOptions

    @Option(parsing: .upToNextOption, help: "Input height and width.")
    var input: [Int] = [224, 224]

    @Option(name: [.customLong("batch"), .customLong("batch-size")], parsing: .unconditional, help: "Images per step.")
    var batch = 16

    @Option(help: "train (forward, loss, backward, SGD update) or inference.")
    var mode: Mode = .train

    @Option(parsing: .unconditional, help: "Untimed steps first.")
    var warmup = 1

    @Option(parsing: .unconditional, help: "Timed steps (the median is reported).")
    var steps = 5

    @Option(help: "Weights to load (.safetensors by state_dict name) instead of a random initialization.")
    var weights: String?

    @Option(help: "Batch to use (.safetensors with `input` [N, C, H, W] and `target` [N]) instead of random data; its N, H and W replace --batch and --input, and its C must be the model's input channels.")
    var data: String?

    @Flag(help: "Print one JSON object instead of tables.")
    var json = false

    @Flag(help: "Data-parallel training step over MPI (under mpirun or srun): --batch is the global batch, split over the processes; reports allreduce time and how much of it backward hides.")
    var distributed = false

    @Flag(help: "With --distributed: synchronized BatchNorm statistics.")
    var syncBn = false

    func validate() throws {
        try ModelOptions.check(input: input)
        guard batch > 0 else { throw ValidationError("--batch must be positive, got \(batch)") }
        // The random input batch alone, in Float64 to stay clear of overflow: at most 8 GB.
        let inputBytes = 4 * Double(batch) * Double(model.inputChannels) * Double(input[0]) * Double(input[1])
        guard inputBytes <= Double(1 << 33) else {
            throw ValidationError("an input batch of \(batch)×\(model.inputChannels)×\(input[0])×\(input[1]) floats needs more than 8 GB")
        }
        // A million steps of the smallest model run for hours; beyond that a count is a typo.
        guard (1...1_000_000).contains(steps) else { throw ValidationError("--steps must be in 1...1000000, got \(steps)") }
        guard (0...1_000_000).contains(warmup) else { throw ValidationError("--warmup must be in 0...1000000, got \(warmup)") }
        if mode == .train && batch < 2 { throw ValidationError("training needs --batch of at least 2 (BatchNorm statistics)") }
        if distributed && (mode != .train || data != nil) {
            throw ValidationError("--distributed times training steps on random data: no --mode inference, no --data")
        }
        if syncBn && !distributed { throw ValidationError("--sync-bn synchronizes the processes of a --distributed run") }
    }

    func run() throws {
        if distributed { return try runDistributed() }
        compute.apply()
        let net = try weights.map { try model.makeModel(loading: SafeTensorsFile(contentsOf: $0), path: $0) } ?? model.makeModel()
        compute.configure(net)
        let (x, targets) = try batchTensors(count: batch, for: net)
        let sgd = try SGD(net.parameters(), learningRate: 0.01, momentum: 0.9, weightDecay: 1e-4)
        if mode == .train { net.train() } else { net.eval() }
        // The first two losses: before any update, and after one SGD update on the same batch.
        // Reserved, so that recording the second does not allocate inside a timed step.
        var losses: [Float] = []
        losses.reserveCapacity(2)
        let step = {
            guard mode == .train else {
                // Keeps no activations for a backward pass, as PyTorch's inference_mode.
                _ = try withoutGradients { try net.forward(x) }
                return
            }
            let logits = try net.forward(x)
            let (loss, gradient) = try CrossEntropyLoss()(logits, targets: targets)
            if losses.count < 2 { losses.append(loss) }
            sgd.zeroGrad()
            _ = try net.backward(gradient)
            sgd.step()
        }
        for _ in 0..<warmup { try step() }
        var stepTimes: [Double] = []
        stepTimes.reserveCapacity(steps)
        let allocationsBefore = AllocationCounter.read()
        for _ in 0..<steps { stepTimes.append(try seconds(step)) }
        let allocationsAfter = AllocationCounter.read()
        // The step's memory, before the replay below adds scratch of its own on top of the pool's buffers.
        let peakBytes = ResidentMemory.peakBytes

        // GEMM efficiency: profiled steps alternate with replays of their sgemm calls, so
        // that the machine's drift over the run (±30% on a shared VM) falls on both alike.
        let profiler = Profiler(net)
        var profiledSteps: [Double] = [], replays: [[Double]] = []
        // Each layer's forward and backward time in each profiled step (the profiler keeps totals).
        var layerSteps: [[(forward: Double, backward: Double)]] = []
        var replay: GEMMReplay?
        for _ in 0..<steps {
            // Only the times: holding the records would make the step copy their sgemm lists.
            let before = profiler.layers.map { (forward: $0.forwardSeconds, backward: $0.backwardSeconds) }
            profiledSteps.append(try seconds { try profiler.run(step) })
            layerSteps.append(profiler.layers.enumerated().map { i, layer in
                let earlier = i < before.count ? before[i] : (forward: 0, backward: 0)
                return (layer.forwardSeconds - earlier.forward, layer.backwardSeconds - earlier.backward)
            })
            replay = replay ?? GEMMReplay(profiler.layers, steps: 1)
            replays.append(replay!.run())
        }
        let layers = profiler.layers.enumerated().map { i, layer -> LayerReport in
            let gemm = median(replays.map { $0[i] })
            let total = median(layerSteps.map { $0[i].forward + $0[i].backward })
            return LayerReport(name: layer.name, kind: layer.kind, container: layer.isContainer,
                               forward_seconds: median(layerSteps.map { $0[i].forward }),
                               backward_seconds: median(layerSteps.map { $0[i].backward }),
                               gemm_seconds: gemm, gemm_efficiency: total > 0 ? gemm / total : 0,
                               gflop: layer.gemms.reduce(0) { $0 + $1.flops } / Double(steps) / 1e9)
        }
        let stepSeconds = median(stepTimes), profiledStepSeconds = median(profiledSteps)
        let otherSeconds = median(zip(profiledSteps, layerSteps).map { step, layers in
            layers.reduce(step) { $0 - $1.forward - $1.backward }
        })
        let gemmSeconds = median(replays.map { $0.reduce(0, +) })
        let gflop = layers.reduce(0) { $0 + $1.gflop }
        let report = BenchReport(
            arch: model.arch.rawValue, stem: net.stem.rawValue, mode: mode.rawValue, batch: x.shape[0], input: Array(x.shape[2...]),
            first_loss: losses.first, second_loss: losses.dropFirst().first,
            threads: BLAS.threads, openblas_core: BLAS.coreName, openblas_threading: BLAS.threading, openblas_config: BLAS.configuration,
            step_seconds: stepSeconds, step_seconds_samples: stepTimes, images_per_second: Double(x.shape[0]) / stepSeconds,
            profiled_step_seconds: profiledStepSeconds,
            other_seconds: otherSeconds,
            gemm_seconds: gemmSeconds,
            gemm_efficiency: gemmSeconds / profiledStepSeconds, gemm_gflop: gflop, achieved_gflops: gflop / stepSeconds, peak_rss_bytes: peakBytes,
            allocations_per_step: allocationsAfter.map { Double($0.calls - allocationsBefore!.calls) / Double(steps) },
            allocated_bytes_per_step: allocationsAfter.map { Double($0.bytes - allocationsBefore!.bytes) / Double(steps) },
            layers: layers)
        if json {
            try printJSON(report)
        } else {
            report.printTables()
        }
    }

    /// The batch from `--data`, or uniform noise and random labels for `count` images, for `net`.
    func batchTensors(count batch: Int, for net: ResNet) throws -> (Tensor, [Int]) {
        if let data {
            let file = try SafeTensorsFile(contentsOf: data)
            guard let x = file["input"], let t = file["target"] else {
                throw BLASNetError.invalidArgument("\(data): needs tensors 'input' and 'target'")
            }
            guard x.shape.count == 4, x.shape[1] == net.inChannels else {
                throw ValidationError("\(data) holds an input of shape \(x.shape); the model takes [N, \(net.inChannels), H, W] (--in-chans)")
            }
            guard let targets = try? t.integers().map({ Int($0) }) else {
                throw BLASNetError.invalidArgument("\(data): 'target' must hold integer class indices (I64 [N]), got \(t.dtype.rawValue)")
            }
            return (x.floats(), targets)
        }
        var rng = SystemRandomNumberGenerator()
        let c = net.inChannels
        // The flags' 8 GB check again, with the channels the weights gave.
        guard 4 * Double(batch) * Double(c) * Double(input[0]) * Double(input[1]) <= Double(1 << 33) else {
            throw ValidationError("an input batch of \(batch)×\(c)×\(input[0])×\(input[1]) floats needs more than 8 GB")
        }
        let x = try Tensor(shape: [batch, c, input[0], input[1]],
                           scalars: (0..<(batch * c * input[0] * input[1])).map { _ in Float.random(in: -1..<1, using: &rng) })
        return (x, (0..<batch).map { _ in Int.random(in: 0..<net.numClasses, using: &rng) })
    }

    func seconds(_ body: () throws -> Void) rethrows -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        try body()
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }
}

/// The middle sample, or the mean of the two middle ones for an even count.
func median(_ samples: [Double]) -> Double {
    let sorted = samples.sorted(), middle = sorted.count / 2
    return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
}

/// `value` as pretty, key-sorted JSON on stdout: stable output for scripts to read.
func printJSON(_ value: some Encodable) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    // A diverged loss is still a result to report, as JSON's usual strings for it.
    encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

/// Heap allocation counts from scripts/count-allocations' preloaded shim, when present.
enum AllocationCounter {
    private typealias Read = @convention(c) (UnsafeMutablePointer<UInt>, UnsafeMutablePointer<UInt>) -> Void

    static func read() -> (calls: Int, bytes: Int)? {
        guard let symbol = dlsym(nil, "blasnet_allocation_counts") else { return nil }
        var calls: UInt = 0, bytes: UInt = 0
        unsafeBitCast(symbol, to: Read.self)(&calls, &bytes)
        return (Int(calls), Int(bytes))
    }
}

struct LayerReport: Codable {
    var name: String
    var kind: String
    /// A block or stage: its times are its own code's (a residual block's addition and ReLU), not its layers'.
    var container: Bool
    /// Medians over the profiled steps.
    var forward_seconds: Double
    var backward_seconds: Double
    var gemm_seconds: Double
    var gemm_efficiency: Double
    var gflop: Double
}

struct BenchReport: Codable {
    var arch: String
    var stem: String
    var mode: String
    var batch: Int
    var input: [Int]
    /// Loss of the first training step (before any update), to compare with other frameworks.
    var first_loss: Float?
    /// Loss of the second step: the same batch after one SGD update, so that a comparison
    /// covers backward and the optimizer too. Absent in inference mode.
    var second_loss: Float?
    var threads: Int
    var openblas_core: String
    var openblas_threading: String
    var openblas_config: String
    var step_seconds: Double
    var step_seconds_samples: [Double]
    var images_per_second: Double
    /// Median of the profiled steps that alternate with the replays of their sgemms.
    var profiled_step_seconds: Double
    /// Median over the profiled steps of the step minus its layers' (and containers')
    /// times: the loss, the optimizer and the model's own layout changes.
    var other_seconds: Double
    var gemm_seconds: Double
    var gemm_efficiency: Double
    var gemm_gflop: Double
    var achieved_gflops: Double
    var peak_rss_bytes: Int
    /// Heap allocations per timed step (a mean, so that one allocation in several steps
    /// still shows); present when run under scripts/count-allocations.
    var allocations_per_step: Double?
    var allocated_bytes_per_step: Double?
    var layers: [LayerReport]

    func printTables() {
        func ms(_ s: Double) -> String { String(format: "%8.2f", s * 1000) }
        print("OpenBLAS \(openblas_core) (\(openblas_config)), a \(openblas_threading) build called single-threaded; \(threads) worker threads")
        print("\(arch) \(stem) stem, \(mode), batch \(batch), input \(input[0])×\(input[1])\n")
        print("layer".padding(toLength: 36, withPad: " ", startingAt: 0) + "   fwd ms   bwd ms  gemm ms   eff  GFLOP/s")
        for l in layers {
            let total = l.forward_seconds + l.backward_seconds
            print((l.container ? l.name + " (own code)" : l.name).padding(toLength: 36, withPad: " ", startingAt: 0) + " \(ms(l.forward_seconds)) \(ms(l.backward_seconds)) "
                  + "\(ms(l.gemm_seconds)) " + String(format: "%5.2f %8.1f", l.gemm_efficiency, total > 0 ? l.gflop / total : 0))
        }
        print("")
        print(String(format: "step          %8.1f ms (median of %d)   %.2f images/s", step_seconds * 1000, step_seconds_samples.count, images_per_second))
        print(String(format: "profiled step %8.1f ms   outside the layers (loss, optimizer, layout) %.1f ms",
                     profiled_step_seconds * 1000, other_seconds * 1000))
        print(String(format: "sgemm alone   %8.1f ms   %.1f GFLOP, %.1f GFLOP/s achieved over the step", gemm_seconds * 1000, gemm_gflop, achieved_gflops))
        print(String(format: "GEMM efficiency %.3f (sgemm-alone time ÷ profiled step time, the two alternating)", gemm_efficiency))
        print(String(format: "peak RSS      %8.1f MiB", Double(peak_rss_bytes) / 1048576))
        if let allocations_per_step, let allocated_bytes_per_step {
            print("allocations   \(allocations_per_step.formatted()) per step, \(allocated_bytes_per_step.formatted()) bytes per step")
        }
    }
}
