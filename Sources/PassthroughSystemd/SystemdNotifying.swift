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
