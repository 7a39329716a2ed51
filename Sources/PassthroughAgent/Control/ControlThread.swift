#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Logging
import PassthroughThreads
import SystemPackage

/// What the control thread needs; the body ``ThreadSpawn/start(_:)`` runs on it captures it.
final class ControlThreadContext: Sendable {
    let listenFD: CInt
    let wakeup: Wakeup
    let allowedUID: UInt32
    let limits: ControlServer.Limits
    let logger: Logger
    let accepted: AsyncStream<AcceptedConnection>.Continuation

    init(listenFD: CInt, wakeup: Wakeup, allowedUID: UInt32, limits: ControlServer.Limits, logger: Logger,
         accepted: AsyncStream<AcceptedConnection>.Continuation) {
        self.listenFD = listenFD
        self.wakeup = wakeup
        self.allowedUID = allowedUID
        self.limits = limits
        self.logger = logger
        self.accepted = accepted
    }
}

/// The body of the control thread: it alone polls and reads the listening socket and every
/// client, splits lines, and checks each peer's credentials before anything is read from it.
/// Answers are written by the connection's task; all the thread hands over is lines, one at a
/// time: the next is read only once the last is answered.
///
/// A client stays in the poll set until it hangs up: the peer closing its end, or the task saying
/// it is done (``ControlConnection/finish()``), both of which `poll` reports as `POLLHUP`. A peer's
/// half-close (`shutdown(SHUT_WR)` after its last request) is only the end of its input: it still
/// reads the answers.
struct ControlThread {
    /// Reads per client per wake-up, so one chatty client cannot starve the others.
    static let readsPerWakeup = 16
    /// A refused peer gets this long to take its one-line answer.
    static let refusalTimeout = Duration.milliseconds(100)

    private struct Client {
        let connection: ControlConnection
        let input: AsyncStream<ControlInput>.Continuation
        var buffer: [UInt8] = []
        /// End of file (or a read error): nothing more will be read, what is buffered still counts.
        var endOfInput = false
        /// The input stream is finished; the client only waits for its hang-up.
        var closing = false
    }

