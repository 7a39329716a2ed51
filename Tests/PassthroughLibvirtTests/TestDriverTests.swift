import CLibvirt
import Logging
import PassthroughCore
@testable import PassthroughLibvirt
import PassthroughTestSupport
import Testing

/// Against libvirt's in-process `test:///default` driver. Every connection in this process shares its one
/// instance, and the event loop is process-wide, so these run one at a time and leave "test" running.
@Suite(.serialized, .timeLimit(.minutes(1)))
struct TestDriverTests {
    static let uri = "test:///default"

    /// A connected hypervisor plus a raw connection for driving the test driver (it has no API for that here).
    struct Harness {
        let hypervisor: ReconnectingHypervisor
        let recorder: StreamRecorder<HypervisorEvent>
        let runner: Task<Void, Never>
        let control: OpaquePointer

        init() async throws {
            hypervisor = ReconnectingHypervisor(
                connector: LibvirtConnector(uri: TestDriverTests.uri),
                logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
            recorder = StreamRecorder(hypervisor.events)
            let hypervisor = hypervisor
            runner = Task { await hypervisor.run() }
            try await recorder.wait(for: .connected)
            // Opened only now: the event loop has been registered by the connector.
            control = try #require(virConnectOpen(TestDriverTests.uri))
        }

        /// Runs a test-driver action; blocking is fine here, the call is in-process and instant.
        func domain(_ name: String, _ action: (OpaquePointer) -> Int32) throws {
            let domain = try #require(virDomainLookupByName(control, name))
            defer { virDomainFree(domain) }
            #expect(action(domain) == 0, "\(LibvirtError.last(operation: "test action"))")
        }

        func stop() async {
            virConnectClose(control)
            runner.cancel()
            await runner.value
        }
    }

    let test = GuestName("test")!

