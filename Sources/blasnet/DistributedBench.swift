import ArgumentParser
import BLASNet
import BLASNetDistributed
import Foundation

/// `blasnet bench --distributed`: a data-parallel training step over MPI, and how much
/// of its gradient allreduce the backward pass hides.
extension Bench {
    func runDistributed() throws {
        let processes = try MPIProcessGroup()
        processes.reportFromRootOnly()
        compute.apply(processes: processes)
        guard batch % processes.size == 0 else {
            throw ValidationError("--batch \(batch) does not split evenly over \(processes.size) processes")
        }
        let net = try weights.map { try model.makeModel(loading: SafeTensorsFile(contentsOf: $0), path: $0) } ?? model.makeModel()
        compute.configure(net)
        let (x, targets) = try batchTensors(count: batch / processes.size, for: net)
        let parallel = MPIDataParallel(group: processes)
        if syncBn { for case let norm as BatchNorm in net.modules { norm.synchronization = processes } }
        let sgd = try SGD(net.parameters(), learningRate: 0.01, momentum: 0.9, weightDecay: 1e-4)
        net.train()
        let step = {
            let logits = try net.forward(x)
            let (_, gradient) = try CrossEntropyLoss()(logits, targets: targets)
            sgd.zeroGrad()
            try parallel.averageGradients(of: net) { _ = try net.backward(gradient) }
            sgd.step()
        }
        for _ in 0..<warmup { try step() }
        try processes.barrier()
        var exposedTimes: [Double] = []
        let stepTimes = try (0..<steps).map { _ in
            let exposedBefore = parallel.exposedSeconds
            defer { exposedTimes.append(parallel.exposedSeconds - exposedBefore) }
            return try seconds(step)
        }
        let exposed = median(exposedTimes)
        // The same sums with nothing to overlap: what communication costs alone.
        let alone = median(try (0..<steps).map { _ in try seconds { try parallel.sumGradientsBlocking(of: net) } })
        let stepSeconds = median(stepTimes)
        let gradientFloats = net.namedParameters().reduce(0) { $0 + $1.parameter.value.count }
        let report = DistributedBenchReport(
            arch: model.arch.rawValue, stem: net.stem.rawValue, processes: processes.size, threads_per_process: BLAS.threads,
            batch: batch, input: Array(x.shape[2...]), sync_bn: syncBn, step_seconds: stepSeconds, step_seconds_samples: stepTimes,
            images_per_second: Double(batch) / stepSeconds, gradient_bytes: gradientFloats * 4,
            bucket_bytes: parallel.bucketCapacity * 4, allreduce_seconds: alone, allreduce_exposed_seconds: exposed,
            allreduce_hidden_fraction: alone > 0 ? max(0, 1 - exposed / alone) : 1, peak_rss_bytes: ResidentMemory.peakBytes)
        if json {
            try printJSON(report)
        } else {
            report.printSummary()
        }
        processes.finalize()
    }
}

/// What rank 0 reports: its own median step, and the allreduce measured there.
struct DistributedBenchReport: Codable {
    var arch: String
    var stem: String
    var processes: Int
    var threads_per_process: Int
    /// The global batch.
    var batch: Int
    var input: [Int]
    var sync_bn: Bool
    var step_seconds: Double
    var step_seconds_samples: [Double]
    var images_per_second: Double
    var gradient_bytes: Int
    var bucket_bytes: Int
    /// Median time of the step's gradient sums run alone, after backward.
    var allreduce_seconds: Double
    /// Median time a step waited for its sums after backward returned.
    var allreduce_exposed_seconds: Double
    /// 1 − exposed ÷ alone: the part of the communication backward hid.
    var allreduce_hidden_fraction: Double
    var peak_rss_bytes: Int

    func printSummary() {
        print("\(arch) \(stem) stem, training, global batch \(batch) over \(processes) processes × \(threads_per_process) threads, input \(input[0])×\(input[1])\(sync_bn ? ", sync BN" : "")")
        print(String(format: "step          %8.1f ms (median of %d)   %.2f images/s", step_seconds * 1000, step_seconds_samples.count, images_per_second))
        print(String(format: "allreduce     %8.1f ms alone for %.1f MB of gradients (buckets of %.1f MB)", allreduce_seconds * 1000,
                     Double(gradient_bytes) / 1e6, Double(bucket_bytes) / 1e6))
        print(String(format: "exposed       %8.1f ms per step: %.0f%% of the allreduce hidden behind backward", allreduce_exposed_seconds * 1000,
                     allreduce_hidden_fraction * 100))
        print(String(format: "peak RSS      %8.1f MiB (rank 0)", Double(peak_rss_bytes) / 1048576))
    }
}
