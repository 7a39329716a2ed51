public import Logging

/// The journal's `PRIORITY=` values (syslog severities, 0 = most severe).
public enum SyslogPriority: Int, Sendable, CaseIterable {
    case emergency = 0
    case alert = 1
    case critical = 2
    case error = 3
    case warning = 4
    case notice = 5
    case info = 6
    case debug = 7

    /// swift-log has no emergency or alert level: those mean the whole machine is unusable,
    /// which the agent cannot judge. `trace` is finer than syslog goes and becomes debug.
    public init(_ level: Logger.Level) {
        switch level {
        case .trace, .debug: self = .debug
        case .info: self = .info
        case .notice: self = .notice
        case .warning: self = .warning
        case .error: self = .error
        case .critical: self = .critical
        }
    }
}
