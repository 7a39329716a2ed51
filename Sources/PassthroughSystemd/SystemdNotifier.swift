internal import CSystemd
internal import Glibc

/// Talks to systemd through `sd_notify(3)` and reads the watchdog settings it passed in.
///
/// Stateless: libsystemd reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` on every call,
/// so copies can be used from any task.
public struct SystemdNotifier: SystemdNotifying {
    public init() {}

    /// Whether a service manager listens. Only `NOTIFY_SOCKET` counts: the parent's name or
    /// PID 1 says nothing about whether *this* process is expected to report.
    public var isSupervised: Bool {
        guard let socket = getenv("NOTIFY_SOCKET") else { return false }
        return socket.pointee != 0
    }

    @discardableResult
    public func send(_ messages: [NotifyMessage]) throws(SystemdError) -> NotifyDelivery {
        let result = sd_notify(0, NotifyMessage.payload(messages))
        if result < 0 { throw SystemdError(code: .notify, returnValue: result) }
        return result > 0 ? .delivered : .notSupervised
    }

    /// `WatchdogSec=` of this service, or nil when the watchdog is off or meant for another
    /// process (`WATCHDOG_PID` is not ours).
    public func watchdogTimeout() throws(SystemdError) -> Duration? {
        var microseconds: UInt64 = 0
        let result = sd_watchdog_enabled(0, &microseconds)
        if result < 0 { throw SystemdError(code: .watchdogConfiguration, returnValue: result) }
        guard result > 0 else { return nil }
        return .microseconds(microseconds)
    }

    /// How often to send `WATCHDOG=1`: half the timeout, as sd_watchdog_enabled(3) recommends,
    /// so one late ping does not get the service killed. Nil when the watchdog is off.
    public var watchdogInterval: Duration? {
        get throws(SystemdError) {
            try watchdogTimeout().map { $0 / 2 }
        }
    }
}
