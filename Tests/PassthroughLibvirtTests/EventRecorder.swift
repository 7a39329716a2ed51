import PassthroughLibvirt
import Synchronization
import Testing

/// Collects a hypervisor's events so tests can wait for them with a deadline instead of hanging.
final class EventRecorder: Sendable {
    struct Timeout: Error, CustomStringConvertible {
        let waitingFor: String
        let seen: [HypervisorEvent]
        var description: String { "timed out waiting for \(waitingFor); saw \(seen)" }
    }

    private final class Log: Sendable {
        let events = Mutex<[HypervisorEvent]>([])
        let finished = Atomic<Bool>(false)
    }

    private let log = Log()
    private let consumer: Task<Void, Never>

    init(_ stream: AsyncStream<HypervisorEvent>) {
        let log = log
        consumer = Task {
            for await event in stream { log.events.withLock { $0.append(event) } }
            log.finished.store(true, ordering: .releasing)
        }
    }

    deinit { consumer.cancel() }

    var events: [HypervisorEvent] { log.events.withLock { $0 } }

    /// Whether the stream has ended.
    var isFinished: Bool { log.finished.load(ordering: .acquiring) }

    /// Waits until `condition` holds for everything recorded so far.
    func wait(
        for description: String, timeout: Duration = .seconds(10), until condition: ([HypervisorEvent]) -> Bool
    ) async throws {
        let deadline = ContinuousClock.now + timeout
        while !condition(events) {
            guard ContinuousClock.now < deadline else { throw Timeout(waitingFor: description, seen: events) }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    /// Waits until `event` has been recorded at least `count` times.
    func wait(for event: HypervisorEvent, count: Int = 1, timeout: Duration = .seconds(10)) async throws {
        try await wait(for: "\(count)× \(event)", timeout: timeout) { $0.filter { $0 == event }.count >= count }
    }
}
