// sd_notify: the state changes the agent reports to systemd, the seam tests record them through, and the
// notifier that sends them (with the watchdog settings and the monotonic clock RELOADING= needs).

internal import CSystemd
import Glibc

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

/// Anything that can pass state changes to the service manager.
///
/// ``SystemdNotifier`` is the real one; code that drives the daemon's lifecycle takes this
/// protocol so tests can record the messages instead.
public protocol SystemdNotifying: Sendable {
    /// Sends `messages` as one datagram, so e.g. `STATUS=` and `READY=1` arrive together.
    @discardableResult
    func send(_ messages: [NotifyMessage]) throws(SystemdError) -> NotifyDelivery

    /// How often to send `WATCHDOG=1`; nil when the service manager expects none.
    var watchdogInterval: Duration? { get throws(SystemdError) }
}

extension SystemdNotifying {
    @discardableResult
    public func ready() throws(SystemdError) -> NotifyDelivery {
        try send([.ready])
    }

    @discardableResult
    public func status(_ text: String) throws(SystemdError) -> NotifyDelivery {
        try send([.status(text)])
    }

    @discardableResult
    public func watchdog() throws(SystemdError) -> NotifyDelivery {
        try send([.watchdog])
    }

    @discardableResult
    public func stopping() throws(SystemdError) -> NotifyDelivery {
        try send([.stopping])
    }

    /// Announces a reload (SIGHUP); send ``ready()`` when the new configuration is in use.
    @discardableResult
    public func reloading() throws(SystemdError) -> NotifyDelivery {
        try send([.reloading(monotonicMicroseconds: MonotonicClock.nowMicroseconds())])
    }
}

/// One state change for the service manager, in the `KEY=VALUE` form of sd_notify(3).
public enum NotifyMessage: Hashable, Sendable {
    /// Start-up (or a reload) is finished. Send it only once the daemon really serves, i.e. after
    /// subscribing to udev and libvirt and handling the cold-plugged cards.
    case ready
    /// Free-form text shown by `systemctl status`.
    case status(String)
    /// Keep-alive for `WatchdogSec=`.
    case watchdog
    /// Shutdown has begun.
    case stopping
    /// A reload has begun; finish it with `.ready`. `monotonicMicroseconds` is CLOCK_MONOTONIC at
    /// the start of the reload, which `Type=notify-reload` requires next to `RELOADING=1` and
    /// older systemd versions ignore.
    case reloading(monotonicMicroseconds: UInt64)

    /// The `KEY=VALUE` lines this message consists of.
    public var assignments: [String] {
        switch self {
        case .ready: ["READY=1"]
        case .status(let text): ["STATUS=\(Self.singleLine(text))"]
        case .watchdog: ["WATCHDOG=1"]
        case .stopping: ["STOPPING=1"]
        case .reloading(let usec): ["RELOADING=1", "MONOTONIC_USEC=\(usec)"]
        }
    }

    /// The datagram sd_notify sends for these messages: their assignments, newline-separated.
    public static func payload(_ messages: [NotifyMessage]) -> String {
        messages.flatMap(\.assignments).joined(separator: "\n")
    }

    /// The protocol separates assignments by newlines, so a newline inside STATUS= would start a
    /// bogus assignment (a status line mentioning "READY=1" must not signal readiness).
    private static func singleLine(_ text: String) -> String {
        String(text.map { $0.isNewline ? " " : $0 })
    }
}

/// What happened to a state change that did not fail.
public enum NotifyDelivery: Hashable, Sendable {
    /// The service manager received it.
    case delivered
    /// Nobody listens: `NOTIFY_SOCKET` is unset, e.g. run from a terminal or a test.
    case notSupervised
}

/// CLOCK_MONOTONIC, the clock systemd means by `MONOTONIC_USEC=`.
///
/// Read directly rather than through a Swift `Clock`: which POSIX clock backs `ContinuousClock`
/// or `SuspendingClock` is an implementation detail, and systemd compares against exactly this one.
enum MonotonicClock {
    static func nowMicroseconds() -> UInt64 {
        var now = timespec()
        // Cannot fail for CLOCK_MONOTONIC with a valid pointer.
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1_000
    }
}
