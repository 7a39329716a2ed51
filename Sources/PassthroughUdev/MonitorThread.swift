// The monitor thread and what it runs on: its loop, the context it shares with UdevMonitor and the source it
// reads devices from (one file, as swift-subprocess's AsyncIO+Linux.swift).

internal import CUdev
import Dispatch
import Glibc
import Logging
import PassthroughThreads
import Synchronization
import SystemPackage

/// The body of the monitor thread: it owns the ``UdevSession`` from creation to destruction.
///
/// Order matters: subscribe first, then enumerate, so nothing that happens in between is lost
/// (it waits in the socket and is delivered after the snapshot).
struct MonitorThread<Source: MonitorSource> {
    /// Receive failures (other than overflow) in a row after which the monitor gives up.
    static var maximumConsecutiveReceiveFailures: Int { 8 }
    /// Uevents handled between two looks at the shutdown flag while draining.
    static var shutdownCheckInterval: Int { 256 }

    let session: Source
    let context: MonitorContext
    var logger: Logger { context.logger }
}

extension MonitorThread where Source == UdevSession {
    static func run(_ context: MonitorContext) {
        defer { context.continuation.finish() }
        let session: UdevSession
        do throws(UdevError) {
            session = try UdevSession.open(logger: context.logger)
        } catch {
            context.reportStartup(.failure(error))
            return
        }
        context.reportStartup(.success(()))
        context.logger.debug("udev monitor subscribed", metadata: ["subsystem": "pci"])
        MonitorThread(session: session, context: context).loop()
        context.logger.debug("udev monitor thread exiting")
    }
}

extension MonitorThread {
    private enum Wakeup {
        case readable
        case shutdown
        case failed(UdevError)
    }

    private enum DrainOutcome {
        case drained(needsSnapshot: Bool)
        case receiveFailed(Errno)
        /// The consumer went away or shutdown was requested mid-drain.
        case stop
    }

    /// Snapshot, then listen until shutdown, the consumer leaving, or a fatal error.
    func loop() {
        guard snapshot() else { return }
        var consecutiveFailures = 0
        while true {
            switch wait() {
            case .shutdown:
                return
            case .failed(let error):
                fail(error)
                return
            case .readable:
                switch drain() {
                case .stop:
                    return
                case .drained(let needsSnapshot):
                    consecutiveFailures = 0
                    if needsSnapshot { guard snapshot() else { return } }
                case .receiveFailed(let code):
                    consecutiveFailures += 1
                    if consecutiveFailures >= Self.maximumConsecutiveReceiveFailures {
                        fail(UdevError(.receive, errno: code))
                        return
                    }
                    guard snapshot() else { return }
                }
            }
        }
    }

    /// Blocks in `poll` until a uevent or the shutdown signal arrives.
    private func wait() -> Wakeup {
        var fds = [
            pollfd(fd: session.monitorFD, events: Int16(POLLIN), revents: 0),
            pollfd(fd: context.wakeup.descriptor, events: Int16(POLLIN), revents: 0),
        ]
        while true {
            let rc = poll(&fds, nfds_t(fds.count), -1)
            if rc < 0 {
                let code = errno
                if code == EINTR { continue }
                return .failed(UdevError(.poll, errno: Errno(rawValue: code)))
            }
            if fds[1].revents != 0 { return .shutdown }
            if fds[0].revents & Int16(POLLNVAL) != 0 { return .failed(UdevError(.poll, errno: .badFileDescriptor)) }
            if fds[0].revents & Int16(POLLIN | POLLERR) != 0 { return .readable }
            // POLLHUP without data would make every poll return at once: stop instead of spinning.
            if fds[0].revents != 0 { return .failed(UdevError(.socketClosed)) }
        }
    }

