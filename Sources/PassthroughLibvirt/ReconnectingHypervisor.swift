import Logging
import PassthroughCore

/// The daemon's hypervisor: keeps one session open through the connector, reconnecting with backoff.
///
/// `run()` owns the connection: it connects, registers the event callbacks, emits `.connected` then `.resync`,
/// forwards the session's events, and when the session closes emits `.disconnected` (once per outage) and
/// starts again after the backoff (a drop counts as the first failure). Queries go to the current session and
/// fail with `LibvirtError.isConnectionLost` between sessions.
public actor ReconnectingHypervisor: Hypervisor {
    public typealias Sleep = @Sendable (Duration) async throws -> Void

    /// Every event, in order; finishes when `run()` returns. One consumer.
    public nonisolated let events: AsyncStream<HypervisorEvent>

    private let output: AsyncStream<HypervisorEvent>.Continuation
    private let connector: any HypervisorConnector
    private let backoff: Backoff
    private let sleep: Sleep
    private let logger: Logger
    private var session: (any HypervisorSession)?
    private var hasRun = false
    /// Failed attempts (and drops) since the last session opened; drives the backoff.
    private var failures = 0
    private var outageAnnounced = false
    private var outage = "not connected yet"

    /// - Parameter sleep: waits between attempts; tests pass one that records the delays instead.
    public init(
        connector: any HypervisorConnector, backoff: Backoff = .standard, logger: Logger,
        sleep: @escaping Sleep = { try await Task.sleep(for: $0) }
    ) {
        (events, output) = AsyncStream.makeStream(of: HypervisorEvent.self, bufferingPolicy: .unbounded)
        self.connector = connector
        self.backoff = backoff
        self.sleep = sleep
        self.logger = logger
    }

    /// A hypervisor on a real libvirt connection, e.g. `qemu:///system`.
    public init(
        libvirtURI uri: String, keepAlive: LibvirtConnector.KeepAlive? = .standard, backoff: Backoff = .standard,
        logger: Logger
    ) {
        self.init(connector: LibvirtConnector(uri: uri, keepAlive: keepAlive), backoff: backoff, logger: logger)
    }

    /// Connects and stays connected until the calling task is cancelled; then closes and finishes `events`.
    /// Call once.
    public func run() async {
        // Two loops would fight over `session` and both write `events`.
        precondition(!hasRun, "ReconnectingHypervisor.run() may only be called once")
        hasRun = true
        while let (opened, signals, sink) = await connectWithBackoff() {
            session = opened
            output.yield(.connected)
            // Whatever happened while no callbacks were registered is lost: the daemon must re-read.
            output.yield(.resync)

            let reason = await forward(signals)
            session = nil
            sink.finish()
            await opened.close()
            guard !Task.isCancelled else { break }
            logger.warning("libvirt connection lost", metadata: ["reason": "\(reason)"])
            announceOutage(reason)
            // The drop counts as the first failure: a libvirtd that accepts and then drops every connection
            // is retried with backoff instead of in a tight loop.
            failures = 1
            do { try await sleep(backoff.delay(afterFailures: failures)) } catch { break }
        }
        output.finish()
    }

    // MARK: - Hypervisor

    public func guestState(_ guest: GuestName) async throws -> GuestState {
        try await current().guestState(guest)
    }

    public func hostdevs(of guest: GuestName) async throws -> [Hostdev] {
        try await current().hostdevs(of: guest)
    }

    public func guestsHolding(_ functions: Set<PCIAddress>) async throws -> [GuestName: [PCIAddress]] {
        try await current().guestsHolding(functions)
    }

    public func attach(_ address: PCIAddress, to guest: GuestName) async throws {
        try await current().attach(address, to: guest)
    }

    public func detach(_ address: PCIAddress, from guest: GuestName) async throws {
        try await current().detach(address, from: guest)
    }

    public func requestChannel(of guest: GuestName) async throws -> GuestRequestChannel {
        try await current().requestChannel(of: guest)
    }

    public func addRequestChannel(to guest: GuestName) async throws {
        try await current().addRequestChannel(to: guest)
    }

    // MARK: - Helpers

    /// Attempts until a session is open with its callbacks registered; `nil` once the task is cancelled.
    private func connectWithBackoff() async -> (
        any HypervisorSession, AsyncStream<SessionSignal>, AsyncStream<SessionSignal>.Continuation
    )? {
        while !Task.isCancelled {
            let (signals, sink) = AsyncStream.makeStream(of: SessionSignal.self, bufferingPolicy: .unbounded)
            do {
                let opened = try await open(signals: sink)
                guard !Task.isCancelled else {
                    sink.finish()
                    await opened.close()
                    return nil
                }
                if failures > 0 { logger.notice("libvirt connection restored", metadata: ["failures": "\(failures)"]) }
                failures = 0
                outageAnnounced = false
                return (opened, signals, sink)
            } catch {
                sink.finish()
                failures += 1
                announceOutage("\(error)")
                let delay = backoff.delay(afterFailures: failures)
                logger.warning("libvirt connection failed; retrying", metadata: [
                    "error": "\(error)", "failures": "\(failures)", "retry-in": "\(delay)",
                ])
                do { try await sleep(delay) } catch { return nil }
            }
        }
        return nil
    }

    /// Records why libvirt is unreachable and says so once per outage.
    private func announceOutage(_ reason: String) {
        outage = reason
        guard !outageAnnounced else { return }
        outageAnnounced = true
        output.yield(.disconnected(reason: reason))
    }

    /// Connects and registers every callback; a half-open session is closed again.
    private func open(signals: AsyncStream<SessionSignal>.Continuation) async throws -> any HypervisorSession {
        let opened = try await connector.connect(signals: signals)
        do {
            try await opened.registerEventCallbacks()
        } catch {
            await opened.close()
            throw error
        }
        return opened
    }

    /// Forwards the session's events until it closes (returns why) or the task is cancelled.
    private func forward(_ signals: AsyncStream<SessionSignal>) async -> String {
        for await signal in signals {
            switch signal {
            case .event(let event): output.yield(event)
            case .closed(let reason): return reason
            }
        }
        return "cancelled"
    }

    private func current() throws -> any HypervisorSession {
        guard let session else { throw LibvirtError.notConnected(outage) }
        return session
    }
}
