import InMemoryLogging
import Logging
import PassthroughAgent
import PassthroughConfig
import PassthroughCore
import PassthroughLibvirt
import PassthroughSysfs
import PassthroughSystemd
import PassthroughTestSupport
import PassthroughUdev
import Testing

@Suite("Reflash survival in the daemon")
struct ReflashDaemonTests {
    @Test("AER FAILED_RECOVERY (no hotplug): detach, remove, rescan, rebind and re-attach, no human action")
    func aerFailedRecovery() async throws {
        let rig = try await ReflashRig()
        defer { rig.loop.cancel() }
        rig.cardReturnsOnRescan(as: "10ee:9038")
        rig.bus.dropLink("0000:01:00")   // a real FAILED_RECOVERY: the device no longer answers
        await rig.aer(.failedRecovery)
        try await waitUntil("re-attached with the new ID") {
            rig.bus.sysfs.driver(of: "0000:01:00.0") == "vfio-pci" && rig.notifications(.cardAttached).count >= 2
        }
        #expect(rig.notifications(.cardLost).count == 1)
        #expect(await rig.hypervisor.detachCalls == [ReflashRig.function])
        #expect(rig.bus.rescanCount >= 1)
        #expect(await rig.hypervisor.liveHostdevs(of: "fpga-dev") == [ReflashRig.function])
        #expect(rig.notifications(.cardIDChanged).count == 1)
    }

    @Test("AER FAILED_RECOVERY while the link answers (a guest QEMU paused over the error, or a uevent written by hand): nothing removed, a warning names the guest")
    func failedRecoveryWithTheLinkUp() async throws {
        let rig = try await ReflashRig()
        defer { rig.loop.cancel() }
        await rig.aer(.failedRecovery)
        try await Task.sleep(for: .milliseconds(300))   // a recovery would have removed the card by now

        #expect(rig.removals.isEmpty)
        #expect(rig.bus.rescanCount == 0)
        #expect(rig.notifications(.cardLost).isEmpty)
        #expect(await rig.hypervisor.liveHostdevs(of: "fpga-dev") == [ReflashRig.function])
        let told = try #require(rig.notifications(.errorNotRecovered).first)
        #expect(told.level == .warning)
        #expect(told.metadata[LogMetadataKey.card] == "u200")
        #expect(told.metadata[LogMetadataKey.pciSlot] == "0000:01:00.0")
        #expect("\(told.message)".contains("virsh domstate fpga-dev --reason"))
    }

    @Test("link lost (all-ones reads, the host has neither hotplug nor AER): recovered the same way")
    func linkLost() async throws {
        let rig = try await ReflashRig()
        defer { rig.loop.cancel() }
        rig.bus.dropLink("0000:01:00")
        #expect(LinkProbe(layout: rig.bus.sysfs.layout, io: rig.bus).probe(ReflashRig.function) == .lost(.allOnes))
        rig.cardReturnsOnRescan(as: "10ee:903f")
        await rig.supervisor.cardLost(CardName("u200")!, cause: .linkWatch, reason: "link watch: all-ones")
        try await waitUntil("re-attached") { rig.notifications(.cardAttached).count >= 2 }
        #expect(rig.notifications(.cardLost).count == 1)
        #expect(rig.bus.sysfs.driver(of: "0000:01:00.0") == "vfio-pci")
    }

    @Test("a card that never comes back: a clear notification after recovery-timeout, and the host is fine")
    func neverReturns() async throws {
        let rig = try await ReflashRig()
        defer { rig.loop.cancel() }
        await rig.supervisor.cardLost(CardName("u200")!, cause: .aer, reason: "test")
        try await waitUntil("gave up") { !rig.notifications(.recoveryGaveUp).isEmpty }
        let gaveUp = try #require(rig.notifications(.recoveryGaveUp).first)
        #expect(gaveUp.metadata[LogMetadataKey.card] == "u200")
        #expect(await rig.supervisor.summary == "u200: absent")
        // Still watching: the card coming back later (a hotplug add) is taken back as usual.
        ReflashRig.plugCard(rig.bus.sysfs, id: "10ee:903f")
        await rig.added()
        try await waitUntil("re-attached after it returned") {
            await rig.hypervisor.liveHostdevs(of: "fpga-dev") == [ReflashRig.function]
        }
    }

