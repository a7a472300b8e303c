import Foundation

/// The batches of one epoch of a ``DataLoader``, in order.
///
/// Each iterator starts a thread that prepares the batches ahead of the consumer, at
/// most ``DataLoader/prefetch`` waiting at a time. An iterator dropped before the end
/// (a `break` out of a `for` loop) stops its thread.
public struct BatchSequence: Sequence, Sendable {
    let loader: DataLoader
    let epoch: Int
    /// Numbers of the batches within the epoch.
    let batches: Range<Int>

    public var underestimatedCount: Int { batches.count }

    public func makeIterator() -> Iterator { Iterator(self) }

    public struct Iterator: IteratorProtocol {
        private let subscription: Subscription

        init(_ sequence: BatchSequence) {
            let queue = PrefetchQueue(capacity: sequence.loader.prefetch)
            let (loader, epoch, batches) = (sequence.loader, sequence.epoch, sequence.batches)
            // The thread holds the queue, not the subscription, so that dropping the
            // last iterator is what cancels it.
            let producer = Thread {
                let order = loader.order(epoch: epoch)
                for b in batches {
                    guard queue.put(loader.makeBatch(b, epoch: epoch, order: order)) else { return }
                }
                queue.finish()
            }
            producer.name = "BLASNet data loader"
            producer.start()
            subscription = Subscription(queue: queue)
        }

        /// The next batch, waiting for the producer if it is behind; nil after the last.
        public mutating func next() -> Batch? { subscription.queue.take() }
    }
}

/// The consumer's hold on a producer thread: when the last iterator sharing it goes
/// away, the producer is told to stop.
private final class Subscription {
    let queue: PrefetchQueue

    init(queue: PrefetchQueue) { self.queue = queue }

    deinit { queue.cancel() }
}

/// A bounded first-in-first-out hand-over of batches from one producer thread to one
/// consumer.
///
/// `@unchecked Sendable`: its mutable state is read and written only with `condition`
/// locked, which the compiler cannot see.
final class PrefetchQueue: @unchecked Sendable {
    private let condition = NSCondition()
    private let capacity: Int
    /// Prepared batches, oldest first; never more than `capacity`, so removing the
    /// first is cheap.
    private var batches: [Batch] = []
    private var finished = false, cancelled = false

    init(capacity: Int) { self.capacity = capacity }

    /// Waits for room and appends `batch`; false if the consumer has gone away, when
    /// the producer should stop.
    func put(_ batch: Batch) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        while batches.count >= capacity && !cancelled { condition.wait() }
        guard !cancelled else { return false }
        batches.append(batch)
        condition.broadcast()
        return true
    }

    /// The producer has put its last batch.
    func finish() {
        condition.lock()
        defer { condition.unlock() }
        finished = true
        condition.broadcast()
    }

    /// The oldest batch, waiting for one if none is ready; nil once the producer has
    /// finished and every batch was taken.
    func take() -> Batch? {
        condition.lock()
        defer { condition.unlock() }
        while batches.isEmpty && !finished { condition.wait() }
        guard !batches.isEmpty else { return nil }
        condition.broadcast()
        return batches.removeFirst()
    }

    /// The consumer has gone away: wake the producer so it stops, and free the batches
    /// it prepared.
    func cancel() {
        condition.lock()
        defer { condition.unlock() }
        cancelled = true
        batches.removeAll()
        condition.broadcast()
    }
}
