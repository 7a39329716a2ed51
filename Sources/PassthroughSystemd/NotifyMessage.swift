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
