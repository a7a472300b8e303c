import Foundation
import Testing
@testable import BLASNet

/// `mpirun -np 2 blasnet train --distributed` on this machine: the same global batch split
/// over two processes trains to the weights of one process, and a dead rank ends the job.
extension TrainCommandTests {
    /// `blasnet` under `mpirun` with `processes` ranks, all on this machine.
    func mpirun(_ processes: Int, _ arguments: [String], faultInLastRank fault: String? = nil) throws
        -> (status: Int32, stdout: String, stderr: String) {
        // Open MPI refuses root unless told; CI runs as root.
        var launch = (getuid() == 0 ? ["--allow-run-as-root"] : []) + ["--oversubscribe"]
        let command = [RunCommandTests.executable.path] + arguments
        if let fault {
            launch += ["-np", String(processes - 1)] + command + [":", "-np", "1", "-x", "BLASNET_FAULT_INJECTION=\(fault)"] + command
        } else {
            launch += ["-np", String(processes)] + command
        }
        // Not /usr/bin/mpirun: an alternatives link that may lead to MPICH, which knows neither flag above.
        return try RunCommandTests.run(launch, program: URL(fileURLWithPath: "/usr/bin/mpirun.openmpi"))
    }

    func distributedTrain(_ extra: [String], faultInLastRank fault: String? = nil) throws -> (status: Int32, stdout: String, stderr: String) {
        try mpirun(2, ["train", "--distributed", "--data", data, "--arch", "resnet8", "--width", "4", "--batch-size", "16",
                       "--lr", "0.05", "--schedule", "constant", "--threads", "1"] + extra, faultInLastRank: fault)
    }

    /// Largest difference between the two checkpoints' model tensors, relative to each
    /// tensor's largest value; NaN when any value is NaN, so that no comparison with it passes.
    func largestRelativeDifference(_ a: String, _ b: String) throws -> Float {
        let (x, y) = (try modelTensors(a), try modelTensors(b))
        #expect(Set(x.keys) == Set(y.keys))
        return x.keys.map { key -> Float in
            let (p, q) = (x[key]!.floats().scalars, y[key]!.floats().scalars)
            let scale = nanMax(p.map(abs).maxOrNaN() ?? 0, 1e-12)
            return zip(p, q).map { abs($0 - $1) }.maxOrNaN().map { $0 / scale } ?? 0
        }.maxOrNaN() ?? 0
    }

    @Test func twoRanksWithSyncBatchNormTrainLikeOneProcess() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let single = try uninterrupted(epochs: 2)
        let halves = dir.appendingPathComponent("two-ranks").path
        // One epoch, then a resumed one: rank 0's checkpoint reaches rank 1 by broadcast.
        let first = try distributedTrain(["--sync-bn", "--epochs", "1", "--out", halves])
        #expect(first.status == 0, "\(first.stderr)")
        let second = try distributedTrain(["--sync-bn", "--epochs", "2", "--resume", halves])
        #expect(second.status == 0, "\(second.stderr)")
        #expect(second.stdout.contains("in each of 2 MPI processes"), "\(second.stdout)")
        // Twelve steps apart only by the order of float32 sums.
        let difference = try largestRelativeDifference(single + "/last.safetensors", halves + "/last.safetensors")
        #expect(difference < 1e-5, "\(difference)")

        // Without synchronized statistics each rank normalizes its own half batch: another model.
        let local = dir.appendingPathComponent("local-bn").path
        let unsynchronized = try distributedTrain(["--epochs", "2", "--out", local])
        #expect(unsynchronized.status == 0, "\(unsynchronized.stderr)")
        #expect(try largestRelativeDifference(single + "/last.safetensors", local + "/last.safetensors") > 1e-3)
        // Each rank kept running statistics of its own shard; the reported test figures
        // are still those of the saved model, with rank 0's.
        let reported = try #require(unsynchronized.stdout.firstMatch(of: /epoch 2\/2 .* test loss ([0-9.]+) acc ([0-9.]+)%/))
        let evaluation = try RunCommandTests.run(["eval", "--weights", local + "/last.safetensors", "--data", data, "--threads", "1"])
        let scored = try #require(evaluation.stdout.firstMatch(of: /accuracy ([0-9.]+)%, loss ([0-9.]+)/), "\(evaluation.stderr)")
        #expect((reported.1, reported.2) == (scored.2, scored.1))
    }

    /// Step 6 is epoch 1's last, so a SIGINT to one rank there is past the in-epoch check's
    /// reach: only the end-of-epoch one, summed over the ranks, sees it, and both ranks
    /// must stop there together instead of the other going on alone into epoch 2.
    @Test func aSignalToOneRankStopsEveryRankAtTheEpochsEnd() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("one-signal").path
        let run = try distributedTrain(["--epochs", "1000", "--out", out], faultInLastRank: "interrupt-in-step:6")
        #expect(run.status == 128 + SIGINT, "\(run.stderr)")
        // Only rank 0 prints, and it got no signal itself: it stopped on rank 1's.
        #expect(run.stdout.contains("interrupted at the end of epoch 1;"), "\(run.stdout)")
        #expect(try TrainingCheckpoint(contentsOf: out + "/last.safetensors").completedEpochs == 1)
    }

    @Test func aKilledRankEndsTheJobWithinSeconds() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("dead-rank").path
        let start = Date()
        let run = try distributedTrain(["--epochs", "1000", "--out", out], faultInLastRank: "kill-in-step:8")
        let seconds = Date().timeIntervalSince(start)
        #expect(run.status != 0)
        #expect(seconds < 30, "the job took \(seconds) s to end")
        // Rank 0 wrote epoch 1's checkpoint before rank 1 died in epoch 2; it stays whole.
        #expect(try TrainingCheckpoint(contentsOf: out + "/last.safetensors").completedEpochs == 1)
    }
}
