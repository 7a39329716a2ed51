import InMemoryLogging
import Logging
import PassthroughAgent
import PassthroughConfig
import PassthroughCore
import PassthroughLibvirt
import PassthroughSystemd
import PassthroughTestSupport
import PassthroughUdev
import Synchronization
import Testing

private let f0 = PCIAddress("0000:01:00.0")!
private let f1 = PCIAddress("0000:01:00.1")!

@Suite("The daemon keeps the card where it belongs")
struct CardSupervisorTests {
    @Test("guest running: every function rebound to vfio-pci and attached, each step notified")
    func guestRunning() async throws {
        let fixture = try await DaemonFixture.make(guest: .running)
        await fixture.pass()
        #expect(fixture.driver("0000:01:00.0") == "vfio-pci")
        #expect(fixture.driver("0000:01:00.1") == "vfio-pci")
        #expect(await fixture.hypervisor.liveHostdevs(of: "fpga-dev") == [f0, f1])
        #expect(fixture.notifications(.cardRebound).count == 2)
        let attached = fixture.notifications(.cardAttached)
        #expect(attached.count == 2)
        #expect(attached.first?.metadata[LogMetadataKey.card] == "u200")
        #expect(attached.first?.metadata[LogMetadataKey.guest] == "fpga-dev")
        #expect(attached.first?.metadata[LogMetadataKey.pciSlot] == "0000:01:00.0")
        #expect(attached.first?.metadata[LogMetadataKey.durationMicroseconds] != nil)
        let rebound = try #require(fixture.notifications(.cardRebound).first)
        #expect(rebound.metadata[LogMetadataKey.driverFrom] == "xdma")
        #expect(rebound.metadata[LogMetadataKey.driverTo] == "vfio-pci")
        #expect(await fixture.supervisor.summary == "u200: attached to fpga-dev")
    }

    @Test("guest stops: the card goes back to its host driver; starts again: re-attached")
    func guestStopsAndStarts() async throws {
        let fixture = try await DaemonFixture.make(guest: .running)
        await fixture.pass()
        await fixture.hypervisor.define("fpga-dev", state: .shutOff)
        await fixture.supervisor.handle(.lifecycle(guest: "fpga-dev", .stopped(.shutdown)))
        await fixture.supervisor.pass()
        #expect(fixture.driver("0000:01:00.0") == "xdma")
        #expect(fixture.driver("0000:01:00.1") == "xdma")
        #expect(fixture.notifications(.cardGivenBack).count == 2)
        #expect(await fixture.supervisor.summary == "u200: on the host")

        await fixture.hypervisor.define("fpga-dev", state: .running)
        await fixture.supervisor.handle(.lifecycle(guest: "fpga-dev", .started))
        await fixture.supervisor.pass()
        #expect(await fixture.hypervisor.liveHostdevs(of: "fpga-dev") == [f0, f1])
    }

    @Test("a failed give-back is retried at its backoff, never earlier: its own bind/unbind uevents do not flap the host driver")
    func noRetryStorm() async throws {
        var options = CardSupervisor.Options.fast
        // Long enough that the five passes below end before it even on a loaded machine.
        options.backoff = Backoff(initial: .seconds(3), multiplier: 2, cap: .seconds(30))!
        let fixture = try await DaemonFixture.make(config: DaemonFixture.alveo + "\nhost-driver = \"xdma\"\n",
                                                   guest: .running, options: options)
        await fixture.pass()
        #expect(fixture.driver("0000:01:00.0") == "vfio-pci")
        // The guest stops, and xdma refuses the card: the give-back fails and is rolled back.
        fixture.bus.failProbes(of: "xdma")
        await fixture.hypervisor.define("fpga-dev", state: .shutOff)
        await fixture.supervisor.handle(.lifecycle(guest: "fpga-dev", .stopped(.shutdown)))
        let failedAt = ContinuousClock.now
        await fixture.supervisor.pass()
        #expect(fixture.notifications(.stepFailed).count == 1)
        let unbinds = { fixture.bus.writes.filter { $0.path.hasSuffix("/unbind") }.count }
        let afterFailure = unbinds()
        // The failed move's own uevents (and anything else) arrive; passes run; nothing is touched.
        for action in [UdevAction.unbind, .bind, .unbind, .bind, .change] {
            await fixture.supervisor.handle(fixture.uevent(action, "0000:01:00.0", id: "10ee:903f"))
            await fixture.supervisor.pass()
        }
        #expect(unbinds() == afterFailure)
        #expect(fixture.notifications(.stepFailed).count == 1)
        // At its retry time it is tried again, and not before.
        try await waitUntil("retried") {
            await fixture.supervisor.handle(fixture.uevent(.change, "0000:01:00.0", id: "10ee:903f"))
            await fixture.supervisor.pass()
            return unbinds() > afterFailure
        }
        #expect(ContinuousClock.now - failedAt >= .seconds(3))
        #expect(fixture.driver("0000:01:00.0") == "vfio-pci")
    }

