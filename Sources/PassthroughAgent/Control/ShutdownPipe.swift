#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Synchronization
import SystemPackage

/// Wakes the control thread's `poll` for shutdown: closing the write end makes the read end
/// report hang-up. A pipe rather than an eventfd because `<sys/eventfd.h>` is not part of
/// Swift's Glibc module, and this target has no C shim of its own.
///
/// A class so the read end is closed by `deinit`, after the thread (which holds a reference)
/// has stopped polling it; the write end is closed exactly once, under the lock.
final class ShutdownPipe: Sendable {
    let readEnd: CInt
    private let writeEnd: Mutex<CInt?>

    init() throws(Errno) {
        var fds: [CInt] = [-1, -1]
        try UnixSocket.call { pipe(&fds) }
        readEnd = fds[0]
        writeEnd = Mutex(fds[1])
        do throws(Errno) {
            try UnixSocket.makeNonBlockingCloseOnExec(fds[0])
            try UnixSocket.makeNonBlockingCloseOnExec(fds[1])
        } catch {
            UnixSocket.close(fds[0])
            UnixSocket.close(fds[1])
            throw error
        }
    }

    deinit {
        signal()
        UnixSocket.close(readEnd)
    }

    /// Idempotent and safe from any thread.
    func signal() {
        writeEnd.withLock { fd in
            if let open = fd { UnixSocket.close(open) }
            fd = nil
        }
    }
}
