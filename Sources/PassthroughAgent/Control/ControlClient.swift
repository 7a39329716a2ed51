#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import SystemPackage

/// The CLI's side of the control socket: one request, one response, one connection.
///
/// Synchronous on purpose: the CLI has nothing else to do meanwhile, and the whole exchange is
/// bounded by `timeout`. The default outlasts the default recovery timeout (60 s), because
/// `reflash-finish` answers only once the card is back or recovery gave up.
public struct ControlClient: Sendable {
    /// The longest response line read; anything longer is not an agent talking.
    public static let maximumResponseBytes = 1 << 20

    public var path: FilePath
    public var timeout: Duration

    public init(path: FilePath = ControlServer.defaultPath, timeout: Duration = .seconds(90)) {
        self.path = path
        self.timeout = timeout
    }

    public func send(_ request: ControlRequest) throws(ControlClientError) -> ControlResponse {
        let deadline = ContinuousClock.now + timeout
        let fd: CInt
        do {
            fd = try UnixSocket.streamSocket()
        } catch {
            throw .io(error)
        }
        defer { UnixSocket.close(fd) }
        try connect(fd)
        do throws(Errno) {
            try UnixSocket.makeNonBlockingCloseOnExec(fd)
            try UnixSocket.sendAll(fd, request.line, timeout: max(deadline - ContinuousClock.now, .zero))
        } catch .timedOut {
            throw .notTaken(after: timeout)
        } catch .brokenPipe, .connectionReset {
            // A refusal (permission denied, too many connections) is written and the connection closed
            // before the request is read; what the daemon said is still there to be read.
            if let line = try? readLine(fd, until: deadline), let response = ControlResponse.parse(line) { return response }
            throw .connectionClosed
        } catch {
            throw .io(error)
        }
        let line = try readLine(fd, until: deadline)
        guard let response = ControlResponse.parse(line) else {
            throw .malformedResponse(String(decoding: line, as: UTF8.self))
        }
        return response
    }

    private func connect(_ fd: CInt) throws(ControlClientError) {
        while true {
            guard let result = UnixSocket.withAddress(path, { Glibc.connect(fd, $0, $1) }) else {
                throw .io(.fileNameTooLong)
            }
            if result == 0 { return }
            let code = Errno(rawValue: errno)
            switch code {
            case .interrupted: continue
            case .noSuchFileOrDirectory, .connectionRefused, .notDirectory: throw .noDaemon(path, code)
            case .permissionDenied, .notPermitted: throw .permissionDenied(path, code)
            default: throw .io(code)
            }
        }
    }

    private func readLine(_ fd: CInt, until deadline: ContinuousClock.Instant) throws(ControlClientError) -> [UInt8] {
        var buffer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count: Int
            do throws(Errno) {
                try UnixSocket.wait(fd, for: CInt(POLLIN), until: deadline)
                count = try UnixSocket.call { chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) } }
            } catch .timedOut {
                throw .timedOut(after: timeout)
            } catch .wouldBlock {
                continue
            } catch .connectionReset {
                throw .connectionClosed
            } catch {
                throw .io(error)
            }
            if count == 0 { throw .connectionClosed }
            buffer.append(contentsOf: chunk[..<count])
            if let newline = buffer.firstIndex(of: 0x0A) { return Array(buffer[..<newline]) }
            if buffer.count > Self.maximumResponseBytes {
                throw .malformedResponse("a response over \(Self.maximumResponseBytes) bytes")
            }
        }
    }
}
