import Foundation

/// The threads behind ``Kernels/parallelFor(_:grain:workers:_:)``: started once, then
/// parked on a condition variable between calls. A step makes thousands of parallel
/// calls, and `DispatchQueue.concurrentPerform` allocates on every one of them; handing a
/// stack closure to threads that already exist allocates nothing.
///
/// The calling thread takes tasks too, so `n` tasks need `n − 1` pool threads. A call
/// made while the pool is busy (from inside a task, or from a second thread running a
/// model of its own) runs its tasks serially on its own thread rather than waiting.
///
/// `@unchecked Sendable`: every field is read and written with `mutex` held, a pthread
/// mutex that ThreadSanitizer follows.
final class WorkerPool: @unchecked Sendable {
    static let shared = WorkerPool()

    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    /// Signalled when a call publishes tasks, and when the last task of a call finishes.
    private let published = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let finished = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var task: ((Int) -> Void)?
    private var taskCount = 0
    private var nextTask = 0
    private var unfinished = 0
    /// Counts calls, so a parked thread can tell a new one from a spurious wake-up.
    private var generation = 0
    private var threads = 0
    private var busy = false

    private init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(published, nil)
        pthread_cond_init(finished, nil)
    }

    /// Runs `body(i)` for every `i` in `0..<count`, in parallel, and returns when all are done.
    func run(_ count: Int, _ body: (Int) -> Void) {
        pthread_mutex_lock(mutex)
        if busy || count < 2 {
            pthread_mutex_unlock(mutex)
            for i in 0..<count { body(i) }
            return
        }
        busy = true
        while threads < count - 1 {
            threads += 1
            let thread = Thread { [self] in park() }
            thread.name = "BLASNet worker \(threads)"
            thread.start()
        }
        withoutActuallyEscaping(body) { body in
            (task, taskCount, nextTask, unfinished) = (body, count, 0, count)
            generation += 1
            pthread_cond_broadcast(published)
            pthread_mutex_unlock(mutex)
            work()
            pthread_mutex_lock(mutex)
            while unfinished > 0 { pthread_cond_wait(finished, mutex) }
            // The closure must not outlive this block: no thread holds it any more.
            task = nil
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
            pthread_mutex_lock(mutex)
        }
    }

    /// Takes and runs the current call's tasks until none is left.
    private func work() {
        while runNextTask() {
            pthread_mutex_lock(mutex)
            unfinished -= 1
            if unfinished == 0 { pthread_cond_signal(finished) }
            pthread_mutex_unlock(mutex)
        }
    }

    /// Runs one task of the current call, if one is left. A separate function so that its
    /// reference to the closure ends before the task is counted finished.
    @inline(never)
    private func runNextTask() -> Bool {
        pthread_mutex_lock(mutex)
        guard nextTask < taskCount, let task else {
            pthread_mutex_unlock(mutex)
            return false
        }
        let i = nextTask
        nextTask += 1
        pthread_mutex_unlock(mutex)
        task(i)
        return true
    }
}
