/// What happened to a state change that did not fail.
public enum NotifyDelivery: Hashable, Sendable {
    /// The service manager received it.
    case delivered
    /// Nobody listens: `NOTIFY_SOCKET` is unset, e.g. run from a terminal or a test.
    case notSupervised
}
