import PassthroughUdev

/// Collects a monitor's events from a consuming task, so tests can wait with a timeout instead
/// of hanging on `next()`.
actor EventRecorder {
    private var events: [UdevMonitorEvent] = []
    private var cursor = 0
    private(set) var isFinished = false

    /// Starts a task that drains `stream` into a new recorder.
    static func consuming(_ stream: AsyncStream<UdevMonitorEvent>) -> (EventRecorder, Task<Void, Never>) {
        let recorder = EventRecorder()
        let task = Task {
            for await event in stream { await recorder.record(event) }
            await recorder.finish()
        }
        return (recorder, task)
    }

    private func record(_ event: UdevMonitorEvent) { events.append(event) }
    private func finish() { isFinished = true }

    struct Timeout: Error, CustomStringConvertible {
        var description: String
    }

    /// The next unread event; throws after `timeout` or when the stream finished.
    func next(timeout: Duration = .seconds(5)) async throws -> UdevMonitorEvent {
        let deadline = ContinuousClock.now + timeout
        while true {
            if cursor < events.count {
                cursor += 1
                return events[cursor - 1]
            }
            if isFinished { throw Timeout(description: "stream finished while waiting for an event") }
            if ContinuousClock.now >= deadline { throw Timeout(description: "no event within \(timeout)") }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    /// The next event, which must be a device event.
    func nextDevice(timeout: Duration = .seconds(5)) async throws -> UdevEvent {
        let event = try await next(timeout: timeout)
        guard case .device(let device) = event else { throw Timeout(description: "expected a device event, got \(event)") }
        return device
    }

    /// Reads up to and including the next `coldplugComplete`; returns what came before it.
    func untilColdplugComplete(timeout: Duration = .seconds(5)) async throws -> (before: [UdevMonitorEvent], count: Int) {
        var before: [UdevMonitorEvent] = []
        while true {
            let event = try await next(timeout: timeout)
            if case .coldplugComplete(let count) = event { return (before, count) }
            before.append(event)
        }
    }

    /// Waits until the stream has finished; `false` on timeout.
    func waitUntilFinished(timeout: Duration = .seconds(5)) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while !isFinished {
            if ContinuousClock.now >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return true
    }
}
