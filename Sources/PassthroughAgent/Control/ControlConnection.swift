import Logging
import SystemPackage

/// One accepted client. A class so the fd is closed once, by `deinit`, when both the control
/// thread (reading) and the task answering it (writing) are done with it: an explicit close
/// from either side could make the other write into a reused fd number.
final class ControlConnection: Sendable {
    /// How long a response may wait for a client that does not read.
    static let sendTimeout = Duration.seconds(5)

    let fd: CInt
    let peer: PeerCredentials

    init(fd: CInt, peer: PeerCredentials) {
        self.fd = fd
        self.peer = peer
    }

    deinit {
        UnixSocket.close(fd)
    }

    /// - Returns: whether the whole line was sent (a client that left is not an error to us).
    @discardableResult
    func send(_ line: [UInt8], logger: Logger) -> Bool {
        do throws(Errno) {
            try UnixSocket.sendAll(fd, line, timeout: Self.sendTimeout)
            return true
        } catch {
            logger.info("control: could not send the response", metadata: ["peer-pid": "\(peer.pid)", "error": "\(error)"])
            return false
        }
    }
}

/// What the control thread hands to a connection's task: one line, or the end of the useful input.
enum ControlInput: Sendable {
    case line([UInt8])
    /// The line passed ``ControlServer/maximumRequestBytes``; the connection is closed after
    /// the error response, since there is no telling where the next request starts.
    case tooLong
}

/// A new connection for the server to serve, with the lines the thread reads from it.
struct AcceptedConnection: Sendable {
    let connection: ControlConnection
    let input: AsyncStream<ControlInput>
}
