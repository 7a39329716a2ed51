import PassthroughTestSupport
import PassthroughUdev

/// The udev monitor's stream as its tests read it: device events one by one, and the coldplug up to its end.
extension StreamRecorder where Event == UdevMonitorEvent {
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
}
