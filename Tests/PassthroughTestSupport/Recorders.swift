// What tests record from the code under test: an adapter's events, and what it logged.

import InMemoryLogging
import Logging
import Synchronization

/// Drains an adapter's event stream (the udev monitor's, the hypervisor's) on a task of its own, so a
/// test waits for what it expects with a deadline instead of hanging on `next()`.
public final class StreamRecorder<Event: Sendable>: Sendable {
    public struct Timeout: Error, CustomStringConvertible {
        public let description: String

        public init(description: String) { self.description = description }
    }

    private struct Recorded {
        var events: [Event] = []
        /// How many of them ``next(timeout:)`` has handed out.
        var read = 0
        var finished = false
    }

    private final class Box: Sendable {
        let recorded = Mutex(Recorded())
    }

    private let box = Box()
    private let consumer: Task<Void, Never>

    public init(_ stream: AsyncStream<Event>) {
        let box = box
        consumer = Task {
            for await event in stream { box.recorded.withLock { $0.events.append(event) } }
            box.recorded.withLock { $0.finished = true }
        }
    }

    deinit { consumer.cancel() }

    /// Everything recorded so far.
    public var events: [Event] { box.recorded.withLock { $0.events } }

    /// Whether the stream has ended.
    public var isFinished: Bool { box.recorded.withLock { $0.finished } }

    /// Stops consuming: the `for await` ends, which terminates the stream (its producer sees it).
    public func stopConsuming() { consumer.cancel() }

    /// The next event not yet handed out; throws after `timeout`, or when the stream has finished.
    public func next(timeout: Duration = .seconds(5)) async throws -> Event {
        let deadline = ContinuousClock.now + timeout
        while true {
            let (event, finished) = box.recorded.withLock { recorded -> (Event?, Bool) in
                guard recorded.read < recorded.events.count else { return (nil, recorded.finished) }
                recorded.read += 1
                return (recorded.events[recorded.read - 1], false)
            }
            if let event { return event }
            if finished { throw Timeout(description: "the stream finished while waiting for an event") }
            if ContinuousClock.now >= deadline { throw Timeout(description: "no event within \(timeout)") }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    /// Waits until `condition` holds for everything recorded so far.
    public func wait(for description: String, timeout: Duration = .seconds(10),
                     until condition: ([Event]) -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while !condition(events) {
            guard ContinuousClock.now < deadline else {
                throw Timeout(description: "timed out waiting for \(description); saw \(events)")
            }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    /// Waits until the stream has finished; `false` on timeout.
    public func waitUntilFinished(timeout: Duration = .seconds(5)) async -> Bool {
        do {
            try await wait(for: "the end of the stream", timeout: timeout) { _ in isFinished }
            return true
        } catch {
            return false
        }
    }
}

extension StreamRecorder where Event: Equatable {
    /// Waits until `event` has been recorded at least `count` times.
    public func wait(for event: Event, count: Int = 1, timeout: Duration = .seconds(10)) async throws {
        try await wait(for: "\(count)× \(event)", timeout: timeout) { $0.filter { $0 == event }.count >= count }
    }
}

extension InMemoryLogHandler {
    /// A logger that keeps everything from `debug` up in this handler.
    public func logger(label: String = "test") -> Logger {
        var handler = self
        handler.logLevel = .debug
        return Logger(label: label) { _ in handler }
    }

    /// Whether a logged message contains `text`.
    public func contains(_ text: String) -> Bool {
        entries.contains { "\($0.message)".contains(text) }
    }
}
