import Foundation
import Synchronization

/// The threads behind ``Kernels/parallelFor(_:grain:workers:_:_:)``: started once; between
/// calls they watch for the next one a short while (``spinNanoseconds``), then sleep on a
/// condition variable. A step makes thousands of parallel
/// calls, and `DispatchQueue.concurrentPerform` allocates on every one of them; handing
/// a call to threads that already exist allocates nothing.
///
/// Nothing, because a call reaches the threads as a pointer to a ``Job`` on the caller's
/// stack and the job's metatype (a word and a witness table), never as a closure: Swift
/// cannot hand a non-escaping closure to another thread without boxing it
/// (`withoutActuallyEscaping` allocates its context on every call), and an escaping closure
/// that captures anything is heap-allocated. The job's `body` captures nothing (its state
/// travels in `captures`), so it has no context to allocate.
///
/// The calling thread takes tasks too, so `n` tasks need `n − 1` pool threads. A call
/// made while the pool is busy (from inside a task, or from a second thread running a
/// model of its own) runs its tasks serially on its own thread rather than waiting.
///
/// `@unchecked Sendable`: every field is read and written with `mutex` held, a pthread
/// mutex that ThreadSanitizer follows, except the two atomics that spinning threads poll.
final class WorkerPool: @unchecked Sendable {
    static let shared = WorkerPool()

    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    /// Signalled when a call publishes tasks, and when the last task of a call finishes.
    private let published = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let finished = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    /// The current call's job, on its caller's stack, and the type that runs its tasks.
    private var job: UnsafeRawPointer?
    private var jobType: (any ErasedJob.Type)?
    private var taskCount = 0
    private var nextTask = 0
    private var unfinished = 0
    /// Counts calls, so a parked thread can tell a new one from a spurious wake-up.
    private var generation = 0
    private var threads = 0
    private var busy = false
    /// Mirrors of `generation` and `unfinished`, read without the mutex while spinning.
    private let publishedGeneration = Atomic<Int>(0)
    private let unfinishedTasks = Atomic<Int>(0)

    /// How long a thread that runs out of work watches for more before it sleeps on a
    /// condition variable. A step makes thousands of parallel calls a few hundred
    /// microseconds apart, and waking a parked thread (a futex, on a VM an interrupt to a
    /// halted virtual CPU) took long and varied with the host's load. Spinning this long
    /// made training steps 2–7% shorter on the 2-core VM in same-run alternations
    /// (SE-ResNet-18 cifar 1,401 → 1,304, 1,427 → 1,349 and 1,413 → 1,338 ms; ResNet-50
    /// 2,295 → 2,205 and 2,165 → 2,118 ms); inference was unchanged within the noise.
    /// OpenMP runtimes, oneDNN's under PyTorch among them, spin likewise, and longer.
    static let spinNanoseconds: UInt64 = 50_000

    /// Spins until `done()` or ``spinNanoseconds`` pass; the caller then checks under the mutex.
    @inline(__always)
    private static func spin(until done: () -> Bool) {
        let deadline = DispatchTime.now().uptimeNanoseconds + spinNanoseconds
        var polls = 0
        while !done() {
            polls += 1
            // The clock costs about as much as 100 polls; read it once every 128.
            if polls & 127 == 0, DispatchTime.now().uptimeNanoseconds >= deadline { return }
        }
    }

    private init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(published, nil)
        pthread_cond_init(finished, nil)
    }

    /// Splits `0..<count` into `workers` contiguous ranges and runs `body(range, captures)`
    /// on each, in parallel; returns when all are done. `body` must capture nothing, as in
    /// ``Kernels/parallelFor(_:grain:workers:_:_:)``.
    func run<Captures>(_ count: Int, workers: Int, _ captures: Captures,
                       _ body: @escaping (Range<Int>, Captures) -> Void) {
        let job = Job(count: count, workers: workers, captures: captures, body: body)
        pthread_mutex_lock(mutex)
        if busy || workers < 2 {
            pthread_mutex_unlock(mutex)
            for w in 0..<workers { job.run(w) }
            return
        }
        busy = true
        while threads < workers - 1 {
            threads += 1
            let thread = Thread { [self] in park() }
            thread.name = "BLASNet worker \(threads)"
            thread.start()
        }
        withUnsafePointer(to: job) { job in
            (self.job, jobType, taskCount, nextTask, unfinished) = (UnsafeRawPointer(job), Job<Captures>.self, workers, 0, workers)
            generation += 1
            publishedGeneration.store(generation, ordering: .releasing)
            unfinishedTasks.store(workers, ordering: .releasing)
            pthread_cond_broadcast(published)
            pthread_mutex_unlock(mutex)
            work()
            Self.spin { unfinishedTasks.load(ordering: .acquiring) == 0 }
            pthread_mutex_lock(mutex)
            while unfinished > 0 { pthread_cond_wait(finished, mutex) }
            // The pointer must not outlive this block: no thread holds it any more.
            (self.job, jobType) = (nil, nil)
        }
        busy = false
        pthread_mutex_unlock(mutex)
    }

    /// A pool thread's life: wait for a call, take its tasks, wait again.
    private func park() {
        var seen = 0
        pthread_mutex_lock(mutex)
        while true {
            while generation == seen { pthread_cond_wait(published, mutex) }
            seen = generation
            pthread_mutex_unlock(mutex)
            work()
            Self.spin { publishedGeneration.load(ordering: .acquiring) != seen }
            pthread_mutex_lock(mutex)
        }
    }

    /// Takes and runs the current call's tasks until none is left.
    private func work() {
        while runNextTask() {
            pthread_mutex_lock(mutex)
            unfinished -= 1
            unfinishedTasks.store(unfinished, ordering: .releasing)
            if unfinished == 0 { pthread_cond_signal(finished) }
            pthread_mutex_unlock(mutex)
        }
    }

    /// Runs one task of the current call, if one is left. A separate function so that its
    /// use of the job's pointer ends before the task is counted finished.
    @inline(never)
    private func runNextTask() -> Bool {
        pthread_mutex_lock(mutex)
        guard nextTask < taskCount, let job, let jobType else {
            pthread_mutex_unlock(mutex)
            return false
        }
        let i = nextTask
        nextTask += 1
        pthread_mutex_unlock(mutex)
        jobType.run(job, i)
        return true
    }
}

/// A job with its type erased, so the pool's fields can hold any: the metatype of a
/// ``Job`` runs task `task` of the job `job` points to.
private protocol ErasedJob {
    static func run(_ job: UnsafeRawPointer, _ task: Int)
}

/// One call of ``WorkerPool/run(_:workers:_:_:)``: task `w` is `body` on the `w`-th of
/// `workers` contiguous ranges of `0..<count`.
private struct Job<Captures>: ErasedJob {
    let count: Int, workers: Int
    let captures: Captures
    let body: (Range<Int>, Captures) -> Void

    func run(_ w: Int) {
        body((count * w / workers)..<(count * (w + 1) / workers), captures)
    }

    static func run(_ job: UnsafeRawPointer, _ task: Int) {
        job.assumingMemoryBound(to: Job.self).pointee.run(task)
    }
}