    @Test("a reload that adds a card moves it: driver moves claim what the configuration in force names")
    func reloadAdds() async throws {
        let fixture = try await DaemonFixture.make(config: "")
        let loop = Task { await fixture.supervisor.run() }
        defer { loop.cancel() }
        await fixture.supervisor.reload(try ConfigLoader.parse(DaemonFixture.alveo, path: "config.toml"))
        try await waitUntil("attached") { await fixture.supervisor.summary == "u200: attached to fpga-dev" }
        #expect(fixture.driver("0000:01:00.0") == "vfio-pci")
    }

    @Test("a reload that drops a dirty card forgets it: no pass for it, and the loop goes idle")
    func reloadPrunes() async throws {
        let fixture = try await DaemonFixture.make(guest: .running)
        let summaries = Mutex<[String]>([])
        let loop = Task { await fixture.supervisor.run { summary, _ in summaries.withLock { $0.append(summary) } } }
        defer { loop.cancel() }
        await fixture.supervisor.markAllDirty()
        try await waitUntil("attached") { await fixture.supervisor.summary == "u200: attached to fpga-dev" }
        await fixture.supervisor.markDirty([CardName("u200")!])
        await fixture.supervisor.reload(AgentConfig(cards: []))
        // A pass already under way may still end; then none follows: 300 ms without one, before the timeout.
        var seen = summaries.withLock { $0.count }
        try await waitUntil("the loop goes idle (passes keep running for a card that is gone)") {
            try? await Task.sleep(for: .milliseconds(300))
            let now = summaries.withLock { $0.count }
            defer { seen = now }
            return now == seen
        }
        #expect(await !fixture.supervisor.isDirty(CardName("u200")!))
        #expect(await fixture.supervisor.state(of: CardName("u200")!) == nil)
    }

    @Test("when-guest-stops = keep: a stopped guest's card stays on vfio-pci")
    func keepPolicy() async throws {
        let fixture = try await DaemonFixture.make(config: DaemonFixture.alveo + "\nwhen-guest-stops = \"keep\"\n", guest: .shutOff)
        await fixture.pass()
        #expect(fixture.driver("0000:01:00.0") == "vfio-pci")
        #expect(await fixture.hypervisor.attachCalls.isEmpty)
    }

    @Test("reflash with a new ID: vanished, then back on xdma with another ID -> rebound and re-attached")
    func reflashNewID() async throws {
        let fixture = try await DaemonFixture.make(guest: .running)
        await fixture.pass()
        // The card drops off the link: QEMU releases it, the kernel removes both functions.
        await fixture.hypervisor.unplug(f0, from: "fpga-dev")
        await fixture.hypervisor.unplug(f1, from: "fpga-dev")
        fixture.bus.sysfs.removeFunction("0000:01:00.0")
        fixture.bus.sysfs.removeFunction("0000:01:00.1")
        await fixture.supervisor.handle(fixture.uevent(.remove, "0000:01:00.0"))
        await fixture.supervisor.pass()
        #expect(fixture.notifications(.cardVanished).count == 1)
        #expect(await fixture.supervisor.summary == "u200: absent")

        // It comes back with a new bitstream: one function, a new ID, and xdma grabs it at once.
        fixture.bus.sysfs.addFunction("0000:01:00.0", id: "10ee:9048", driver: "xdma", iommuGroup: 5, below: "0000:00:01.0")
        await fixture.supervisor.handle(fixture.uevent(.add, "0000:01:00.0", id: "10ee:9048"))
        await fixture.supervisor.handle(fixture.uevent(.bind, "0000:01:00.0", id: "10ee:9048", driver: "xdma"))
        await fixture.supervisor.pass()
        #expect(fixture.driver("0000:01:00.0") == "vfio-pci")
        #expect(await fixture.hypervisor.liveHostdevs(of: "fpga-dev") == [f0])
        #expect(fixture.notifications(.cardAppeared).count == 2)
        let changed = try #require(fixture.notifications(.cardIDChanged).first)
        #expect(changed.message.description.contains("10ee:9038,10ee:903f -> 10ee:9048"))
    }

