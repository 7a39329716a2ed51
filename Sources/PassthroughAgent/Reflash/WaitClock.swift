// Stands alone: the clock seam of every part that waits (recovery, the link watch, reflash coordination,
// guest-request rate limits, the metrics writer and the supervisor), in four folders; none of them is its home.

/// Time as the recovery procedure and the link watch see it, injectable so tests run a 60 s
/// timeout instantly.
public protocol WaitClock: Sendable {
    /// Time since an arbitrary fixed point; only differences matter.
    func now() -> Duration
    /// Throws `CancellationError` when the task is cancelled.
    func sleep(for duration: Duration) async throws
}

/// The real, monotonic clock (not wall time: an NTP step must not cut a recovery short).
public struct ContinuousWaitClock: WaitClock {
    private let origin = ContinuousClock.now

    public init() {}

    public func now() -> Duration { ContinuousClock.now - origin }

    public func sleep(for duration: Duration) async throws {
        try await Task.sleep(for: duration, clock: .continuous)
    }
}
