#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Logging
import SystemPackage

/// What the control thread needs; handed over with `Unmanaged.passRetained`.
final class ControlThreadContext: Sendable {
    let listenFD: CInt
    let wakeup: ShutdownPipe
    let allowedUID: UInt32
    let logger: Logger
    let accepted: AsyncStream<AcceptedConnection>.Continuation

    init(listenFD: CInt, wakeup: ShutdownPipe, allowedUID: UInt32, logger: Logger,
         accepted: AsyncStream<AcceptedConnection>.Continuation) {
        self.listenFD = listenFD
        self.wakeup = wakeup
        self.allowedUID = allowedUID
        self.logger = logger
        self.accepted = accepted
    }
}

/// The body of the control thread: it alone polls and reads the listening socket and every
/// client, splits lines, and checks each peer's credentials before anything is read from it.
/// Answers are written by the connection's task; all the thread hands over is lines.
struct ControlThread {
    /// Reads per client per wake-up, so one chatty client cannot starve the others.
    static let readsPerWakeup = 16
    /// A refused peer gets this long to take its one-line answer.
    static let refusalTimeout = Duration.milliseconds(100)

    private struct Client {
        let connection: ControlConnection
        let input: AsyncStream<ControlInput>.Continuation
        var buffer: [UInt8] = []
    }

    let context: ControlThreadContext
    private var logger: Logger { context.logger }

    init(context: ControlThreadContext) {
        self.context = context
    }

    func run() {
        var clients: [CInt: Client] = [:]
        defer {
            for client in clients.values { client.input.finish() }
            context.accepted.finish()
        }
        while true {
            var fds = [
                pollfd(fd: context.listenFD, events: Int16(POLLIN), revents: 0),
                pollfd(fd: context.wakeup.readEnd, events: Int16(POLLIN), revents: 0),
            ] + clients.keys.sorted().map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            do throws(Errno) {
                try UnixSocket.call { poll(&fds, nfds_t(fds.count), -1) }
            } catch {
                logger.critical("control: poll failed, the control socket stops", metadata: ["error": "\(error)"])
                return
            }
            if fds[1].revents != 0 { return }
            if fds[0].revents != 0 {
                guard acceptPending(into: &clients) else { return }
            }
            for entry in fds.dropFirst(2) where entry.revents != 0 {
                read(from: entry.fd, clients: &clients)
            }
        }
    }

    /// Accepts until the backlog is empty. `false` when the server stopped consuming.
    private func acceptPending(into clients: inout [CInt: Client]) -> Bool {
        while true {
            let fd: CInt
            do throws(Errno) {
                fd = try UnixSocket.call { accept(context.listenFD, nil, nil) }
            } catch .wouldBlock {
                return true
            } catch {
                logger.error("control: accept failed", metadata: ["error": "\(error)"])
                // Out of fds: the listening socket stays readable, so pause rather than spin.
                if error == .tooManyOpenFiles || error == .tooManyOpenFilesInSystem { usleep(100_000) }
                return true
            }
            let peer: PeerCredentials
            do throws(Errno) {
                try UnixSocket.makeNonBlockingCloseOnExec(fd)
                peer = try UnixSocket.peerCredentials(fd)
            } catch {
                logger.error("control: cannot set up a connection", metadata: ["error": "\(error)"])
                UnixSocket.close(fd)
                continue
            }
            let connection = ControlConnection(fd: fd, peer: peer)
            // Deny by default: only the allowed uid (root) may talk to the agent at all.
            guard peer.uid == context.allowedUID else {
                logger.warning("control: refused a peer that is not allowed", metadata: [
                    "peer-pid": "\(peer.pid)", "peer-uid": "\(peer.uid)", "allowed-uid": "\(context.allowedUID)",
                ])
                try? UnixSocket.sendAll(fd, ControlResponse.permissionDenied.line, timeout: Self.refusalTimeout)
                continue
            }
            logger.debug("control: connection", metadata: ["peer-pid": "\(peer.pid)", "peer-uid": "\(peer.uid)"])
            let (input, continuation) = AsyncStream.makeStream(of: ControlInput.self, bufferingPolicy: .unbounded)
            if case .terminated = context.accepted.yield(AcceptedConnection(connection: connection, input: input)) {
                return false
            }
            clients[fd] = Client(connection: connection, input: continuation)
        }
    }

    /// Reads what is there and hands over complete lines. The client is dropped (its stream
    /// finished) at end of input, on an error, or after a line over the limit.
    private func read(from fd: CInt, clients: inout [CInt: Client]) {
        guard var client = clients[fd] else { return }
        var chunk = [UInt8](repeating: 0, count: 4096)
        var open = true
        for _ in 0..<Self.readsPerWakeup {
            let count: Int
            do throws(Errno) {
                count = try UnixSocket.call { chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) } }
            } catch .wouldBlock {
                break
            } catch {
                logger.info("control: connection failed", metadata: ["peer-pid": "\(client.connection.peer.pid)", "error": "\(error)"])
                open = false
                break
            }
            if count == 0 {
                // A last request without its newline still counts.
                if !client.buffer.isEmpty, client.buffer.count <= ControlServer.maximumRequestBytes {
                    client.input.yield(.line(client.buffer))
                }
                open = false
                break
            }
            client.buffer.append(contentsOf: chunk[..<count])
            guard handOverLines(&client) else {
                open = false
                break
            }
        }
        if open {
            clients[fd] = client
        } else {
            client.input.finish()
            clients[fd] = nil
        }
    }

    /// `false` once the input is unusable (a line too long) or nobody reads it any more.
    private func handOverLines(_ client: inout Client) -> Bool {
        while let newline = client.buffer.firstIndex(of: 0x0A) {
            let line = Array(client.buffer[..<newline])
            client.buffer.removeSubrange(...newline)
            if line.count > ControlServer.maximumRequestBytes { return tooLong(client) }
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x0D || $0 == 0x09 }) { continue }
            if case .terminated = client.input.yield(.line(line)) { return false }
        }
        if client.buffer.count > ControlServer.maximumRequestBytes { return tooLong(client) }
        return true
    }

    private func tooLong(_ client: Client) -> Bool {
        client.input.yield(.tooLong)
        return false
    }
}
