// The one way the agent wakes a thread of its own that sleeps in poll(2): the executor loop, the udev
// monitor, the control socket and the guest channels.

internal import CThreads
import Synchronization
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// An eventfd that a thread sleeping in `poll(2)` watches next to its own descriptors, plus the one fact
/// the counter cannot tell: whether the wake-up means "stop".
///
/// ``nudge()`` says "look again" (a job queued, an answer ready to send), ``shutdown()`` says "stop" and
/// stays said. The sleeper polls ``descriptor`` for `POLLIN` and, once it is readable, calls ``drain()``,
/// which resets it and answers whether to go on.
///
/// A class so the descriptor is closed by `deinit`, when the last holder is gone: a stream's
/// `onTermination` may signal from any thread at any time, and an explicit `close()` could race with
/// that and write into a reused descriptor number.
package final class Wakeup: Sendable {
    /// For the sleeper's `pollfd`: readable from a nudge or a shutdown until drained.
    package let descriptor: CInt
    private let stopping = Atomic<Bool>(false)

    package init() throws(Errno) {
        let fd = eventfd(0, CThreads_eventfd_cloexec_nonblock())
        guard fd >= 0 else { throw Errno(rawValue: errno) }
        descriptor = fd
    }

    deinit {
        _ = close(descriptor)
    }

    /// Safe from any thread; never blocks. `EAGAIN` (the counter is full) wakes the sleeper as well.
    package func nudge() {
        while eventfd_write(descriptor, 1) < 0, errno == EINTR {}
    }

    /// Idempotent and safe from any thread: the sleeper wakes, and every later ``drain()`` says stop.
    package func shutdown() {
        stopping.store(true, ordering: .sequentiallyConsistent)
        nudge()
    }

    /// Whether ``shutdown()`` has been called: a look that costs no system call, for a thread busy with a
    /// flood of work between two polls.
    package var isShutDown: Bool { stopping.load(ordering: .sequentiallyConsistent) }

    /// For the sleeper, when ``descriptor`` is readable: resets it. `false` once shut down.
    package func drain() -> Bool {
        var counter: eventfd_t = 0
        while eventfd_read(descriptor, &counter) < 0, errno == EINTR {}
        return !isShutDown
    }
}
