import Logging
import PassthroughCore
import PassthroughLibvirt
import PassthroughTestSupport
import Synchronization
import Testing

@Suite(.timeLimit(.minutes(1)))
struct ReconnectTests {
    /// Records each requested delay and returns at once, so the schedule is checked without waiting it out.
    final class RecordingSleep: Sendable {
        private let recorded = Mutex<[Duration]>([])
        /// A real pause per attempt, for tests that must not spin.
        private let pause: Duration

        init(pause: Duration = .zero) {
            self.pause = pause
        }

        var delays: [Duration] { recorded.withLock { $0 } }
        var sleep: ReconnectingHypervisor.Sleep {
            { [self] delay in
                recorded.withLock { $0.append(delay) }
                if pause > .zero { try await Task.sleep(for: pause) }
                try Task.checkCancellation()
            }
        }
    }

    struct Harness {
        let connector: FakeHypervisorConnector
        let sleeper: RecordingSleep
        let hypervisor: ReconnectingHypervisor
        let recorder: StreamRecorder<HypervisorEvent>
        let runner: Task<Void, Never>

        init(failuresBeforeSuccess: Int, pause: Duration = .zero) {
            sleeper = RecordingSleep(pause: pause)
            connector = FakeHypervisorConnector(failuresBeforeSuccess: failuresBeforeSuccess)
            hypervisor = ReconnectingHypervisor(
                connector: connector, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }),
                sleep: sleeper.sleep)
            recorder = StreamRecorder(hypervisor.events)
            let hypervisor = hypervisor
            runner = Task { await hypervisor.run() }
        }

        func stop() async {
            runner.cancel()
            await runner.value
        }
    }

    @Test func failsThreeTimesThenConnectsWithCappedExponentialBackoffAndResyncs() async throws {
        let harness = Harness(failuresBeforeSuccess: 3)
        try await harness.recorder.wait(for: .resync)
        #expect(harness.connector.attempts == 4)
        #expect(harness.sleeper.delays == [.milliseconds(500), .seconds(1), .seconds(2)])
        // One "unreachable" for the whole outage, then connected, then resync.
        let events = harness.recorder.events
        #expect(events.count == 3)
        guard case .disconnected(let reason)? = events.first else {
            Issue.record("expected disconnected first, saw \(events)")
            return
        }
        #expect(reason.contains("Failed to connect socket"))
        #expect(Array(events.dropFirst()) == [.connected, .resync])
        #expect(harness.connector.sessions.map(\.registrationCount) == [1])
        await harness.stop()
    }

    @Test func backoffIsCappedDuringALongOutage() async throws {
        let harness = Harness(failuresBeforeSuccess: 10)
        try await harness.recorder.wait(for: .resync)
        #expect(harness.sleeper.delays == [
            .milliseconds(500), .seconds(1), .seconds(2), .seconds(4), .seconds(8), .seconds(16),
            .seconds(30), .seconds(30), .seconds(30), .seconds(30),
        ])
        #expect(harness.recorder.events.filter { if case .disconnected = $0 { true } else { false } }.count == 1)
        await harness.stop()
    }

    @Test func aDroppedConnectionReconnectsReRegistersAndResyncs() async throws {
        let harness = Harness(failuresBeforeSuccess: 0)
        try await harness.recorder.wait(for: .resync)
        #expect(harness.sleeper.delays.isEmpty)

        harness.connector.failNext(2)
        let first = try #require(harness.connector.sessions.first)
        first.drop(reason: "libvirtd closed the connection")
        try await harness.recorder.wait(for: .resync, count: 2)

        #expect(first.isClosed)
        #expect(harness.connector.sessions.count == 2)
        #expect(harness.connector.sessions.map(\.registrationCount) == [1, 1])
        // The drop itself counts as the first failure, then two failed attempts.
        #expect(harness.sleeper.delays == [.milliseconds(500), .seconds(1), .seconds(2)])
        #expect(harness.connector.attempts == 4)
        #expect(harness.recorder.events == [
            .connected, .resync, .disconnected(reason: "libvirtd closed the connection"), .connected, .resync,
        ])
        await harness.stop()
    }

    @Test func aLibvirtdThatDropsEveryConnectionIsRetriedWithBackoffNotInATightLoop() async throws {
        let harness = Harness(failuresBeforeSuccess: 0)
        for round in 1...3 {
            try await harness.recorder.wait(for: .resync, count: round)
            harness.connector.sessions.last?.drop(reason: "EOF")
        }
        try await harness.recorder.wait(for: .resync, count: 4)
        #expect(harness.sleeper.delays == [.milliseconds(500), .milliseconds(500), .milliseconds(500)])
        #expect(harness.connector.sessions.map(\.registrationCount) == [1, 1, 1, 1])
        await harness.stop()
    }

    @Test func sessionEventsAreForwardedInOrderAndOnlyFromTheCurrentSession() async throws {
        let harness = Harness(failuresBeforeSuccess: 0)
        try await harness.recorder.wait(for: .resync)
        let first = try #require(harness.connector.sessions.first)
        first.emit(.lifecycle(guest: "fpga-guest", .stopped(.destroyed)))
        first.emit(.deviceRemoved(guest: "fpga-guest", alias: "hostdev0"))
        first.drop(reason: "keepalive")
        try await harness.recorder.wait(for: .resync, count: 2)
        // A late callback from the closed session must not leak into the stream.
        first.emit(.lifecycle(guest: "stale", .started))
        let second = try #require(harness.connector.sessions.last)
        second.emit(.deviceAdded(guest: "fpga-guest", alias: "hostdev1"))
        try await harness.recorder.wait(for: .deviceAdded(guest: "fpga-guest", alias: "hostdev1"))
        #expect(harness.recorder.events == [
            .connected, .resync,
            .lifecycle(guest: "fpga-guest", .stopped(.destroyed)), .deviceRemoved(guest: "fpga-guest", alias: "hostdev0"),
            .disconnected(reason: "keepalive"), .connected, .resync,
            .deviceAdded(guest: "fpga-guest", alias: "hostdev1"),
        ])
        await harness.stop()
    }

    @Test func queriesGoToTheSessionAndFailTypedWhileDisconnected() async throws {
        let harness = Harness(failuresBeforeSuccess: 0)
        let guest = try #require(GuestName("fpga-guest"))
        let address = try #require(PCIAddress("0000:65:00.0"))
        try await harness.recorder.wait(for: .resync)
        #expect(try await harness.hypervisor.guestState(guest) == .running)
        try await harness.hypervisor.attach(address, to: guest)
        #expect(harness.connector.sessions.first?.attachedAddresses == [address])

        await harness.stop()
        do {
            _ = try await harness.hypervisor.guestState(guest)
            Issue.record("expected a not-connected error")
        } catch let error as LibvirtError {
            #expect(error.isConnectionLost)
        }
    }

    @Test func cancellingRunClosesTheSessionAndFinishesTheStream() async throws {
        let harness = Harness(failuresBeforeSuccess: 0)
        try await harness.recorder.wait(for: .resync)
        await harness.stop()
        #expect(harness.connector.sessions.allSatisfy { $0.isClosed })
        try await harness.recorder.wait(for: "the end of the stream") { _ in harness.recorder.isFinished }
    }

    @Test func cancellingDuringBackoffStopsRetrying() async throws {
        let harness = Harness(failuresBeforeSuccess: .max, pause: .milliseconds(10))
        try await harness.recorder.wait(for: "a retry") { _ in harness.connector.attempts >= 2 }
        await harness.stop()
        let attempts = harness.connector.attempts
        try await Task.sleep(for: .milliseconds(50))
        #expect(harness.connector.attempts == attempts)
    }
}
