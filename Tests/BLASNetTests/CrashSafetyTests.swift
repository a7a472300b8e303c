import Foundation
import Testing
@testable import BLASNet

/// A run killed, interrupted or hit by a non-finite step loses nothing: it resumes to the
/// weights of an uninterrupted run, and a bad step never reaches the last checkpoint.
/// Faults land at exact places through `BLASNET_FAULT_INJECTION` (see `FaultInjection`).
extension TrainCommandTests {
    /// 96 images in batches of 16: six steps an epoch, so step 8 is inside epoch 2.
    func uninterrupted(epochs: Int) throws -> String {
        let out = dir.appendingPathComponent("whole").path
        let run = try train(["--epochs", String(epochs), "--out", out])
        #expect(run.status == 0, "\(run.stderr)")
        return out
    }

    func resume(_ out: String, epochs: Int) throws {
        let resumed = try RunCommandTests.run(["train", "--resume", out, "--epochs", String(epochs), "--threads", "1", "--data", data])
        #expect(resumed.status == 0, "\(resumed.stderr)")
    }

    func trainLosses(_ out: String) throws -> [Substring] {
        try String(contentsOfFile: out + "/metrics.csv", encoding: .utf8).split(separator: "\n").dropFirst()
            .map { $0.split(separator: ",")[1] }
    }