    @Test("an attach that fails is retried with backoff, each attempt logged, until it works")
    func attachRetry() async throws {
        let fixture = try await DaemonFixture.make(guest: .running)
        await fixture.hypervisor.failAttaches(2)
        let loop = Task { await fixture.supervisor.run() }
        defer { loop.cancel() }
        await fixture.supervisor.markAllDirty()
        try await waitUntil("attached after two failed tries") { await fixture.hypervisor.liveHostdevs(of: "fpga-dev").count >= 2 }
        #expect(await fixture.hypervisor.liveHostdevs(of: "fpga-dev") == [f0, f1])
        #expect(fixture.notifications(.stepFailed).count == 2)
        let retries = fixture.notifications(.retry)
        #expect(retries.map { $0.metadata[LogMetadataKey.attempt] } == ["1", "2"])
    }

    @Test("libvirt reconnects (libvirtd restarted): full resync, no duplicate attach")
    func resyncNoDuplicate() async throws {
        let fixture = try await DaemonFixture.make(guest: .running)
        await fixture.pass()
        let writes = fixture.bus.writes.count
        await fixture.supervisor.handle(.disconnected(reason: "EOF"))
        await fixture.supervisor.handle(.connected)
        await fixture.supervisor.handle(.resync)
        await fixture.supervisor.pass()
        #expect(await fixture.hypervisor.attachCalls.count == 2)
        #expect(fixture.bus.writes.count == writes)
        #expect(fixture.notifications(.resync).count == 1)
    }

    @Test("libvirt unreachable: the card is left exactly where it is")
    func libvirtDown() async throws {
        let fixture = try await DaemonFixture.make(guest: .running)
        await fixture.hypervisor.setReachable(false)
        await fixture.pass()
        #expect(fixture.bus.writes.isEmpty)
        #expect(fixture.driver("0000:01:00.0") == "xdma")
    }

    @Test("lost, duplicated and reordered events do not matter: only the observation does")
    func eventsOnlyMarkDirty() async throws {
        let fixture = try await DaemonFixture.make(guest: .running)
        await fixture.pass()
        let writes = fixture.bus.writes.count
        var events: [UdevMonitorEvent] = [
            fixture.uevent(.add, "0000:01:00.0", id: "10ee:903f"), fixture.uevent(.remove, "0000:01:00.1"),
            fixture.uevent(.unbind, "0000:01:00.0"), fixture.uevent(.bind, "0000:01:00.0", driver: "vfio-pci"),
            fixture.uevent(.change, "0000:01:00.1"),
        ]
        events += events
        for event in events.shuffled() { await fixture.supervisor.handle(event) }
        await fixture.supervisor.handle(.lifecycle(guest: "fpga-dev", .started))
        await fixture.supervisor.pass()
        #expect(fixture.bus.writes.count == writes)
        #expect(await fixture.hypervisor.attachCalls.count == 2)
    }

    @Test("uevents of devices no card claims do not wake the reconciler")
    func unrelatedDevices() async throws {
        let fixture = try await DaemonFixture.make(guest: .running)
        await fixture.supervisor.handle(fixture.uevent(.add, "0000:03:00.0", id: "8086:10d3"))
        await fixture.supervisor.handle(fixture.uevent(.remove, "0000:00:1f.3"))
        #expect(await !fixture.supervisor.isDirty(CardName("u200")!))
        await fixture.supervisor.handle(fixture.uevent(.remove, "0000:01:00.1"))
        #expect(await fixture.supervisor.isDirty(CardName("u200")!))
    }