    let context: ControlThreadContext
    private var logger: Logger { context.logger }
    private var limits: ControlServer.Limits { context.limits }

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
            let now = ContinuousClock.now
            var deadline: ContinuousClock.Instant?
            for fd in clients.keys.sorted() {
                advance(&clients[fd]!, now: now, deadline: &deadline)
            }
            var fds = [
                pollfd(fd: context.listenFD, events: Int16(POLLIN), revents: 0),
                pollfd(fd: context.wakeup.descriptor, events: Int16(POLLIN), revents: 0),
            ] + clients.sorted { $0.key < $1.key }.map { entry in
                // Not polled for input while the agent answers (one request in flight), nor after
                // the end of input; a hang-up is reported whatever the events.
                let client = entry.value
                let reading = !client.endOfInput && !client.closing && client.connection.turn.isClient
                return pollfd(fd: entry.key, events: reading ? Int16(POLLIN) : 0, revents: 0)
            }
            do throws(Errno) {
                try UnixSocket.call { poll(&fds, nfds_t(fds.count), Self.milliseconds(until: deadline)) }
            } catch {
                logger.critical("control: poll failed, the control socket stops", metadata: ["error": "\(error)"])
                return
            }
            if fds[1].revents != 0, !context.wakeup.drain() { return }
            if fds[0].revents != 0 {
                guard acceptPending(into: &clients) else { return }
            }
            for entry in fds.dropFirst(2) where entry.revents != 0 {
                if entry.revents & Int16(POLLHUP | POLLERR | POLLNVAL) != 0 {
                    drop(entry.fd, from: &clients)
                } else {
                    read(from: entry.fd, clients: &clients)
                }
            }
        }
    }

    /// Hands the next request over when it is the client's turn, ends the input once everything
    /// was handed over, and closes an idle connection; `deadline` becomes the earliest idle timeout.
    private func advance(_ client: inout Client, now: ContinuousClock.Instant, deadline: inout ContinuousClock.Instant?) {
        guard !client.closing, case .client(let since) = client.connection.turn else { return }
        while let newline = client.buffer.firstIndex(of: 0x0A) {
            let line = Array(client.buffer[..<newline])
            client.buffer.removeSubrange(...newline)
            if line.count > ControlServer.maximumRequestBytes { return finish(&client, with: .tooLong) }
            // Blank lines are not requests.
            if !Self.isBlank(line) { return handOver(line, &client) }
        }
        if client.buffer.count > ControlServer.maximumRequestBytes { return finish(&client, with: .tooLong) }
        if client.endOfInput {
            // A last request without its newline still counts.
            let last = client.buffer
            client.buffer = []
            return Self.isBlank(last) ? finish(&client, with: nil) : handOver(last, &client)
        }
        let idleAt = since + limits.idleTimeout
        if idleAt <= now {
            logger.info("control: closing an idle connection", metadata: ["peer-pid": "\(client.connection.peer.pid)"])
            return finish(&client, with: .idle(after: limits.idleTimeout))
        }
        deadline = min(deadline ?? idleAt, idleAt)
    }

    private static func isBlank(_ line: [UInt8]) -> Bool {
        line.allSatisfy { $0 == 0x20 || $0 == 0x0D || $0 == 0x09 }
    }

    private func handOver(_ line: [UInt8], _ client: inout Client) {
        client.connection.requestHandedOver()
        if case .terminated = client.input.yield(.line(line)) { finish(&client, with: nil) }
    }

    /// No more input for the task (after `last`, if any); the client stays until it hangs up.
    private func finish(_ client: inout Client, with last: ControlInput?) {
        if let last { client.input.yield(last) }
        client.input.finish()
        client.closing = true
    }

    /// The peer hung up, or the task finished the connection: a request still being answered is
    /// cancelled, and the connection is let go (its fd is closed once the task lets go too).
    private func drop(_ fd: CInt, from clients: inout [CInt: Client]) {
        guard let client = clients.removeValue(forKey: fd) else { return }
        client.connection.peerHungUp()
        client.input.finish()
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
            let connection = ControlConnection(fd: fd, peer: peer, wakeup: context.wakeup)
            // Deny by default: only the allowed uid (root) may talk to the agent at all.
            guard peer.uid == context.allowedUID else {
                logger.warning("control: refused a peer that is not allowed", metadata: [
                    "peer-pid": "\(peer.pid)", "peer-uid": "\(peer.uid)", "allowed-uid": "\(context.allowedUID)",
                ])
                try? UnixSocket.sendAll(fd, ControlResponse.permissionDenied.line, timeout: Self.refusalTimeout)
                continue
            }
            guard clients.count < limits.maximumConnections else {
                logger.warning("control: refused a connection over the limit", metadata: [
                    "peer-pid": "\(peer.pid)", "limit": "\(limits.maximumConnections)",
                ])
                try? UnixSocket.sendAll(fd, ControlResponse.tooManyConnections(limits.maximumConnections).line,
                                        timeout: Self.refusalTimeout)
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

    /// Reads what is there, up to the first complete line: the rest stays in the socket until that
    /// request is answered.
    private func read(from fd: CInt, clients: inout [CInt: Client]) {
        guard var client = clients[fd] else { return }
        var chunk = [UInt8](repeating: 0, count: 4096)
        for _ in 0..<Self.readsPerWakeup {
            let count: Int
            do throws(Errno) {
                count = try UnixSocket.call { chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) } }
            } catch .wouldBlock {
                break
            } catch {
                logger.info("control: connection failed", metadata: ["peer-pid": "\(client.connection.peer.pid)", "error": "\(error)"])
                client.endOfInput = true
                break
            }
            if count == 0 {
                client.endOfInput = true
                break
            }
            client.buffer.append(contentsOf: chunk[..<count])
            if chunk[..<count].contains(0x0A) || client.buffer.count > ControlServer.maximumRequestBytes { break }
        }
        clients[fd] = client
    }

    /// `poll`'s timeout for `deadline`: -1 (none) without one, rounded up so it is never early.
    private static func milliseconds(until deadline: ContinuousClock.Instant?) -> CInt {
        guard let deadline else { return -1 }
        return UnixSocket.pollTimeout(deadline - .now)
    }
}
