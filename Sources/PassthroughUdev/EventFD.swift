internal import CUdev
import Glibc
import SystemPackage

/// The non-blocking eventfd that wakes the monitor thread's `poll` for shutdown.
///
/// A plain `CInt` wrapper, so it is Sendable; ``UdevMonitor`` closes it only after joining the
/// thread, when nobody can signal it any more.
struct EventFD: Sendable {
    let rawValue: CInt

    init() throws(UdevError) {
        let fd = eventfd(0, CUdev_eventfd_cloexec_nonblock())
        guard fd >= 0 else { throw UdevError(.eventFD, errno: Errno(rawValue: errno)) }
        rawValue = fd
    }

    /// Makes the fd readable. Never blocks; a second signal only bumps the counter.
    func signal() {
        while eventfd_write(rawValue, 1) < 0, errno == EINTR {}
    }

    func close() {
        _ = Glibc.close(rawValue)
    }
}