    @Test("reflash --prepare / --finish with the guard: bits cleared while off the bus, restored after")
    func prepareAndFinish() async throws {
        let rig = try await ReflashRig(extraConfig: "reflash-guard = true")
        defer { rig.loop.cancel() }
        #expect(try rig.portBits() == (true, true))
        let prepared = try await rig.supervisor.reflash(CardName("u200")!, .prepare)
        #expect(prepared.contains("reflash u200 --finish"))
        #expect(!rig.bus.sysfs.exists("bus/pci/devices/0000:01:00.0"))
        #expect(try rig.portBits() == (false, false))
        #expect(await rig.hypervisor.liveHostdevs(of: "fpga-dev").isEmpty)
        #expect(await rig.supervisor.summary == "u200: off the bus for a reflash (fatal-error reporting masked on 0000:00:01.0)")
        #expect(rig.notifications(.cardVanished).isEmpty)

        rig.cardReturnsOnRescan(as: "10ee:9038")
        let finished = try await rig.supervisor.reflash(CardName("u200")!, .finish)
        #expect(finished.hasPrefix("u200 is back: 0000:01:00.0 10ee:9038"))
        #expect(try rig.portBits() == (true, true))
        try await waitUntil("re-attached") { await rig.hypervisor.liveHostdevs(of: "fpga-dev") == [ReflashRig.function] }
    }

