#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import SystemPackage

/// The syscall funnel of the control socket: `EINTR` is retried, every other failure is a typed
/// `Errno`, and `EBADF`/`EFAULT` (our bugs, never the peer's) stop the process.
enum UnixSocket {
    /// `sun_path` is 108 bytes including the terminating NUL.
    static let maximumPathBytes = 107

    @discardableResult
    static func call<Result: BinaryInteger>(_ body: () -> Result) throws(Errno) -> Result {
        while true {
            let result = body()
            if result >= 0 { return result }
            let code = Errno(rawValue: errno)
            if code == .interrupted { continue }
            precondition(code != .badFileDescriptor && code != .badAddress, "unacceptable errno \(code) from a socket call")
            throw code
        }
    }

    /// A close-on-exec AF_UNIX stream socket.
    static func streamSocket() throws(Errno) -> CInt {
        try call { socket(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0) }
    }

    static func close(_ fd: CInt) {
        // Never retry close: on Linux the fd is gone even when it reports EINTR.
        _ = Glibc.close(fd)
    }

    /// Runs `body` with `path` as a `sockaddr_un`; `nil` when the path does not fit.
    static func withAddress<R>(_ path: FilePath, _ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R? {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.string.utf8)
        guard !bytes.isEmpty, bytes.count <= maximumPathBytes, !bytes.contains(0) else { return nil }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }

    /// `O_NONBLOCK` and `FD_CLOEXEC` on an fd from `accept` (`accept4` is not in Swift's Glibc).
    static func makeNonBlockingCloseOnExec(_ fd: CInt) throws(Errno) {
        let flags = try call { fcntl(fd, F_GETFL) }
        try call { fcntl(fd, F_SETFL, flags | O_NONBLOCK) }
        try call { fcntl(fd, F_SETFD, FD_CLOEXEC) }
    }

    /// The connecting process, from the kernel (`SO_PEERCRED`): it cannot be forged by the peer.
    static func peerCredentials(_ fd: CInt) throws(Errno) -> PeerCredentials {
        // `struct ucred` needs _GNU_SOURCE and is not imported; it is three 32-bit fields
        // (pid, uid, gid), so read it as such.
        var raw: (UInt32, UInt32, UInt32) = (0, 0, 0)
        var length = socklen_t(MemoryLayout.size(ofValue: raw))
        try call { getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &raw, &length) }
        guard length == socklen_t(MemoryLayout.size(ofValue: raw)) else { throw Errno.invalidArgument }
        return PeerCredentials(pid: Int32(bitPattern: raw.0), uid: raw.1, gid: raw.2)
    }

    /// Sends all of `bytes`, waiting up to `timeout` for buffer space on a non-blocking socket.
    /// `MSG_NOSIGNAL`: a peer that hung up is an `EPIPE`, not a SIGPIPE for the daemon.
    static func sendAll(_ fd: CInt, _ bytes: [UInt8], timeout: Duration) throws(Errno) {
        let deadline = ContinuousClock.now + timeout
        var offset = 0
        while offset < bytes.count {
            do throws(Errno) {
                offset += try call {
                    bytes.withUnsafeBytes { raw in send(fd, raw.baseAddress! + offset, raw.count - offset, CInt(MSG_NOSIGNAL)) }
                }
            } catch .wouldBlock {
                try wait(fd, for: CInt(POLLOUT), until: deadline)
            }
        }
    }

    /// Polls one fd for `events` until `deadline`; `ETIMEDOUT` when it passes.
    static func wait(_ fd: CInt, for events: CInt, until deadline: ContinuousClock.Instant) throws(Errno) {
        while true {
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else { throw Errno.timedOut }
            var entry = pollfd(fd: fd, events: Int16(events), revents: 0)
            if try call({ poll(&entry, 1, pollTimeout(remaining)) }) > 0 { return }
        }
    }

    /// `poll`'s timeout for `remaining`: whole milliseconds rounded up (never early), at most
    /// `CInt.max` (a longer wait wakes up once and polls again), 0 for a time already past.
    static func pollTimeout(_ remaining: Duration) -> CInt {
        guard remaining > .zero else { return 0 }
        let (seconds, attoseconds) = remaining.components
        guard seconds < Int64(CInt.max / 1000) else { return CInt.max }
        return CInt(seconds * 1000 + attoseconds / 1_000_000_000_000_000 + 1)
    }

    /// Creates every missing directory above `path` with mode 0755, as systemd's
    /// `RuntimeDirectory=` would have.
    /// - Returns: the directory that could not be created and why, or `nil` when they all exist.
    static func makeParentDirectories(of path: FilePath) -> (directory: FilePath, errno: Errno)? {
        var parent = path
        parent.removeLastComponent()
        var current = FilePath(root: parent.root)
        for component in parent.components {
            current.append(component)
            if current.withPlatformString({ mkdir($0, 0o755) }) != 0, errno != EEXIST {
                return (current, Errno(rawValue: errno))
            }
        }
        return nil
    }
}

/// Who is on the other end of a control connection.
package struct PeerCredentials: Hashable, Sendable {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32
}
