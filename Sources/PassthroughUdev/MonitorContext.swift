import Dispatch
import Logging
import Synchronization

/// What ``UdevMonitor`` shares with its monitor thread. Every member is `Sendable`; no libudev
/// object is ever stored here.
final class MonitorContext: Sendable {
    let logger: Logger
    let continuation: AsyncStream<UdevMonitorEvent>.Continuation
    let shutdownFD: EventFD

    private let startupResult = Mutex<Result<Void, UdevError>?>(nil)
    private let startupSignal = DispatchSemaphore(value: 0)

    init(logger: Logger, continuation: AsyncStream<UdevMonitorEvent>.Continuation, shutdownFD: EventFD) {
        self.logger = logger
        self.continuation = continuation
        self.shutdownFD = shutdownFD
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