    /// Receives until the socket is empty. Overflow and undecodable uevents become `resync`.
    private func drain() -> DrainOutcome {
        var needsSnapshot = false
        var handled = 0
        while true {
            handled += 1
            if handled.isMultiple(of: Self.shutdownCheckInterval), context.wakeup.isShutDown { return .stop }
            switch session.receive() {
            case .drained:
                return .drained(needsSnapshot: needsSnapshot)
            case .device(let record):
                switch record.decode(isColdplug: false) {
                case .success(let event):
                    logger.debug("uevent", metadata: metadata(of: event))
                    guard send(.device(event)) else { return .stop }
                case .failure(let error):
                    guard resync(.unparsableDevice(error)) else { return .stop }
                    needsSnapshot = true
                }
            case .failed(let code) where code == .noBufferSpace:
                guard resync(.receiveBufferOverflow) else { return .stop }
                needsSnapshot = true
            case .failed(let code):
                guard resync(.receiveFailed(code)) else { return .stop }
                return .receiveFailed(code)
            }
        }
    }

    /// Sends every existing PCI device as a coldplug `add`, then `coldplugComplete`.
    private func snapshot() -> Bool {
        var count = 0
        do throws(UdevError) {
            let completed = try session.enumeratePCI { record in
                switch record.decode(isColdplug: true) {
                case .success(let event):
                    count += 1
                    return send(.device(event))
                case .failure(let error):
                    return resync(.unparsableDevice(error))
                }
            }
            guard completed else { return false }
        } catch {
            fail(error)
            return false
        }
        logger.debug("udev coldplug complete", metadata: ["devices": "\(count)"])
        return send(.coldplugComplete(count: count))
    }

    private func resync(_ reason: UdevResyncReason) -> Bool {
        logger.warning("udev monitor resync: \(reason)")
        return send(.resync(reason))
    }

    private func fail(_ error: UdevError) {
        logger.error("udev monitor stopped: \(error)")
        _ = send(.failed(error))
    }

    /// - Returns: `false` once nobody listens any more.
    private func send(_ event: UdevMonitorEvent) -> Bool {
        if case .terminated = context.continuation.yield(event) { return false }
        return true
    }

    private func metadata(of event: UdevEvent) -> Logger.Metadata {
        var metadata: Logger.Metadata = [
            "action": "\(event.action)", "address": "\(event.address)", "syspath": "\(event.syspath)",
        ]
        if let id = event.id { metadata["id"] = "\(id)" }
        if let driver = event.driver { metadata["driver"] = "\(driver)" }
        if let errorEvent = event.errorEvent { metadata["error_event"] = "\(errorEvent)" }
        if let online = event.deviceOnline { metadata["device_online"] = "\(online)" }
        return metadata
    }
}

/// What ``UdevMonitor`` shares with its monitor thread. Every member is `Sendable`; no libudev
/// object is ever stored here.
final class MonitorContext: Sendable {
    let logger: Logger
    let continuation: AsyncStream<UdevMonitorEvent>.Continuation
    /// Wakes the thread's `poll` for shutdown; only ever shut down, never nudged.
    let wakeup: Wakeup

    private let startupResult = Mutex<Result<Void, UdevError>?>(nil)
    private let startupSignal = DispatchSemaphore(value: 0)

    init(logger: Logger, continuation: AsyncStream<UdevMonitorEvent>.Continuation, wakeup: Wakeup) {
        self.logger = logger
        self.continuation = continuation
        self.wakeup = wakeup
    }

    /// Called once by the monitor thread when it has subscribed (or failed to).
    func reportStartup(_ result: Result<Void, UdevError>) {
        startupResult.withLock { $0 = result }
        startupSignal.signal()
    }

    /// Blocks until ``reportStartup(_:)``; that is only socket setup, well under a millisecond.
    func waitForStartup() -> Result<Void, UdevError> {
        startupSignal.wait()
        return startupResult.withLock { $0 ?? .failure(UdevError(.threadStart)) }
    }
}

/// Where the monitor thread gets devices from: ``UdevSession`` in production, a scripted fake in
/// tests. Used on the monitor thread only.
protocol MonitorSource: AnyObject {
    /// Readable when ``receive()`` has something to say.
    var monitorFD: CInt { get }
    /// Reads one uevent without blocking.
    func receive() -> UdevSession.Received
    /// Calls `body` for every PCI device, stopping early when it returns `false`.
    /// - Returns: `false` if `body` stopped the scan.
    func enumeratePCI(_ body: (UdevDeviceRecord) -> Bool) throws(UdevError) -> Bool
}

extension UdevSession: MonitorSource {}
