internal import CUdev
import Glibc
import SystemPackage

/// The non-blocking eventfd that wakes the monitor thread's `poll` for shutdown.
///
/// A class so the fd is closed by `deinit`, when the last holder is gone: the stream's
/// `onTermination` handler may signal it from any thread at any time, so an explicit `close()`
/// could race with that and write into a reused fd number. Sendable: the only state is an
/// immutable `CInt`, and `eventfd_write` is thread-safe.
final class EventFD: Sendable {
    let rawValue: CInt

    init() throws(UdevError) {
        let fd = eventfd(0, CUdev_eventfd_cloexec_nonblock())
        guard fd >= 0 else { throw UdevError(.eventFD, errno: Errno(rawValue: errno)) }
        rawValue = fd
    }

    deinit {
        _ = Glibc.close(rawValue)
    }

    /// Makes the fd readable. Never blocks; a second signal only bumps the counter.
    func signal() {
        while eventfd_write(rawValue, 1) < 0, errno == EINTR {}
    }
}
