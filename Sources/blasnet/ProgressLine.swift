import BLASNet
import Foundation

/// Training feedback: on a terminal, one line per epoch rewritten in place as steps
/// finish; otherwise (a log file, a pipe) only the line that closes each epoch.
final class ProgressLine {
    let interactive: Bool
    private var lastDraw = 0.0

    init(interactive: Bool) {
        self.interactive = interactive
    }

    func update(epoch: Int, of epochs: Int, _ report: StepReport) {
        // A redraw per step would cost more than a tiny model's step; five a second is smooth.
        guard interactive, report.elapsedSeconds - lastDraw >= 0.2 || report.step == report.stepsPerEpoch else { return }
        lastDraw = report.elapsedSeconds
        let remaining = Double(report.stepsPerEpoch - report.step) * report.elapsedSeconds / Double(report.step)
        let line = String(format: "epoch %d/%d  step %d/%d  loss %.4f  acc %.2f%%  %.0f img/s  lr %.4g  ETA %@",
                          epoch, epochs, report.step, report.stepsPerEpoch, report.runningLoss, report.runningAccuracy * 100,
                          report.imagesPerSecond, Double(report.learningRate), Self.clock(remaining))
        Self.write("\r\u{1B}[K" + line)
    }

    /// A step skipped for a non-finite loss or gradient (`--skip-nonfinite`): always its own line.
    func skipped(epoch: Int, _ report: StepReport, location: String) {
        Self.write((interactive ? "\r\u{1B}[K" : "") + "epoch \(epoch) step \(report.step): skipped, not finite (first in \(location))\n")
    }

    func finish(_ e: EpochSummary, of epochs: Int, imagesPerSecond: Double) {
        lastDraw = 0
        let line = String(format: "epoch %d/%d  train loss %.4f acc %.2f%%  test loss %.4f acc %.2f%%  %.1f s  %.0f img/s  RSS %d MiB",
                          e.epoch, epochs, e.trainLoss, e.trainAccuracy * 100, e.testLoss, e.testAccuracy * 100, e.seconds,
                          imagesPerSecond, (e.residentBytes ?? 0) >> 20)
        Self.write((interactive ? "\r\u{1B}[K" : "") + line + "\n")
    }

    /// Unbuffered, so a log file sees each line when it happens.
    static func write(_ text: String) {
        FileHandle.standardOutput.write(Data(text.utf8))
    }

    private static func clock(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return String(format: "%d:%02d", s / 60, s % 60)
    }
}
