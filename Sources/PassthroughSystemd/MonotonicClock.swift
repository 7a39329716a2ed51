internal import Glibc

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
