#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Logging
import PassthroughThreads
import Synchronization
import SystemPackage

/// One accepted client, shared by the control thread (reading, watching for a hang-up) and the task
/// answering it (writing). A class so the fd is closed once, by `deinit`, when both are done with
/// it: an explicit close from either side could make the other use a reused fd number. The task
/// says it is done with ``finish()`` (a `shutdown`, which the thread sees as a hang-up).
final class ControlConnection: Sendable {
    /// How long a response may wait for a client that does not read.
    static let sendTimeout = Duration.seconds(5)

    /// Whose turn it is. The thread reads a client only while it is the client's turn: one request
    /// in flight per connection, and whatever the client sends meanwhile waits in the socket.
    enum Turn: Sendable {
        /// Waiting for the next request line since then (for the idle timeout).
        case client(since: ContinuousClock.Instant)
        /// A request was handed to the task and is not answered yet.
        case agent

        var isClient: Bool {
            if case .client = self { true } else { false }
        }
    }

    private struct State {
        var turn: Turn
        var hungUp = false
        /// The task answering a request, waiting to hear of a hang-up.
        var hangUpWaiter: CheckedContinuation<Bool, Never>?
    }

    let fd: CInt
    let peer: PeerCredentials
    private let wakeup: Wakeup
    private let state: Mutex<State>

    init(fd: CInt, peer: PeerCredentials, wakeup: Wakeup) {
        self.fd = fd
        self.peer = peer
        self.wakeup = wakeup
        state = Mutex(State(turn: .client(since: .now)))
    }

    deinit {
        UnixSocket.close(fd)
    }

    var turn: Turn { state.withLock { $0.turn } }

    /// For the thread, right before it hands a request line over.
    func requestHandedOver() {
        state.withLock { $0.turn = .agent }
    }

    /// For the task, once the answer is out: the thread may read the next request.
    func answered() {
        state.withLock { $0.turn = .client(since: .now) }
        wakeup.nudge()
    }

    /// For the thread: the peer closed its end (or the connection failed). Wakes the task waiting
    /// in ``waitForHangUp()``; the request it answers is cancelled.
    func peerHungUp() {
        let waiter = state.withLock { state in
            state.hungUp = true
            return state.hangUpWaiter.take()
        }
        waiter?.resume(returning: true)
    }

    /// Returns `true` when the peer hangs up, `false` when the calling task is cancelled first.
    func waitForHangUp() async -> Bool {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (waiter: CheckedContinuation<Bool, Never>) in
                let now: Bool? = state.withLock { state in
                    if state.hungUp { return true }
                    if Task.isCancelled { return false }
                    state.hangUpWaiter = waiter
                    return nil
                }
                if let now { waiter.resume(returning: now) }
            }
        } onCancel: {
            state.withLock { $0.hangUpWaiter.take() }?.resume(returning: false)
        }
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

    /// For the task, when it is done with the connection: the client reads end of file at once, and
    /// the thread, seeing the hang-up, lets go of it (so the fd is closed).
    func finish() {
        _ = Glibc.shutdown(fd, CInt(SHUT_RDWR))
    }
}

/// What the control thread hands to a connection's task: one line, or why the input ended early.
enum ControlInput: Sendable {
    case line([UInt8])
    /// The line passed ``ControlServer/maximumRequestBytes``; the connection is closed after
    /// the error response, since there is no telling where the next request starts.
    case tooLong
    /// No request came within ``ControlServer/Limits/idleTimeout`` (`after`); the connection is
    /// closed after the error response.
    case idle(after: Duration)
}

/// A new connection for the server to serve, with the lines the thread reads from it.
struct AcceptedConnection: Sendable {
    let connection: ControlConnection
    let input: AsyncStream<ControlInput>
}
