#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Synchronization
import SystemPackage

/// Wakes the control thread's `poll`, for two reasons: a connection's task answered and the thread
/// may read that client again (``nudge()``: one byte), or the server stops (``shutdown()``: the
/// write end is closed, so the read end reports end of file). A pipe rather than an eventfd because
/// it tells the two apart with no state besides its ends: bytes are nudges, drained; end of file is
/// shutdown, and stays readable for good. An eventfd only counts.
///
/// A class so the read end is closed by `deinit`, after the thread (which holds a reference)
/// has stopped polling it; the write end is closed exactly once, under the lock.
final class WakeupPipe: Sendable {
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
        shutdown()
        UnixSocket.close(readEnd)
    }

    /// Safe from any thread. A full pipe already wakes the thread, so `EAGAIN` is as good as a write.
    func nudge() {
        writeEnd.withLock { fd in
            guard let open = fd else { return }
            var byte: UInt8 = 1
            _ = write(open, &byte, 1)
        }
    }

    /// Idempotent and safe from any thread.
    func shutdown() {
        writeEnd.withLock { fd in
            if let open = fd { UnixSocket.close(open) }
            fd = nil
        }
    }

    /// For the thread, when the read end is readable: empties the pipe. `false` once shut down.
    func drain() -> Bool {
        var bytes = [UInt8](repeating: 0, count: 64)
        while true {
            let count = bytes.withUnsafeMutableBytes { read(readEnd, $0.baseAddress, $0.count) }
            if count > 0 { continue }
            if count == 0 { return false }
            switch Errno(rawValue: errno) {
            case .interrupted: continue
            default: return true  // EAGAIN: empty, still open
            }
        }
    }
}
