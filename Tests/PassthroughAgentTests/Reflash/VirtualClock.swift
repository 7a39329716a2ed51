import PassthroughAgent
import PassthroughSysfs
import PassthroughThreads
import Synchronization

/// A clock whose `sleep` returns at once and moves time forward, running whatever was
/// scheduled for the time passed (e.g. "the link comes back at 3 s").
final class VirtualClock: WaitClock {
    private struct State {
        var now: Duration = .zero
        var sleeps: [Duration] = []
        var scheduled: [(at: Duration, action: @Sendable () -> Void)] = []
    }

    private let state = Mutex(State())

    func now() -> Duration { state.withLock { $0.now } }

    var sleeps: [Duration] { state.withLock { $0.sleeps } }

    func schedule(at time: Duration, _ action: @escaping @Sendable () -> Void) {
        state.withLock { $0.scheduled.append((time, action)) }
    }

    func sleep(for duration: Duration) async throws {
        try Task.checkCancellation()
        let due = state.withLock { state in
            state.now += duration
            state.sleeps.append(duration)
            let now = state.now
            let due = state.scheduled.filter { $0.at <= now }
            state.scheduled.removeAll { $0.at <= now }
            return due
        }
        for entry in due { entry.action() }
    }
}
