import InMemoryLogging
import PassthroughCore
import PassthroughTestSupport
@testable import PassthroughUdev
import Testing

/// The monitor against real libudev on an in-process umockdev testbed.
///
/// Each test builds its own testbed *before* its monitor (the monitor's netlink socket is only
/// emulated if the testbed exists when it is created). The testbed is process-global, hence
/// `.serialized`.
@Suite("UdevMonitor on umockdev", .serialized, .enabled(if: Umockdev.isPreloaded, Umockdev.skipReason))
struct UdevMonitorTests {
    private let alveoAddress = PCIAddress("0000:01:00.0")!
    private let alveoID = PCIID(vendor: 0x10ee, device: 0x903f)

    @Test("coldplug reports existing devices before coldplugComplete")
    func coldplug() async throws {
        let testbed = try Testbed()
        try testbed.add(FakeAlveo.description)
        let monitor = UdevMonitor(logger: InMemoryLogHandler().logger())
        defer { monitor.shutdown() }
        let recorder = StreamRecorder(try monitor.start())

        let (before, count) = try await recorder.untilColdplugComplete()
        let devices = before.compactMap { event -> UdevEvent? in
            if case .device(let device) = event { return device }
            return nil
        }
        #expect(devices.count == before.count, "only device events before coldplugComplete: \(before)")
        #expect(count == 2)
        #expect(Set(devices.map(\.address.description)) == ["0000:00:01.0", "0000:01:00.0"])
        #expect(devices.allSatisfy { $0.isColdplug && $0.action == .add && $0.sequenceNumber == nil })

        let alveo = try #require(devices.first { $0.address == alveoAddress })
        #expect(alveo.syspath == FakeAlveo.syspath)
        #expect(alveo.id == alveoID)
        #expect(alveo.id?.description == "10ee:903f")
        #expect(alveo.driver == DriverName("xdma"))
        #expect(alveo.errorEvent == nil)
        #expect(alveo.deviceOnline == nil)
    }

    @Test("a uevent sent right after start() is delivered after the snapshot, not lost")
    func subscribeBeforeEnumerate() async throws {
        let testbed = try Testbed()
        try testbed.add(FakeAlveo.description)
        let monitor = UdevMonitor(logger: InMemoryLogHandler().logger())
        defer { monitor.shutdown() }
        let stream = try monitor.start()
        testbed.setProperty(FakeAlveo.syspath, "DRIVER", "vfio-pci")
        testbed.uevent(FakeAlveo.syspath, "bind")
        let recorder = StreamRecorder(stream)

        let (before, count) = try await recorder.untilColdplugComplete()
        #expect(count == 2)
        #expect(before.count == 2)
        let bind = try await recorder.nextDevice()
        #expect(bind.action == .bind)
        #expect(!bind.isColdplug)
        #expect(bind.driver == .vfioPCI)
    }

    @Test("add, unbind, bind, AER change and remove reach the stream")
    func hotplug() async throws {
        let testbed = try Testbed()
        try testbed.add(FakeAlveo.description)
        let monitor = UdevMonitor(logger: InMemoryLogHandler().logger())
        defer { monitor.shutdown() }
        let recorder = StreamRecorder(try monitor.start())
        _ = try await recorder.untilColdplugComplete()

        testbed.uevent(FakeAlveo.syspath, "add")
        let add = try await recorder.nextDevice()
        #expect(add.action == .add)
        #expect(!add.isColdplug)
        #expect(add.syspath == FakeAlveo.syspath)
        #expect(add.address == alveoAddress)
        #expect(add.id == alveoID)
        #expect(add.driver == DriverName("xdma"))
        #expect(add.sequenceNumber != nil)

        testbed.setProperty(FakeAlveo.syspath, "DRIVER", "")
        testbed.uevent(FakeAlveo.syspath, "unbind")
        let unbind = try await recorder.nextDevice()
        #expect(unbind.action == .unbind)
        #expect(unbind.address == alveoAddress)
        #expect(unbind.driver == nil)

        testbed.setProperty(FakeAlveo.syspath, "DRIVER", "vfio-pci")
        testbed.uevent(FakeAlveo.syspath, "bind")
        let bind = try await recorder.nextDevice()
        #expect(bind.action == .bind)
        #expect(bind.driver == .vfioPCI)
        #expect(bind.id == alveoID)

        testbed.setProperty(FakeAlveo.syspath, "ERROR_EVENT", "FAILED_RECOVERY")
        testbed.setProperty(FakeAlveo.syspath, "DEVICE_ONLINE", "0")
        testbed.uevent(FakeAlveo.syspath, "change")
        let change = try await recorder.nextDevice()
        #expect(change.action == .change)
        #expect(change.address == alveoAddress)
        #expect(change.errorEvent == .failedRecovery)
        #expect(change.deviceOnline == false)
        #expect(change.driver == .vfioPCI)

        testbed.uevent(FakeAlveo.syspath, "remove")
        let remove = try await recorder.nextDevice()
        testbed.remove(FakeAlveo.syspath)
        #expect(remove.action == .remove)
        #expect(remove.address == alveoAddress)
        #expect(remove.address.description == "0000:01:00.0")
        #expect(remove.id == alveoID)
        #expect(remove.driver == nil)

        let sequence = [add, unbind, bind, change, remove].compactMap(\.sequenceNumber)
        #expect(sequence.count == 5)
        #expect(sequence == sequence.sorted())
    }