    @Test func lifecycleEventsArriveForDestroyCreateSuspendResume() async throws {
        let harness = try await Harness()
        try harness.domain("test") { virDomainDestroy($0) }
        try await harness.recorder.wait(for: .lifecycle(guest: "test", .stopped(.destroyed)))
        try harness.domain("test") { virDomainCreate($0) }
        try await harness.recorder.wait(for: .lifecycle(guest: "test", .started))
        try harness.domain("test") { virDomainSuspend($0) }
        try await harness.recorder.wait(for: .lifecycle(guest: "test", .suspended))
        try harness.domain("test") { virDomainResume($0) }
        try await harness.recorder.wait(for: .lifecycle(guest: "test", .resumed))

        #expect(harness.recorder.events == [
            .connected, .resync,
            .lifecycle(guest: "test", .stopped(.destroyed)), .lifecycle(guest: "test", .started),
            .lifecycle(guest: "test", .suspended), .lifecycle(guest: "test", .resumed),
        ])
        await harness.stop()
    }

    @Test func guestStateFollowsTheDomain() async throws {
        let harness = try await Harness()
        #expect(try await harness.hypervisor.guestState(test) == .running)
        try harness.domain("test") { virDomainSuspend($0) }
        #expect(try await harness.hypervisor.guestState(test) == .paused)
        try harness.domain("test") { virDomainDestroy($0) }
        #expect(try await harness.hypervisor.guestState(test) == .shutOff)
        try harness.domain("test") { virDomainCreate($0) }
        #expect(try await harness.hypervisor.guestState(test) == .running)
        #expect(try await harness.hypervisor.guestState(GuestName("no-such-guest")!) == .absent)
        await harness.stop()
    }

    @Test func attachAndDetachAreUnsupportedOnTheTestDriverAndSurfaceAsTypedErrors() async throws {
        let harness = try await Harness()
        let address = try #require(PCIAddress("0000:01:00.0"))
        for operation in ["attach", "detach"] {
            do {
                if operation == "attach" {
                    try await harness.hypervisor.attach(address, to: test)
                } else {
                    try await harness.hypervisor.detach(address, from: test)
                }
                Issue.record("\(operation) unexpectedly succeeded")
            } catch let error as LibvirtError {
                #expect(error.isNotSupported)
                #expect(error.code == Int32(VIR_ERR_NO_SUPPORT.rawValue))
                #expect(error.message.contains("not supported"))
            }
        }
        await harness.stop()
    }

    /// The test driver has no hot-plug: the request channel's hot-add fails with libvirt's own "not supported"
    /// (not taken for a missing controller), and the live XML reads as having no channel.
    @Test func requestChannelIsAbsentAndItsHotAddUnsupportedOnTheTestDriver() async throws {
        let harness = try await Harness()
        #expect(try await harness.hypervisor.requestChannel(of: test) == .absent)
        do {
            try await harness.hypervisor.addRequestChannel(to: test)
            Issue.record("hot-add unexpectedly succeeded")
        } catch let error as LibvirtError {
            #expect(error.isNotSupported)
            #expect(error.operation == "virDomainAttachDeviceFlags")
        }
        #expect(try await harness.hypervisor.requestChannel(of: test) == .absent)
        await #expect(throws: LibvirtError.self) {
            _ = try await harness.hypervisor.requestChannel(of: GuestName("no-such-guest")!)
        }
        await harness.stop()
    }

    /// A channel the host owner put into the definition is read from the live XML.
    @Test func requestChannelComesFromTheLiveXML() async throws {
        let harness = try await Harness()
        let path = "/var/lib/libvirt/qemu/channel/target/domain-9-chan-guest/org.passthrough-agent.0"
        let xml = """
            <domain type='test'><name>chan-guest</name><memory>1048576</memory>
            <os><type>hvm</type></os><devices><controller type='virtio-serial' index='0'/>
            <channel type='unix'><source mode='bind' path='\(path)'/>
            <target type='virtio' name='org.passthrough-agent.0'/></channel></devices></domain>
            """
        let defined = try #require(virDomainDefineXML(harness.control, xml), "\(LibvirtError.last(operation: "define"))")
        virDomainFree(defined)
        try harness.domain("chan-guest") { virDomainCreate($0) }
        let guest = try #require(GuestName("chan-guest"))
        #expect(try await harness.hypervisor.requestChannel(of: guest) == .listening(socketPath: path))
        try harness.domain("chan-guest") { virDomainDestroy($0) }
        try harness.domain("chan-guest") { virDomainUndefine($0) }
        await harness.stop()
    }

    @Test func lookupErrorsCarryLibvirtsCodeDomainAndMessage() async throws {
        let harness = try await Harness()
        do {
            _ = try await harness.hypervisor.hostdevs(of: GuestName("no-such-guest")!)
            Issue.record("expected no-domain")
        } catch let error as LibvirtError {
            #expect(error.isNoDomain)
            #expect(error.domain == Int32(VIR_FROM_TEST.rawValue), "the test driver reports its own error domain")
            #expect(error.operation == "virDomainLookupByName")
            #expect(!error.message.isEmpty)
        }
        await harness.stop()
    }

    @Test func hostdevsComeFromTheLiveXML() async throws {
        let harness = try await Harness()
        // The default domain has PCI addresses (its disk, NIC, balloon) but no host devices.
        #expect(try await harness.hypervisor.hostdevs(of: test) == [])

        let address = try #require(PCIAddress("0000:65:00.0"))
        let xml = """
            <domain type='test'><name>fpga-guest</name><memory>1048576</memory>
            <os><type>hvm</type></os><devices>\(HostdevXML.pci(address))</devices></domain>
            """
        let defined = try #require(virDomainDefineXML(harness.control, xml), "\(LibvirtError.last(operation: "define"))")
        virDomainFree(defined)
        try harness.domain("fpga-guest") { virDomainCreate($0) }
        try await harness.recorder.wait(for: .lifecycle(guest: "fpga-guest", .started))

        let guest = try #require(GuestName("fpga-guest"))
        #expect(try await harness.hypervisor.hostdevs(of: guest).map(\.address) == [address])
        #expect(try await harness.hypervisor.guestState(guest) == .running)

        try harness.domain("fpga-guest") { virDomainDestroy($0) }
        try harness.domain("fpga-guest") { virDomainUndefine($0) }
        try await harness.recorder.wait(for: .lifecycle(guest: "fpga-guest", .undefined))
        #expect(harness.recorder.events.contains(.lifecycle(guest: "fpga-guest", .defined)))
        #expect(try await harness.hypervisor.guestState(guest) == .absent)
        await harness.stop()
    }

    @Test func guestsHoldingListsEveryDomainWithAProcessWhoseLiveXMLHasTheFunction() async throws {
        let harness = try await Harness()
        let held = try #require(PCIAddress("0000:65:00.0"))
        let other = try #require(PCIAddress("0000:66:00.0"))
        func define(_ name: String) throws {
            let xml = """
                <domain type='test'><name>\(name)</name><memory>1048576</memory>
                <os><type>hvm</type></os><devices>\(HostdevXML.pci(held))</devices></domain>
                """
            let defined = try #require(virDomainDefineXML(harness.control, xml), "\(LibvirtError.last(operation: "define"))")
            virDomainFree(defined)
        }
        // "holder" runs with the function; "idle" lists it too but never starts; "test" runs without it.
        try define("holder")
        try define("idle")
        try harness.domain("holder") { virDomainCreate($0) }
        let holder = try #require(GuestName("holder"))

        #expect(try await harness.hypervisor.guestsHolding([held, other]) == [holder: [held]])
        #expect(try await harness.hypervisor.guestsHolding([other]) == [:])
        #expect(try await harness.hypervisor.guestsHolding([]) == [:])

        // Paused, its QEMU still holds the card.
        try harness.domain("holder") { virDomainSuspend($0) }
        #expect(try await harness.hypervisor.guestsHolding([held]) == [holder: [held]])

        try harness.domain("holder") { virDomainDestroy($0) }
        #expect(try await harness.hypervisor.guestsHolding([held]) == [:])

        for name in ["holder", "idle"] { try harness.domain(name) { virDomainUndefine($0) } }
        await harness.stop()
    }

    @Test func anUnopenableURIIsATypedErrorAndAnOutage() async throws {
        let connector = LibvirtConnector(uri: "test:///nonexistent/passthrough-agent-test.xml")
        let (_, signals) = AsyncStream.makeStream(of: SessionSignal.self)
        await #expect(throws: LibvirtError.self) { _ = try await connector.connect(signals: signals) }

        let hypervisor = ReconnectingHypervisor(
            connector: connector, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }),
            sleep: { _ in try await Task.sleep(for: .seconds(60)) })
        let recorder = StreamRecorder(hypervisor.events)
        let runner = Task { await hypervisor.run() }
        try await recorder.wait(for: "an outage") { $0.count == 1 }
        guard case .disconnected(let reason)? = recorder.events.first else {
            Issue.record("expected disconnected, saw \(recorder.events)")
            return
        }
        #expect(reason.contains("virConnectOpen"))
        runner.cancel()
        await runner.value
    }

    @Test func aNULInTheURIIsRefusedBeforeLibvirt() async {
        let (_, signals) = AsyncStream.makeStream(of: SessionSignal.self)
        await #expect(throws: LibvirtError.invalidArgument("URI contains a NUL byte", operation: "virConnectOpen")) {
            _ = try await LibvirtConnector(uri: "test:///default\u{0}x").connect(signals: signals)
        }
    }

    @Test func aClosedSessionDeregistersItsCallbacksAndRefusesCalls() async throws {
        let (signals, sink) = AsyncStream.makeStream(of: SessionSignal.self, bufferingPolicy: .unbounded)
        let session = try await LibvirtConnector(uri: Self.uri).connect(signals: sink)
        try await session.registerEventCallbacks()
        let control = try #require(virConnectOpen(Self.uri))
        defer { virConnectClose(control) }
        let domain = try #require(virDomainLookupByName(control, "test"))
        defer { virDomainFree(domain) }
        var iterator = signals.makeAsyncIterator()

        #expect(virDomainSuspend(domain) == 0)
        #expect(await iterator.next() == .event(.lifecycle(guest: "test", .suspended)))
        await session.close()
        await session.close()  // idempotent
        #expect(virDomainResume(domain) == 0)
        // Give a wrongly surviving callback time to fire before looking.
        try await Task.sleep(for: .milliseconds(200))
        sink.finish()
        #expect(await iterator.next() == nil, "no event after close")

        do {
            _ = try await session.guestState(test)
            Issue.record("a closed session answered")
        } catch let error as LibvirtError {
            #expect(error.isConnectionLost)
        }
    }

    @Test func theEventLoopStopsPromptlyAndRestarts() async throws {
        let harness = try await Harness()
        let started = ContinuousClock.now
        LibvirtEventLoop.shared.stop()
        #expect(ContinuousClock.now - started < .milliseconds(900), "stop should not wait out a full tick")
        #expect(!LibvirtEventLoop.shared.isRunning)
        try LibvirtEventLoop.shared.start()
        #expect(LibvirtEventLoop.shared.isRunning)
        try harness.domain("test") { virDomainSuspend($0) }
        try harness.domain("test") { virDomainResume($0) }
        try await harness.recorder.wait(for: .lifecycle(guest: "test", .resumed))
        await harness.stop()
    }
}