    @Test("dry run: the plan is logged, nothing is touched")
    func dryRun() async throws {
        var options = CardSupervisor.Options.fast
        options.dryRun = true
        let fixture = try await DaemonFixture.make(guest: .running, options: options)
        await fixture.pass()
        #expect(fixture.bus.writes.isEmpty)
        #expect(await fixture.hypervisor.attachCalls.isEmpty)
        #expect(fixture.logs.entries.contains { $0.message.description.hasPrefix("plan: u200: bind to vfio-pci") })
    }

    @Test("the first pass waits for udev coldplug and libvirt's first answer")
    func readinessWaitsForSources() async throws {
        let fixture = try await DaemonFixture.make(guest: .running, waitingFor: [.udev, .libvirt])
        let passes = Mutex<[Bool]>([])
        let loop = Task { await fixture.supervisor.run { _, isFirst in passes.withLock { $0.append(isFirst) } } }
        defer { loop.cancel() }
        await fixture.supervisor.handle(.coldplugComplete(count: 5))
        try await Task.sleep(for: .milliseconds(50))
        #expect(passes.withLock { $0.isEmpty })
        #expect(fixture.bus.writes.isEmpty)
        await fixture.supervisor.handle(.resync)
        try await waitUntil("the first pass") { passes.withLock { !$0.isEmpty } }
        #expect(passes.withLock { $0.first } == true)
        #expect(fixture.driver("0000:01:00.0") == "vfio-pci")
    }

    @Test("a stuck pass stops feeding the watchdog; cancelling leaves the card on a driver")
    func stuckPass() async throws {
        var options = CardSupervisor.Options.fast
        options.stuckAfter = .milliseconds(50)
        let fixture = try await DaemonFixture.make(guest: .running, options: options)
        await fixture.hypervisor.hang(.attach)
        #expect(await fixture.supervisor.heartbeat())
        let loop = Task { await fixture.supervisor.run() }
        await fixture.supervisor.markAllDirty()
        try await waitUntil("the attach in flight") { await !fixture.hypervisor.attachCalls.isEmpty }
        try await Task.sleep(for: .milliseconds(100))
        #expect(await !fixture.supervisor.heartbeat())
        loop.cancel()
        #expect(fixture.driver("0000:01:00.0") == "vfio-pci")
    }
}

@Suite("Reloading the configuration")
struct ConfigReloadTests {
    @Test("an invalid new config is logged and the old one kept; a valid one is taken")
    func reload() throws {
        let bus = readyHost()
        bus.sysfs.writeFileCreatingDirectories("etc/config.toml", "[[card]]\nname = \"u200\"\naddress = \"zz\"\nguest = \"vm\"\n")
        let path = bus.sysfs.root.appending("etc/config.toml").string
        let logs = InMemoryLogHandler()
        let logger = Logger(label: "test") { _ in logs }
        #expect(AgentDaemon.reloadedConfig(path: path, running: AgentConfig(), logger: logger) == nil)
        let rejected = try #require(logs.entries.last)
        #expect(rejected.metadata[LogMetadataKey.messageID] == .string(NotificationKind.configRejected.messageID.rawValue))
        #expect(rejected.message.description.contains("\(path):3:11"))

        bus.sysfs.writeFile("etc/config.toml", DaemonFixture.alveo)
        #expect(AgentDaemon.reloadedConfig(path: path, running: AgentConfig(), logger: logger)?.cards.count == 1)
        #expect(logs.entries.last?.metadata[LogMetadataKey.messageID] == .string(NotificationKind.configReloaded.messageID.rawValue))
    }
}

@Suite("plan")
struct PlanPreviewTests {
    @Test("plan lists the steps the daemon would take, and nothing once converged")
    func preview() async throws {
        let fixture = try await DaemonFixture.make(guest: .running)
        let before = try await PlanPreview.compute(config: fixture.config, host: fixture.bus.host, hypervisor: fixture.hypervisor)
        #expect(before.steps.map { "\($0.card) \($0.action) \($0.address ?? "-")" } == [
            "u200 bind-vfio -", "u200 attach 0000:01:00.0", "u200 attach 0000:01:00.1",
        ])
        #expect(fixture.bus.writes.isEmpty)
        await fixture.pass()
        let after = try await PlanPreview.compute(config: fixture.config, host: fixture.bus.host, hypervisor: fixture.hypervisor)
        #expect(after.steps.isEmpty)
    }
}
