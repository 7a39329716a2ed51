import Foundation

/// A fake systemd notify socket (`NOTIFY_SOCKET`): a test or benchmark hears READY=1, STATUS=…,
/// STOPPING=1 from the agent as systemd would.
///
/// `@unchecked Sendable`: its owner waits on it from one thread at a time.
public final class NotifySocket: @unchecked Sendable {
    public let path: String
    private let fd: Int32

    public init(path: String) throws {
        self.path = path
        unlink(path)
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in raw.copyBytes(from: Array(path.utf8).prefix(raw.count - 1)) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard fd >= 0, bound == 0 else { throw POSIXError(.EADDRINUSE) }
    }

    deinit {
        close(fd)
        unlink(path)
    }

    /// Blocks until a datagram contains `text`, and returns it with every datagram before it; nil after `timeout`.
    public func waitFor(_ text: String, timeout: Duration) -> [String]? {
        var seen: [String] = []
        let deadline = ContinuousClock.now + timeout
        var buffer = [UInt8](repeating: 0, count: 4096)
        while ContinuousClock.now < deadline {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 100) > 0 else { continue }
            let count = recv(fd, &buffer, buffer.count, 0)
            guard count > 0 else { continue }
            seen.append(String(decoding: buffer[..<count], as: UTF8.self))
            if seen.last!.contains(text) { return seen }
        }
        return nil
    }
}