    @Test func sigkillInsideAnEpochResumesToTheUninterruptedWeights() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let whole = try uninterrupted(epochs: 3)
        let out = dir.appendingPathComponent("killed").path
        let killed = try train(["--epochs", "3", "--out", out], environment: ["BLASNET_FAULT_INJECTION": "kill-in-step:8"])
        #expect(killed.status == 128 + SIGKILL)
        #expect(try TrainingCheckpoint(contentsOf: out + "/last.safetensors").completedEpochs == 1)
        try resume(out, epochs: 3)
        #expect(try modelTensors(out + "/last.safetensors") == (try modelTensors(whole + "/last.safetensors")))
        #expect(try trainLosses(out) == (try trainLosses(whole)))
    }

    @Test func sigkillWhileACheckpointIsWrittenLeavesThePreviousOneWhole() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let whole = try uninterrupted(epochs: 3)
        let out = dir.appendingPathComponent("torn").path
        // Epoch 1 writes best, last, metrics.csv and curves.svg; write 5 is epoch 2's first
        // checkpoint: best.safetensors if the epoch does better, else last.safetensors.
        let killed = try train(["--epochs", "3", "--out", out], environment: ["BLASNET_FAULT_INJECTION": "kill-in-write:5"])
        #expect(killed.status == 128 + SIGKILL)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: out).filter { $0.contains(".safetensors.blasnet-tmp.") }
        #expect(leftovers.count == 1, "\(leftovers)")
        #expect(try TrainingCheckpoint(contentsOf: out + "/last.safetensors").completedEpochs == 1)
        try resume(out, epochs: 3)
        #expect(try FileManager.default.contentsOfDirectory(atPath: out).allSatisfy { !$0.contains(".blasnet-tmp.") })
        #expect(try modelTensors(out + "/last.safetensors") == (try modelTensors(whole + "/last.safetensors")))
    }

    /// An epoch that does best writes best.safetensors before last.safetensors: killed
    /// between the two, the run cannot leave a last checkpoint that counts an epoch as the
    /// best one while best.safetensors lacks its weights.
    @Test func sigkillBetweenTheTwoCheckpointsLeavesBestWhole() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("between").path
        // The first epoch writes best, last, metrics.csv and curves.svg: write 2 is last.
        let killed = try train(["--epochs", "1", "--out", out], environment: ["BLASNET_FAULT_INJECTION": "kill-in-write:2"])
        #expect(killed.status == 128 + SIGKILL)
        #expect(try TrainingCheckpoint(contentsOf: out + "/best.safetensors").completedEpochs == 1)
        #expect(!FileManager.default.fileExists(atPath: out + "/last.safetensors"))

        // A new run there would mix its files with this one's: refused, and with
        // --overwrite the earlier files go before the new run's first step.
        let refused = try train(["--epochs", "1", "--out", out])
        #expect(refused.status != 0)
        #expect(refused.stderr.contains(out + "/best.safetensors exists"), "\(refused.stderr)")
        let replacing = try train(["--epochs", "1", "--out", out, "--overwrite"], environment: ["BLASNET_FAULT_INJECTION": "kill-in-step:1"])
        #expect(replacing.status == 128 + SIGKILL)
        let left = try FileManager.default.contentsOfDirectory(atPath: out)
        #expect(left.allSatisfy { $0.hasPrefix(".") }, "\(left)")
    }

    @Test func ctrlCInsideAnEpochSavesThereAndResumesExactly() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let whole = try uninterrupted(epochs: 3)
        let out = dir.appendingPathComponent("interrupted").path
        let stopped = try train(["--epochs", "3", "--out", out], environment: ["BLASNET_FAULT_INJECTION": "interrupt-in-step:8"])
        #expect(stopped.status == 128 + SIGINT, "\(stopped.stderr)")
        #expect(stopped.stdout.contains("interrupted at epoch 2, step 2/6"), "\(stopped.stdout)")
        #expect(stopped.stdout.contains("--resume \(out)"))
        let checkpoint = try TrainingCheckpoint(contentsOf: out + "/last.safetensors")
        #expect(checkpoint.completedEpochs == 1)
        #expect(checkpoint.epochProgress?.steps == 2)
        #expect(checkpoint.optimizerSteps == 8)
        // Steps inside the epoch count batches of 16: another size would index other images.
        let resized = try RunCommandTests.run(["train", "--resume", out, "--epochs", "3", "--batch-size", "32", "--data", data])
        #expect(resized.status != 0)
        #expect(resized.stderr.contains("--batch-size 32 differs"), "\(resized.stderr)")
        try resume(out, epochs: 3)
        #expect(try modelTensors(out + "/last.safetensors") == (try modelTensors(whole + "/last.safetensors")))
        // The resumed epoch's figures count the steps before the interruption too.
        #expect(try trainLosses(out) == (try trainLosses(whole)))
    }

    @Test func aRealSigintStopsTheRunWithAResumableCheckpoint() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("ctrl-c").path
        let process = Process()
        process.executableURL = RunCommandTests.executable
        process.arguments = ["train", "--data", data, "--arch", "resnet8", "--width", "4", "--batch-size", "16",
                             "--lr", "0.05", "--schedule", "constant", "--threads", "1", "--epochs", "1000", "--out", out]
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(60)
        while !FileManager.default.fileExists(atPath: out + "/last.safetensors"), Date() < deadline { usleep(20_000) }
        process.interrupt()
        process.waitUntilExit()
        #expect(process.terminationReason == .exit && process.terminationStatus == 128 + SIGINT)
        let checkpoint = try TrainingCheckpoint(contentsOf: out + "/last.safetensors")
        #expect((checkpoint.completedEpochs ?? 0) >= 1)
        #expect((checkpoint.completedEpochs ?? 0) < 1000)
    }

    @Test func aNonFiniteStepStopsTrainingAndLeavesTheCheckpointAlone() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = try uninterrupted(epochs: 1)
        let before = try Data(contentsOf: URL(fileURLWithPath: out + "/last.safetensors"))
        // A learning rate of 1e30 makes the first update's weights overflow the next forward pass.
        let diverged = try RunCommandTests.run(["train", "--resume", out, "--epochs", "2", "--lr", "1e30", "--threads", "1", "--data", data])
        #expect(diverged.status != 0)
        #expect(diverged.stderr.contains("epoch 2, step 2: the loss or a gradient is not finite, first in layer1.0.conv1 (forward output)"),
                "\(diverged.stderr)")
        #expect(diverged.stderr.contains("untouched"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: out + "/last.safetensors")) == before)

        let skipping = try RunCommandTests.run(["train", "--resume", out, "--epochs", "2", "--lr", "1e30", "--threads", "1",
                                                "--data", data, "--skip-nonfinite"])
        #expect(skipping.status == 0, "\(skipping.stderr)")
        #expect(skipping.stdout.contains("skipped 5 steps with non-finite values this epoch"), "\(skipping.stdout)")
        #expect(try TrainingCheckpoint(contentsOf: out + "/last.safetensors").metadata["skipped_steps"] == "5")
    }

    @Test func residentMemoryStaysFlatOverAThousandSteps() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("soak").path
        // Batches of 8: twelve steps an epoch, each epoch evaluated and checkpointed; 84 epochs pass 1,000 steps.
        let run = try RunCommandTests.run(["train", "--data", data, "--arch", "resnet8", "--width", "4", "--batch-size", "8",
                                           "--lr", "0.05", "--schedule", "constant", "--threads", "2", "--epochs", "84",
                                           "--out", out])
        #expect(run.status == 0, "\(run.stderr)")
        let rss = try String(contentsOfFile: out + "/metrics.csv", encoding: .utf8).split(separator: "\n").dropFirst()
            .map { Int($0.split(separator: ",").last!)! }
        #expect(rss.count == 84)
        // After ten epochs of warm-up the process holds what it needs; later epochs add nothing.
        let growth = rss.last! - rss[9]
        #expect(growth < 1 << 20, "RSS after epoch 10: \(rss[9]) bytes, after epoch 84: \(rss.last!) (\(rss))")
    }
}
