import Foundation
import Synchronization

/// Ctrl-C (SIGINT) and SIGTERM (what Slurm and `kill` send) during training: the first
/// asks the run to stop after the current step and save a checkpoint; a second one
/// exits at once, which loses nothing saved because every file is written atomically.
enum Interruption {
    /// The signal received, or 0.
    private static let signalNumber = Atomic<Int32>(0)

    static func install() {
        // A parent may start us with these signals blocked (Foundation's Process does),
        // and the mask survives exec: they would never arrive.
        var signals = sigset_t()
        sigemptyset(&signals)
        for s in [SIGINT, SIGTERM] {
            sigaddset(&signals, s)
            signal(s) { received in
                // Only async-signal-safe work here: one atomic exchange, and _exit.
                if Interruption.signalNumber.exchange(received, ordering: .relaxed) != 0 { _exit(128 + received) }
            }
        }
        pthread_sigmask(SIG_UNBLOCK, &signals, nil)
    }

    /// The signal that asked the run to stop, if one did.
    static var received: Int32? {
        let s = signalNumber.load(ordering: .relaxed)
        return s == 0 ? nil : s
    }
}
