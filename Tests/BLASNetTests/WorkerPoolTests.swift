import Foundation
import Synchronization
import Testing
@testable import BLASNet

/// The worker threads behind `Kernels.parallelFor`.
struct WorkerPoolTests {
    /// The worker ranges cover every index exactly once, for any worker count, also when
    /// the workers do not divide the count.
    @Test(arguments: [1, 2, 3, 5])
    func everyIndexRunsOnce(workers: Int) {
        let count = 2 * workers + 1
        let runs = UnsafeMutablePointer<Int>.allocate(capacity: count)
        defer { runs.deallocate() }
        runs.initialize(repeating: 0, count: count)
        for _ in 0..<50 {
            WorkerPool.shared.run(count, workers: workers, runs) { range, runs in
                for i in range { runs[i] += 1 }
            }
        }
        #expect((0..<count).allSatisfy { runs[$0] == 50 })
    }

    /// A call from inside a task (the pool is busy) runs serially instead of deadlocking.
    @Test func nestedCallsRunSerially() {
        let sums = UnsafeMutablePointer<Int>.allocate(capacity: 2)
        defer { sums.deallocate() }
        sums.initialize(repeating: 0, count: 2)
        WorkerPool.shared.run(2, workers: 2, sums) { outer, sums in
            for o in outer {
                WorkerPool.shared.run(3, workers: 3, (sums, o)) { inner, captures in
                    let (sums, o) = captures
                    for i in inner { sums[o] += i + 1 }
                }
            }
        }
        #expect(sums[0] == 6 && sums[1] == 6)
    }

    /// Two threads calling at once both finish with every task run: one gets the pool,
    /// the other runs its tasks itself.
    @Test func concurrentCallersBothFinish() {
        final class Total: Sendable { let value = Atomic<Int>(0) }
        let total = Total()
        DispatchQueue.concurrentPerform(iterations: 2) { _ in
            for _ in 0..<200 {
                WorkerPool.shared.run(2, workers: 2, total) { range, total in
                    for i in range { total.value.add(i + 1, ordering: .relaxed) }
                }
            }
        }
        #expect(total.value.load(ordering: .relaxed) == 2 * 200 * 3)
    }
}
