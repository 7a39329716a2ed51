#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import SystemPackage

/// One agent per host: `run` takes an exclusive `flock` on this file before it touches anything
/// (leftover guards, the control socket, a driver) and holds it for its whole life. A second `run`
/// then stops at once and says who holds it, instead of restoring the first one's guards and
/// reconciling against it.
///
/// The kernel drops the lock when the holder's fd closes, at exit or `kill -9` alike, so a stale
/// file never blocks the next start. The holder's pid is written into the file for the message
/// (and for people); the lock, not the pid, is what counts.
public final class InstanceLock: Sendable {
    public static let defaultPath: FilePath = "/run/passthrough-agent/agent.lock"

    public let path: FilePath
    private let fd: CInt

    /// Takes the lock or throws: creates the file (mode 0600) and its directory when missing.
    public init(path: FilePath = InstanceLock.defaultPath) throws(InstanceLockError) {
        self.path = path
        if let (directory, errno) = UnixSocket.makeParentDirectories(of: path) {
            throw InstanceLockError(path: path, problem: .directory(directory, errno))
        }
        let fd: CInt
        do throws(Errno) {
            fd = try UnixSocket.call { path.withPlatformString { open($0, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600) } }
        } catch {
            throw InstanceLockError(path: path, problem: .open(error))
        }
        do throws(Errno) {
            try UnixSocket.call { flock(fd, LOCK_EX | LOCK_NB) }
        } catch .wouldBlock {
            let holder = Self.recordedPID(fd)
            UnixSocket.close(fd)
            throw InstanceLockError(path: path, problem: .held(by: holder))
        } catch {
            UnixSocket.close(fd)
            throw InstanceLockError(path: path, problem: .open(error))
        }
        self.fd = fd
        // Best effort: the pid only names the holder in a second agent's message.
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
    }

    /// Releases the lock.
    deinit {
        UnixSocket.close(fd)
    }

    private static func recordedPID(_ fd: CInt) -> Int32? {
        var bytes = [UInt8](repeating: 0, count: 32)
        let count = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard count > 0 else { return nil }
        let text = String(decoding: bytes[..<count], as: UTF8.self)
        return Int32(text.prefix { !$0.isWhitespace })
    }
}

/// Why ``InstanceLock`` was not taken; nothing was touched.
public struct InstanceLockError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Problem: Hashable, Sendable {
        /// Another agent holds it: its pid, when it recorded one.
        case held(by: Int32?)
        case directory(FilePath, Errno)
        case open(Errno)
    }

    public var path: FilePath
    public var problem: Problem

    public var description: String {
        switch problem {
        case .held(let pid?):
            "another passthrough-agent is running (pid \(pid) holds \(path)); this one exits without touching anything"
        case .held(nil):
            "another passthrough-agent is running (it holds \(path)); this one exits without touching anything"
        case .directory(let directory, let errno):
            "cannot take the instance lock \(path): creating \(directory) failed: \(errno)"
        case .open(let errno):
            "cannot take the instance lock \(path): \(errno)"
        }
    }
}
