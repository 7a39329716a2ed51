import Glibc

/// An AF_UNIX datagram socket standing in for systemd's notify socket, as bolt's
/// test-watchdog.c does: point `NOTIFY_SOCKET` at it and read back what sd_notify sent.
final class FakeNotifySocket {
    let path: String
    private let directory: String
    private let descriptor: Int32

    struct SetupError: Error, CustomStringConvertible {
        var step: String
        var errno: Int32
        var description: String { "\(step): \(String(cString: strerror(errno)))" }
    }

    init() throws {
        var template = Array("/tmp/notify-test-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw SetupError(step: "mkdtemp", errno: errno) }
        directory = String(cString: made)
        path = directory + "/notify.sock"

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
        guard bound == 0 else { throw SetupError(step: "bind", errno: errno) }
    }

    /// The next datagram, or nil if none is queued. sd_notify sends synchronously, so after it
    /// returns its datagram is already here: no waiting needed.
    func receive() -> String? {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = recv(descriptor, &buffer, buffer.count, Int32(MSG_DONTWAIT))
        guard count >= 0 else { return nil }
        return String(decoding: buffer[..<count], as: UTF8.self)
    }

    deinit {
        close(descriptor)
        unlink(path)
        rmdir(directory)
    }
}
