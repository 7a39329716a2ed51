import Glibc

/// An AF_UNIX datagram socket standing in for one of systemd's sockets, as bolt's
/// test-watchdog.c does: point libsystemd at it and read back what it sent.
final class FakeDatagramSocket {
    let path: String
    private let temporaryDirectory: String?
    private let descriptor: Int32

    struct SetupError: Error, CustomStringConvertible {
        var step: String
        var errno: Int32
        var description: String { "\(step): \(String(cString: strerror(errno)))" }
    }

    /// A socket in a fresh temporary directory, e.g. for `NOTIFY_SOCKET`.
    convenience init() throws {
        var template = Array("/tmp/systemd-test-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw SetupError(step: "mkdtemp", errno: errno) }
        let directory = String(cString: made)
        try self.init(path: directory + "/socket", temporaryDirectory: directory)
    }

    /// A socket at a fixed path, e.g. journald's, which libsystemd does not let us move.
    init(path: String, temporaryDirectory: String? = nil) throws {
        self.path = path
        self.temporaryDirectory = temporaryDirectory
        descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { throw SetupError(step: "socket", errno: errno) }

        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { sunPath in
            for (index, byte) in path.utf8.enumerated() { sunPath[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard bound == 0 else {
            let error = errno
            close(descriptor)
            throw SetupError(step: "bind \(path)", errno: error)
        }
    }

    /// The next datagram, or nil if none is queued. libsystemd sends synchronously, so after
    /// its call returns the datagram is already here: no waiting needed.
    func receiveBytes() -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 65536)
        let count = recv(descriptor, &buffer, buffer.count, Int32(MSG_DONTWAIT))
        guard count >= 0 else { return nil }
        return Array(buffer[..<count])
    }

    func receive() -> String? {
        receiveBytes().map { String(decoding: $0, as: UTF8.self) }
    }

    deinit {
        close(descriptor)
        unlink(path)
        if let temporaryDirectory { rmdir(temporaryDirectory) }
    }
}
