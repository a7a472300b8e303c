import Foundation

/// The per-epoch record of a run as files a person reads: `metrics.csv` and `curves.svg`.
public enum TrainingCurves {
    /// One row per epoch; accuracies as fractions, `rss_bytes` empty where not measured.
    public static func csv(_ history: [EpochSummary]) -> String {
        "epoch,train_loss,train_accuracy,test_loss,test_accuracy,seconds,learning_rate,rss_bytes\n"
            + history.map { e in
                "\(e.epoch),\(e.trainLoss),\(e.trainAccuracy),\(e.testLoss),\(e.testAccuracy),"
                    + String(format: "%.3f", e.seconds) + ",\(e.learningRate),\(e.residentBytes.map(String.init) ?? "")\n"
            }.joined()
    }

    /// Two side-by-side charts, loss and accuracy per epoch, train and test, as a standalone SVG.
    public static func svg(_ history: [EpochSummary], title: String) -> String {
        let (panelWidth, panelHeight, margin) = (420.0, 300.0, 50.0)
        let epochs = history.map { Double($0.epoch) }
        let maxEpoch = max(epochs.max() ?? 1, 1)
        let losses = history.flatMap { [$0.trainLoss, $0.testLoss] }.filter(\.isFinite)
        let maxLoss = max(losses.max() ?? 1, 1e-6) * 1.05
        let accuracies = history.flatMap { [$0.trainAccuracy, $0.testAccuracy] }
        // At most 0.95, so that a run at 100% accuracy still has a range to draw in.
        let minAccuracy = min(0.95, max(0, ((accuracies.min() ?? 0) * 20).rounded(.down) / 20))

        func panel(_ index: Int, _ label: String, range: ClosedRange<Double>, series: [(String, String, [Double])],
                   format: (Double) -> String) -> String {
            let x0 = margin + Double(index) * (panelWidth + margin)
            func point(_ epoch: Double, _ value: Double) -> (x: String, y: String) {
                let x = x0 + (epoch - 1) / max(maxEpoch - 1, 1) * panelWidth
                let y = margin + (1 - (value - range.lowerBound) / (range.upperBound - range.lowerBound)) * panelHeight
                return (String(format: "%.1f", x), String(format: "%.1f", y))
            }
            var out = "<text x=\"\(x0 + panelWidth / 2)\" y=\"\(margin - 12)\" text-anchor=\"middle\" font-weight=\"bold\">\(label)</text>\n"
            out += "<rect x=\"\(x0)\" y=\"\(margin)\" width=\"\(panelWidth)\" height=\"\(panelHeight)\" fill=\"none\" stroke=\"#999\"/>\n"
            for tick in 0...4 {
                let value = range.lowerBound + Double(tick) / 4 * (range.upperBound - range.lowerBound)
                let y = margin + (1 - Double(tick) / 4) * panelHeight
                out += "<line x1=\"\(x0)\" y1=\"\(y)\" x2=\"\(x0 + panelWidth)\" y2=\"\(y)\" stroke=\"#eee\"/>"
                out += "<text x=\"\(x0 - 6)\" y=\"\(y + 4)\" text-anchor=\"end\" font-size=\"11\">\(format(value))</text>\n"
            }
            for epoch in Set(history.map(\.epoch)).sorted() where history.count <= 20 || epoch % max(history.count / 10, 1) == 0 {
                let x = x0 + (Double(epoch) - 1) / max(maxEpoch - 1, 1) * panelWidth
                out += "<text x=\"\(x)\" y=\"\(margin + panelHeight + 16)\" text-anchor=\"middle\" font-size=\"11\">\(epoch)</text>\n"
            }
            out += "<text x=\"\(x0 + panelWidth / 2)\" y=\"\(margin + panelHeight + 34)\" text-anchor=\"middle\" font-size=\"12\">epoch</text>\n"
            for (i, (name, colour, values)) in series.enumerated() {
                let points = zip(epochs, values).filter { $0.1.isFinite }.map { point($0.0, $0.1) }
                let polyline = points.map { "\($0.x),\($0.y)" }.joined(separator: " ")
                out += "<polyline fill=\"none\" stroke=\"\(colour)\" stroke-width=\"2\" points=\"\(polyline)\"/>\n"
                out += points.map { "<circle cx=\"\($0.x)\" cy=\"\($0.y)\" r=\"3\" fill=\"\(colour)\"/>" }.joined() + "\n"
                let ly = margin + 16 + Double(i) * 16
                out += "<line x1=\"\(x0 + panelWidth - 110)\" y1=\"\(ly - 4)\" x2=\"\(x0 + panelWidth - 90)\" y2=\"\(ly - 4)\" stroke=\"\(colour)\" stroke-width=\"2\"/>"
                out += "<text x=\"\(x0 + panelWidth - 84)\" y=\"\(ly)\" font-size=\"12\">\(name)</text>\n"
            }
            return out
        }

        let width = 2 * panelWidth + 3 * margin
        let height = panelHeight + 2 * margin + 20
        return """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="sans-serif">
            <title>\(escaped(title))</title>
            <rect width="100%" height="100%" fill="white"/>
            \(panel(0, "loss — \(escaped(title))", range: 0...maxLoss,
                    series: [("train", "#1f77b4", history.map(\.trainLoss)), ("test", "#d62728", history.map(\.testLoss))],
                    format: { String(format: "%.2f", $0) }))\
            \(panel(1, "accuracy", range: minAccuracy...1,
                    series: [("train", "#1f77b4", history.map(\.trainAccuracy)), ("test", "#d62728", history.map(\.testAccuracy))],
                    format: { String(format: "%.0f%%", $0 * 100) }))\
            </svg>

            """
    }

    private static func escaped(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;")
    }
}