    @Test("reflash --prepare and nobody finishes within recovery-timeout: one notification, the card stays held")
    func hostPrepareNotFinished() async throws {
        let rig = try await ReflashRig(recoveryTimeout: "1s")
        defer { rig.loop.cancel() }
        _ = try await rig.supervisor.reflash(ReflashRig.card, .prepare)
        try await waitUntil("reminded") { !rig.notifications(.reflashNotFinished).isEmpty }
        let reminder = try #require(rig.notifications(.reflashNotFinished).first)
        #expect("\(reminder.message)" == "u200 has been off the bus for a reflash (0000:01:00) for 1s and nobody finished it; "
            + "it stays off: once the FPGA is programmed, run `passthrough-agent reflash u200 --finish`")
        #expect(reminder.metadata[LogMetadataKey.pciSlot] == "0000:01:00")
        #expect(!rig.onBus())
        try await Task.sleep(for: .milliseconds(1500))
        #expect(rig.notifications(.reflashNotFinished).count == 1)
    }

    @Test("link-watch follows a reload: turned on by SIGHUP, the next dead link is recovered")
    func linkWatchReload() async throws {
        let rig = try await ReflashRig()
        defer { rig.loop.cancel() }
        rig.bus.dropLink("0000:01:00")
        try await Task.sleep(for: .milliseconds(200))
        #expect(rig.notifications(.cardLost).isEmpty)
        rig.cardReturnsOnRescan(as: "10ee:903f")
        let watched = try ReflashRig.config("link-watch = \"100ms\"")
        await rig.supervisor.reload(watched)
        try await waitUntil("lost, recovered and re-attached") {
            rig.notifications(.cardLost).count == 1 && rig.notifications(.cardAttached).count >= 2
        }
        #expect(rig.bus.sysfs.driver(of: "0000:01:00.0") == "vfio-pci")
    }

    @Test("a loss while the loop's attach is in flight: nothing is removed until the attach is over, then the recovery takes the card back")
    func lossDuringAnAttach() async throws {
        let rig = try await ReflashRig()
        defer { rig.loop.cancel() }
        try await rig.attachInFlight()

        rig.bus.dropLink("0000:01:00")
        rig.cardReturnsOnRescan(as: "10ee:903f")
        await rig.supervisor.cardLost(ReflashRig.card, cause: .linkWatch, reason: "link watch: all-ones")
        try await Task.sleep(for: .milliseconds(300))   // a recovery that did not wait would have removed it by now
        // Removing a function while the guest is being handed it: the real kernel blocks in the remove.
        #expect(rig.removals.isEmpty)
        #expect(await rig.hypervisor.detachCalls.isEmpty)

        await rig.hypervisor.unhang(.attach)
        try await waitUntil("recovered and re-attached") {
            await rig.hypervisor.liveHostdevs(of: "fpga-dev") == [ReflashRig.function] && rig.bus.rescanCount >= 1
                && rig.bus.sysfs.driver(of: "0000:01:00.0") == "vfio-pci" && rig.notifications(.cardAttached).count == 3
        }
        #expect(rig.notifications(.cardLost).count == 1)
        #expect(rig.removals.count == 1)
        #expect(rig.notifications(.stepFailed).isEmpty)
    }

    @Test("reflash --prepare while the loop's attach is in flight: the take-off waits for it, then detaches and removes the card")
    func prepareDuringAnAttach() async throws {
        let rig = try await ReflashRig()
        defer { rig.loop.cancel() }
        try await rig.attachInFlight()

        let prepare = Task { try await rig.supervisor.reflash(ReflashRig.card, .prepare) }
        try await Task.sleep(for: .milliseconds(300))
        #expect(rig.onBus())
        await rig.hypervisor.unhang(.attach)
        let prepared = try await prepare.value
        #expect(prepared.contains("reflash u200 --finish"))
        #expect(!rig.onBus())
        #expect(await rig.hypervisor.liveHostdevs(of: "fpga-dev").isEmpty)
        #expect(await rig.hypervisor.attachCalls.count == 2)   // the loop stopped after its attach: nothing more
    }

    @Test("reflash --prepare while the loop's attach is in flight, then the client hangs up: nothing is detached or removed")
    func prepareCancelledWhileWaiting() async throws {
        let rig = try await ReflashRig()
        defer { rig.loop.cancel() }
        try await rig.attachInFlight()

        let prepare = Task { try await rig.supervisor.reflash(ReflashRig.card, .prepare) }
        try await Task.sleep(for: .milliseconds(200))
        prepare.cancel()   // Ctrl-C on `reflash --prepare`
        await rig.hypervisor.unhang(.attach)
        await #expect(throws: (any Error).self) { try await prepare.value }
        try await waitUntil("attached, the take-off abandoned") { await rig.isBackInItsGuest() }
        #expect(await rig.hypervisor.detachCalls.isEmpty)
        #expect(rig.removals.isEmpty)
    }

    @Test("a card taken off the bus while the loop awaits another card's step stays held: the pass's earlier bus scan does not bring it back")
    func heldDuringAnotherCardsStep() async throws {
        let rig = try await ReflashRig(secondCard: true)
        defer { rig.loop.cancel() }
        try await rig.attachInFlight(alongside: [ReflashRig.secondCard])   // one pass: u200, then u250

        let prepared = try await rig.supervisor.reflash(ReflashRig.secondCard, .prepare)
        #expect(prepared.contains("reflash u250 --finish"))
        #expect(!rig.onBus(ReflashRig.secondFunction))
        await rig.hypervisor.unhang(.attach)
        try await waitUntil("u200 attached") { await rig.isBackInItsGuest() }
        try await Task.sleep(for: .milliseconds(300))   // the pass goes on to u250, then the next one
        #expect(await rig.supervisor.summary.hasSuffix("u250: off the bus for a reflash"))
        #expect(!rig.onBus(ReflashRig.secondFunction))
    }

    @Test("status over the control socket's handler: the daemon's live view of each card")
    func liveStatus() async throws {
        let rig = try await ReflashRig()
        defer { rig.loop.cancel() }
        let response = await AgentDaemon.answer(.status(card: nil), supervisor: rig.supervisor)
        #expect(response.ok)
        #expect(response.cards == [ControlCardStatus(name: "u200", state: "u200: attached to fpga-dev")])
        let unknown = await AgentDaemon.answer(.reflashPrepare(card: CardName("u250")!), supervisor: rig.supervisor)
        #expect(!unknown.ok)
        #expect(unknown.error?.contains("no card named u250") == true)
    }
}
