/// Label-set surgery for transfer experiments: keep some classes (renumbered), or a fixed
/// number of images per class.
extension ImageDataset {
    /// The images of `classes` only, relabelled `0..<classes.count` in the order given.
    public func selecting(classes: [Int]) throws -> ImageDataset {
        guard !classes.isEmpty, Set(classes).count == classes.count, classes.allSatisfy({ (0..<numClasses).contains($0) }) else {
            throw BLASNetError.invalidArgument("classes \(classes): expected distinct classes in 0..<\(numClasses)")
        }
        let newLabel = Dictionary(uniqueKeysWithValues: classes.enumerated().map { ($0.element, $0.offset) })
        let kept = subset(labels.indices.filter { newLabel[labels[$0]] != nil })
        return try ImageDataset(pixels: kept.pixels, labels: kept.labels.map { newLabel[$0]! }, channels: channels,
                                height: height, width: width, classNames: classes.map { classNames[$0] })
    }

    /// `perClass` images of every class, drawn without replacement by a seeded shuffle.
    public func sampling(perClass: Int, seed: UInt64) throws -> ImageDataset {
        var rng = SeededGenerator(seed: seed)
        var order = Array(0..<count)
        order.seededShuffle(using: &rng)
        var taken = [Int](repeating: 0, count: numClasses), chosen: [Int] = []
        for i in order where taken[labels[i]] < perClass {
            taken[labels[i]] += 1
            chosen.append(i)
        }
        if let short = taken.firstIndex(where: { $0 < perClass }) {
            throw BLASNetError.invalidArgument("class \(classNames[short]) has \(taken[short]) images, fewer than \(perClass)")
        }
        return subset(chosen.sorted())
    }
}
