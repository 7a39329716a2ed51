/// Capped exponential backoff: how long to wait before the next attempt after `n` failures in a row.
///
/// Deterministic on purpose (no jitter): there is one client per host reconnecting to one local daemon, so
/// there is no herd to spread out, and tests can assert the exact schedule.
public struct Backoff: Hashable, Sendable {
    /// The wait after the first failure.
    public let initial: Duration
    /// Each further failure multiplies the wait by this, until `cap`.
    public let multiplier: Int
    /// The longest wait, however many failures.
    public let cap: Duration

    /// `nil` unless `0 < initial <= cap` and `multiplier >= 1`.
    public init?(initial: Duration, multiplier: Int = 2, cap: Duration) {
        guard initial > .zero, initial <= cap, multiplier >= 1 else { return nil }
        self.initial = initial
        self.multiplier = multiplier
        self.cap = cap
    }

    /// 0.5 s, 1 s, 2 s, 4 s … capped at 30 s: quick after a libvirtd restart, quiet during a long outage.
    public static let standard = Backoff(initial: .milliseconds(500), multiplier: 2, cap: .seconds(30))!

    /// The wait after `failures` consecutive failures; `.zero` for none.
    public func delay(afterFailures failures: Int) -> Duration {
        guard failures > 0 else { return .zero }
        guard multiplier > 1 else { return initial }
        var delay = initial
        var step = 1
        // Stop growing once the cap is reached, so a long outage can never overflow `Duration`.
        while step < failures, delay < cap {
            delay = cap / multiplier < delay ? cap : delay * multiplier
            step += 1
        }
        return min(delay, cap)
    }
}
