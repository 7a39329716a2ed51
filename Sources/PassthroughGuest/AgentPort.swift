#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The guest's end of the agent's virtio-serial port, and one request/answer exchange over it.
///
/// The port is `/dev/vportNpM`; its name is in `/sys/class/virtio-ports/vportNpM/name`, which a guest with
/// only busybox (no udev, so no `/dev/virtio-ports/NAME` link) has too. The device is opened for reading and
/// writing at once, before the request goes out, so the answer cannot arrive while nobody has the port open
/// (QEMU then holds it back, and the agent gives up on it after a bound and reconnects).
public enum AgentPort {
    /// Finds the port named ``GuestCommand/portName``: first by its sysfs name, then by udev's link.
    public static func locate(sysRoot: String = "/sys", devRoot: String = "/dev") -> String? {
        let classDirectory = sysRoot + "/class/virtio-ports"
        for entry in directoryEntries(classDirectory).sorted() {
            guard let name = readSmallFile(classDirectory + "/" + entry + "/name") else { continue }
            if name.split(separator: "\n").first.map(String.init) == GuestCommand.portName {
                return devRoot + "/" + entry
            }
        }
        let link = devRoot + "/virtio-ports/" + GuestCommand.portName
        return access(link, F_OK) == 0 ? link : nil
    }

    public enum Failure: Error, Equatable, CustomStringConvertible {
        case cannotOpen(path: String, errno: Int32)
        case cannotSend(path: String, errno: Int32)
        /// No complete answer line before the deadline (`partial`: what came).
        case noAnswer(partial: String)
        case closed(partial: String)

        public var description: String {
            switch self {
            case .cannotOpen(let path, let code): "cannot open \(path): \(errorText(code))"
            case .cannotSend(let path, let code): "cannot send to \(path): \(errorText(code))"
            case .noAnswer(let partial):
                "no answer from the agent in time" + (partial.isEmpty ? "" : " (got '\(partial)' without its newline)")
            case .closed(let partial):
                // virtio_console reads end of file while the host side is not connected.
                "the port closed before an answer" + (partial.isEmpty ? "" : " (got '\(partial)')")
                    + ": nobody on the host side? (the agent not running, or guest-requests off for this guest's cards)"
            }
        }
    }

    /// The longest answer read; the rest of a longer one is left unread.
    static let maximumAnswerBytes = 4096

    /// Sends `request` and a newline to the port at `path` and returns the first answer line, without its newline.
    /// `path` may also be a unix socket (for tests, or a host-side check against a channel socket).
    public static func exchange(_ request: String, path: String, timeout: Duration) -> Result<String, Failure> {
        let deadline = ContinuousClock.now + timeout
        let fd: Int32
        switch open(path) {
        case .success(let opened): fd = opened
        case .failure(let failure): return .failure(failure)
        }
        defer { close(fd) }
        // A late answer to an earlier, timed-out request would otherwise be taken for this one's.
        discardPendingInput(fd)
        var line = Array(request.utf8)
        line.append(0x0A)
        var offset = 0
        while offset < line.count {
            let written = line.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if written > 0 {
                offset += written
            } else if written < 0, errno == EAGAIN {
                guard wait(fd, for: POLLOUT, until: deadline) else { return .failure(.noAnswer(partial: "")) }
            } else if written < 0, errno == EINTR {
                continue
            } else {
                return .failure(.cannotSend(path: path, errno: errno))
            }
        }
        return readLine(fd, until: deadline)
    }

    // MARK: - Helpers

    private static func open(_ path: String) -> Result<Int32, Failure> {
        var status = stat()
        if stat(path, &status) == 0, status.st_mode & S_IFMT == S_IFSOCK {
            return connect(path)
        }
        let fd = Glibc.open(path, O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { return .failure(.cannotOpen(path: path, errno: errno)) }
        return .success(fd)
    }

    private static func connect(_ path: String) -> Result<Int32, Failure> {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .failure(.cannotOpen(path: path, errno: errno)) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            close(fd)
            return .failure(.cannotOpen(path: path, errno: ENAMETOOLONG))
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let result = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard result == 0 else {
            let code = errno
            close(fd)
            return .failure(.cannotOpen(path: path, errno: code))
        }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        return .success(fd)
    }

    private static func discardPendingInput(_ fd: Int32) {
        var scratch = [UInt8](repeating: 0, count: 512)
        while scratch.withUnsafeMutableBytes({ read(fd, $0.baseAddress, $0.count) }) > 0 {}
    }

    private static func readLine(_ fd: Int32, until deadline: ContinuousClock.Instant) -> Result<String, Failure> {
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 512)
        while true {
            if let newline = received.firstIndex(of: 0x0A) {
                var line = received[..<newline]
                if line.last == 0x0D { line = line.dropLast() }
                return .success(String(decoding: line, as: UTF8.self))
            }
            let partial = String(decoding: received, as: UTF8.self)
            guard received.count < maximumAnswerBytes else { return .success(partial) }
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count > 0 {
                received += chunk[..<count]
            } else if count == 0 {
                return .failure(.closed(partial: partial))
            } else if errno == EAGAIN {
                guard wait(fd, for: POLLIN, until: deadline) else { return .failure(.noAnswer(partial: partial)) }
            } else if errno != EINTR {
                return .failure(.closed(partial: partial))
            }
        }
    }

    /// `false` when the deadline passes first.
    private static func wait(_ fd: Int32, for events: Int32, until deadline: ContinuousClock.Instant) -> Bool {
        while true {
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else { return false }
            let (seconds, attoseconds) = remaining.components
            let milliseconds = Int32(min(seconds * 1000 + attoseconds / 1_000_000_000_000_000 + 1, 60_000))
            var entry = pollfd(fd: fd, events: Int16(events), revents: 0)
            let ready = poll(&entry, 1, milliseconds)
            if ready > 0 { return true }
            if ready < 0, errno != EINTR { return true }  // the read or write that follows reports it
        }
    }

    private static func directoryEntries(_ path: String) -> [String] {
        guard let directory = opendir(path) else { return [] }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafePointer(to: &entry.pointee.d_name) {
                String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self))
            }
            if name != ".", name != ".." { names.append(name) }
        }
        return names
    }

    private static func readSmallFile(_ path: String) -> String? {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 256)
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        return count > 0 ? String(decoding: buffer[..<count], as: UTF8.self) : nil
    }
}

func errorText(_ code: Int32) -> String {
    guard let text = strerror(code) else { return "errno \(code)" }
    return String(cString: text)
}