    @Test("a new card without PCI_ID gets its ID from sysfs; upper-case names come out lower-case")
    func newDeviceWithSysfsID() async throws {
        let testbed = try Testbed()
        try testbed.add(FakeAlveo.description)
        let monitor = UdevMonitor(logger: InMemoryLogHandler().logger())
        defer { monitor.shutdown() }
        let recorder = StreamRecorder(try monitor.start())
        _ = try await recorder.untilColdplugComplete()

        let syspath = "/sys/devices/pci0000:00/0000:00:01.0/0000:0A:00.0"
        try testbed.add("""
            P: /devices/pci0000:00/0000:00:01.0/0000:0A:00.0
            E: PCI_SLOT_NAME=0000:0A:00.0
            E: SUBSYSTEM=pci
            A: vendor=0x10EE
            A: device=0x9038


            """)
        testbed.uevent(syspath, "add")

        // umockdev may announce the new device itself as well; take the first event for it.
        var found: UdevEvent?
        while found == nil {
            let event = try await recorder.nextDevice()
            if event.syspath == syspath { found = event }
        }
        let card = try #require(found)
        #expect(card.action == .add)
        #expect(!card.isColdplug)
        #expect(card.address.description == "0000:0a:00.0")
        #expect(card.id?.description == "10ee:9038")
        #expect(card.driver == nil)
    }

    @Test("many uevents arrive complete and in order")
    func manyEvents() async throws {
        let testbed = try Testbed()
        try testbed.add(FakeAlveo.description)
        let monitor = UdevMonitor(logger: InMemoryLogHandler().logger())
        defer { monitor.shutdown() }
        let recorder = StreamRecorder(try monitor.start())
        _ = try await recorder.untilColdplugComplete()

        // umockdev's sender aborts the process when its datagram socket is full
        // (net.unix.max_dgram_qlen, 10 by default), so send in small batches.
        let batches = 40, batchSize = 8
        var sequence: [UInt64] = []
        for _ in 0..<batches {
            for _ in 0..<batchSize { testbed.uevent(FakeAlveo.syspath, "change") }
            for _ in 0..<batchSize {
                let event = try await recorder.nextDevice()
                #expect(event.action == .change)
                sequence.append(try #require(event.sequenceNumber))
            }
        }
        #expect(sequence == sequence.sorted())
        #expect(Set(sequence).count == batches * batchSize)
    }

    @Test("an undecodable uevent becomes a logged resync followed by a fresh snapshot")
    func unparsableEvent() async throws {
        let testbed = try Testbed()
        try testbed.add(FakeAlveo.description)
        let logs = InMemoryLogHandler()
        let monitor = UdevMonitor(logger: logs.logger())
        defer { monitor.shutdown() }
        let recorder = StreamRecorder(try monitor.start())
        _ = try await recorder.untilColdplugComplete()

        try testbed.add(FakeAlveo.bogusDescription)
        testbed.uevent(FakeAlveo.bogusSyspath, "add")

        let first = try await recorder.next()
        guard case .resync(.unparsableDevice(let error)) = first else {
            Issue.record("expected a resync, got \(first)")
            return
        }
        #expect(error.syspath == FakeAlveo.bogusSyspath)
        #expect(error.field == "PCI_SLOT_NAME")
        #expect(error.value == "bogus")
        #expect(logs.contains("resync"))

        // The monitor re-reads the bus; the Alveo is reported again as coldplug.
        let (snapshot, count) = try await recorder.untilColdplugComplete()
        #expect(count == 2)
        #expect(snapshot.contains { event in
            if case .device(let device) = event { return device.isColdplug && device.address == alveoAddress }
            return false
        })
    }

    @Test("shutdown joins the thread and finishes the stream; it is idempotent")
    func shutdownJoins() async throws {
        let testbed = try Testbed()
        try testbed.add(FakeAlveo.description)
        let monitor = UdevMonitor(logger: InMemoryLogHandler().logger())
        let recorder = StreamRecorder(try monitor.start())
        _ = try await recorder.untilColdplugComplete()
        #expect(monitor.joinResult == nil)

        monitor.shutdown()
        #expect(monitor.joinResult == 0)
        #expect(await recorder.waitUntilFinished())

        monitor.shutdown()
        #expect(monitor.joinResult == 0)
        #expect(throws: UdevError(.alreadyStarted)) { try monitor.start() }
        withExtendedLifetime(testbed) {}
    }

    @Test("cancelling the consumer stops the thread; shutdown then joins it")
    func cancellation() async throws {
        let testbed = try Testbed()
        try testbed.add(FakeAlveo.description)
        let logs = InMemoryLogHandler()
        let monitor = UdevMonitor(logger: logs.logger())
        let recorder = StreamRecorder(try monitor.start())
        _ = try await recorder.untilColdplugComplete()

        recorder.stopConsuming()  // ends the `for await`, which terminates the stream
        #expect(await recorder.waitUntilFinished())
        let deadline = ContinuousClock.now + .seconds(5)
        while !logs.contains("thread exiting"), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(5))
        }
        #expect(logs.contains("thread exiting"))
        monitor.shutdown()
        #expect(monitor.joinResult == 0)
        withExtendedLifetime(testbed) {}
    }
}
