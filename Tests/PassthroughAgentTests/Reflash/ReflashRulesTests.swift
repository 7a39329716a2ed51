import PassthroughAgent
import PassthroughCore
import PassthroughLibvirt
import PassthroughSystemd
import PassthroughTestSupport
import Testing

/// The rules of the README's Reflash section (issue 9), each on the emulated bus, asserting what a user
/// would notice: the answer to `reflash`, what is still on the bus and in the guest, the port's bits,
/// the notifications, the state directory. One test at a time: each runs a whole daemon against
/// deadlines, and the machine is small.
@Suite("Reflash rules", .serialized)
struct ReflashRulesTests {
    // MARK: 1. Never remove what a domain or a process holds

    /// How the guest that holds the card cannot let go, and the fix the refusal must give.
    enum StuckGuest: String, CaseIterable, Sendable {
        /// No OS: the eject request is never acked.
        case running
        /// `virsh suspend`, or QEMU's own stop on an uncorrectable AER error.
        case paused
        /// `on_crash=preserve`: libvirt keeps the QEMU, and the card with it.
        case crashed

        var fix: String {
            switch self {
            case .running: "held by guest fpga-dev: shut down or `virsh destroy fpga-dev`, or detach it first"
            case .paused: "held by guest fpga-dev, which is paused and cannot let go: resume it (`virsh resume fpga-dev`)"
            case .crashed: "held by guest fpga-dev, which crashed and whose QEMU is kept (on_crash=preserve): `virsh destroy fpga-dev`"
            }
        }

        func apply(to hypervisor: FakeHypervisor) async {
            await hypervisor.ignoreDetaches(in: "fpga-dev")
            switch self {
            case .running: break
            case .paused: await hypervisor.define("fpga-dev", state: .paused)
            case .crashed: await hypervisor.define("fpga-dev", state: .crashed)
            }
        }
    }

    @Test("rule 1: --prepare while the guest holds the card and never lets go → refused, naming the guest and the fix; nothing removed, the port untouched",
          arguments: StuckGuest.allCases)
    func prepareWhileHeld(_ guest: StuckGuest) async throws {
        let rig = try await ReflashRig(extraConfig: "reflash-guard = true")
        defer { rig.loop.cancel() }
        await guest.apply(to: rig.hypervisor)
        let port = rig.bus.sysfs.configBytes(of: ReflashRig.port)

        let refused = try #require(await rig.refusal(.prepare))
        #expect(refused.reason == .unsafe)
        #expect(refused.description.contains(guest.fix))
        #expect(refused.description.contains("nothing was removed"))
        #expect(rig.removals.isEmpty)
        #expect(rig.onBus())
        #expect(await rig.hypervisor.liveHostdevs(of: "fpga-dev") == [ReflashRig.function])
        #expect(rig.bus.sysfs.configBytes(of: ReflashRig.port) == port)
        #expect(!rig.hasStateFile())
        #expect(await rig.reflashState() == .placed)
    }

    @Test("rule 1: a process with the card's /dev/vfio group open (a QEMU libvirt does not know) → --prepare refused, naming it; nothing removed")
    func prepareWhileGroupOpen() async throws {
        let rig = try await ReflashRig()
        defer { rig.loop.cancel() }
        rig.bus.sysfs.addVFIOGroup("5", device: "1:3")   // /dev/null's number: the fd below "is" the group
        rig.bus.sysfs.addProcess(4242, command: "qemu-system-x86", openFiles: ["/dev/null"])

        let refused = try #require(await rig.refusal(.prepare))
        #expect(refused.reason == .unsafe)
        #expect(refused.description.contains("held open by pid 4242 (qemu-system-x86) through /dev/vfio/5: stop that process first"))
        #expect(rig.removals.isEmpty)
        #expect(rig.onBus())
        #expect(!rig.hasStateFile())
        // Its guest did let go for the take-off; the loop gives the card back.
        try await waitUntil("back in its guest") { await rig.hypervisor.liveHostdevs(of: "fpga-dev") == [ReflashRig.function] }
    }

    /// How the guest finally lets go of a card a recovery waits for.
    enum LetGo: String, CaseIterable, Sendable {
        case destroyed
        case detachedByHand
    }

    @Test("rule 1: a recovery while the guest holds the card removes nothing: it says so once (error, naming the guest) and completes once the guest lets go",
          arguments: LetGo.allCases)
    func recoveryWaitsForTheGuest(_ letGo: LetGo) async throws {
        let rig = try await ReflashRig()
        defer { rig.loop.cancel() }
        await rig.hypervisor.ignoreDetaches(in: "fpga-dev")
        rig.cardReturnsOnRescan(as: "10ee:903f")
        await rig.supervisor.cardLost(ReflashRig.card, cause: .aer, reason: "AER recovery failed on 0000:01:00.0")

        try await waitUntil("told it waits") { !rig.notifications(.stepFailed).isEmpty }
        try await waitUntil("asked again") { await rig.hypervisor.detachCalls.count >= 2 }
        let waiting = try #require(rig.notifications(.stepFailed).first)
        #expect(waiting.level == .error)
        #expect("\(waiting.message)".contains("u200 is lost, but not removed while it is held: 0000:01:00.0 is held by guest fpga-dev"))
        #expect(rig.notifications(.stepFailed).count == 1)
        #expect(rig.removals.isEmpty)
        #expect(rig.onBus())
        #expect(await rig.hypervisor.liveHostdevs(of: "fpga-dev") == [ReflashRig.function])
        #expect(await rig.supervisor.summary == "u200: recovering (lost from the link)")
        #expect(rig.hasStateFile())
        // Meanwhile a person's requests are told why not, and change nothing.
        #expect(await rig.refusal(.prepare)?.reason == .busy)
        #expect(await rig.refusal(.finish)?.description.contains("u200 is being recovered") == true)
        #expect(rig.removals.isEmpty)

        switch letGo {
        case .destroyed: await rig.hypervisor.define("fpga-dev", state: .shutOff)
        case .detachedByHand: await rig.hypervisor.unplug(ReflashRig.function, from: "fpga-dev")
        }
        try await waitUntil("recovered") { await rig.reflashState() == .placed && rig.bus.rescanCount > 0 }
        #expect(rig.removals == ["bus/pci/devices/0000:01:00.0/remove"])
        #expect(rig.onBus())
        #expect(!rig.hasStateFile())
        switch letGo {
        case .destroyed:
            try await waitUntil("given back to the host") { await rig.supervisor.summary == "u200: on the host" }
        case .detachedByHand:
            try await waitUntil("back in its guest") { await rig.hypervisor.liveHostdevs(of: "fpga-dev") == [ReflashRig.function] }
        }
    }

    // MARK: 2. Unknown is hands off

    enum Blindness: String, CaseIterable, Sendable {
        case libvirtUnreachable
        case liveXMLUnparsable

        func apply(to hypervisor: FakeHypervisor) async {
            switch self {
            case .libvirtUnreachable: await hypervisor.setReachable(false)
            case .liveXMLUnparsable: await hypervisor.breakLiveXML(of: "fpga-dev")
            }
        }
    }

    @Test("rule 2: who holds the card cannot be told (libvirt unreachable, a live XML unparsable) → --prepare refused, nothing removed",
          arguments: Blindness.allCases)
    func prepareBlind(_ blindness: Blindness) async throws {
        let rig = try await ReflashRig()
        defer { rig.loop.cancel() }
        await blindness.apply(to: rig.hypervisor)

        let refused = try #require(await rig.refusal(.prepare))
        #expect(refused.reason == .unsafe)
        #expect(refused.description.contains("u200 stays on the bus: cannot tell who holds it"))
        #expect(rig.removals.isEmpty)
        #expect(rig.onBus())
        #expect(await rig.hypervisor.liveHostdevs(of: "fpga-dev") == [ReflashRig.function])
        #expect(!rig.hasStateFile())
    }

    @Test("rule 2: a recovery while libvirt is unreachable removes nothing and says why; it completes once libvirt answers")
    func recoveryBlind() async throws {
        let rig = try await ReflashRig()
        defer { rig.loop.cancel() }
        rig.cardReturnsOnRescan(as: "10ee:903f")
        await rig.hypervisor.setReachable(false)
        await rig.supervisor.cardLost(ReflashRig.card, cause: .linkWatch, reason: "link watch: all-ones")

        try await waitUntil("told it waits") { !rig.notifications(.stepFailed).isEmpty }
        try await Task.sleep(for: .milliseconds(100))
        let waiting = try #require(rig.notifications(.stepFailed).first)
        #expect("\(waiting.message)".contains("cannot tell who holds them"))
        #expect(rig.removals.isEmpty)
        #expect(rig.onBus())

        await rig.hypervisor.setReachable(true)
        try await waitUntil("back in its guest") { await rig.isBackInItsGuest() }
        #expect(rig.removals == ["bus/pci/devices/0000:01:00.0/remove"])
    }

    // MARK: 3. Only the card's own functions

    @Test("rule 3: a function in the card's slot or below its port that no card claims → --prepare refused, and a recovery does not start; both untouched",
          arguments: ["0000:01:00.2", "0000:01:01.0"])
    func stranger(_ address: String) async throws {
        let rig = try await ReflashRig()
        defer { rig.loop.cancel() }
        rig.bus.sysfs.addFunction(address, id: "1234:5678", iommuGroup: 9, below: ReflashRig.port)

        let refused = try #require(await rig.refusal(.prepare))
        #expect(refused.reason == .unsafe)
        #expect(refused.description.contains("u200 shares 0000:01:00 or the bus below 0000:00:01.0 with \(address), which no card claims"))
        #expect(refused.description.contains("nothing was removed"))
        #expect(await rig.hypervisor.detachCalls.isEmpty)

        await rig.supervisor.cardLost(ReflashRig.card, cause: .linkWatch, reason: "link watch: all-ones")
        try await waitUntil("recovery refused") { !rig.notifications(.stepFailed).filter { "\($0.message)".contains("not recovering") }.isEmpty }
        try await waitUntil("placed again") { await rig.reflashState() == .placed }
        #expect(rig.removals.isEmpty)
        #expect(rig.bus.rescanCount == 0)
        #expect(rig.onBus() && rig.onBus(PCIAddress(address)!))
        #expect(await rig.hypervisor.liveHostdevs(of: "fpga-dev") == [ReflashRig.function])
        #expect(!rig.hasStateFile())
    }

    // MARK: 4. The guard fails closed for --prepare, open for a recovery

    @Test("rule 4: the guard cannot be engaged (kernel lockdown refuses config writes) → --prepare refused as failed: the card on the bus and in its guest, the port as it was, no state left")
    func guardFailsClosed() async throws {
        let rig = try await ReflashRig(extraConfig: "reflash-guard = true")
        defer { rig.loop.cancel() }
        rig.bus.failWrites(to: "bus/pci/devices/0000:00:01.0/config", with: .notPermitted)
        let port = rig.bus.sysfs.configBytes(of: ReflashRig.port)

        let refused = try #require(await rig.refusal(.prepare))
        #expect(refused.reason == .failed)
        #expect(refused.description.contains("u200 stays on the bus: cannot mask fatal-error reporting on 0000:00:01.0"))
        #expect(refused.description.contains("nothing was removed. Kernel lockdown forbids config-space writes: see `passthrough-agent check`"))
        #expect(rig.removals.isEmpty)
        #expect(rig.onBus())
        #expect(rig.bus.sysfs.configBytes(of: ReflashRig.port) == port)
        #expect(try rig.portBits() == (true, true))
        #expect(!rig.hasStateFile())
        #expect(await rig.reflashState() == .placed)
        try await waitUntil("back in its guest") { await rig.hypervisor.liveHostdevs(of: "fpga-dev") == [ReflashRig.function] }
    }

    @Test("rule 4: a recovery whose guard cannot be engaged goes on, with an error-level notification saying so")
    func recoveryWithoutGuard() async throws {
        let rig = try await ReflashRig(extraConfig: "reflash-guard = true")
        defer { rig.loop.cancel() }
        rig.bus.failWrites(to: "bus/pci/devices/0000:00:01.0/config", with: .notPermitted)
        rig.cardReturnsOnRescan(as: "10ee:903f")
        rig.bus.dropLink("0000:01:00")
        await rig.aer(.failedRecovery)

        try await waitUntil("back in its guest") {
            await rig.reflashState() == .placed && rig.notifications(.cardAttached).count >= 2
        }
        let unguarded = rig.notifications(.stepFailed).filter { "\($0.message)".contains("recovering without the reflash guard") }
        #expect(unguarded.count == 1)
        #expect(unguarded.first?.level == .error)
        #expect(rig.removals == ["bus/pci/devices/0000:01:00.0/remove"])
        #expect(try rig.portBits() == (true, true))
        #expect(!rig.hasStateFile())
    }

    @Test("rule 4: the state cannot be recorded (/run full or read-only) → --prepare refused as failed, nothing removed, the port as it was",
          arguments: [false, true])
    func stateUnrecordable(guarded: Bool) async throws {
        let rig = try await ReflashRig(extraConfig: guarded ? "reflash-guard = true" : "")
        defer { rig.loop.cancel() }
        rig.bus.sysfs.writeFile("run", "")   // the state directory cannot be made: ENOTDIR
        let port = rig.bus.sysfs.configBytes(of: ReflashRig.port)

        let refused = try #require(await rig.refusal(.prepare))
        #expect(refused.reason == .failed)
        #expect(refused.description.contains("cannot create reflash state \(rig.bus.sysfs.root)/run/cards"))
        #expect(refused.description.contains("nothing was removed"))
        #expect(!refused.description.contains("lockdown"))
        #expect(rig.removals.isEmpty)
        #expect(rig.onBus())
        #expect(rig.bus.sysfs.configBytes(of: ReflashRig.port) == port)
        try await waitUntil("back in its guest") { await rig.isBackInItsGuest() }
    }

    // MARK: 5. --finish only for a held or absent card

    @Test("rule 5: --finish without --prepare on an attached card → refused for safety; no rescan, no bus reset, the guest keeps it")
    func finishWithoutPrepare() async throws {
        let rig = try await ReflashRig(extraConfig: "reset = \"secondary-bus\"")
        defer { rig.loop.cancel() }

        let refused = try #require(await rig.refusal(.finish))
        #expect(refused.reason == .unsafe)
        #expect(refused.description.contains("--finish only follows --prepare"))
        #expect(rig.bus.rescanCount == 0)
        #expect(rig.bus.configWrites.isEmpty)
        #expect(rig.removals.isEmpty)
        #expect(await rig.hypervisor.liveHostdevs(of: "fpga-dev") == [ReflashRig.function])
        #expect(await rig.hypervisor.detachCalls.isEmpty)
        #expect(!rig.hasStateFile())
    }

    @Test("rule 5: --finish twice: the second is refused like one without --prepare, and rescans nothing")
    func finishTwice() async throws {
        let rig = try await ReflashRig(extraConfig: "reflash-guard = true")
        defer { rig.loop.cancel() }
        _ = try await rig.supervisor.reflash(ReflashRig.card, .prepare)
        rig.cardReturnsOnRescan(as: "10ee:903f")
        _ = try await rig.supervisor.reflash(ReflashRig.card, .finish)
        try await waitUntil("back in its guest") { await rig.hypervisor.liveHostdevs(of: "fpga-dev") == [ReflashRig.function] }
        let rescans = rig.bus.rescanCount
        let configWrites = rig.bus.configWrites.count

        let refused = try #require(await rig.refusal(.finish))
        #expect(refused.reason == .unsafe)
        #expect(refused.description.contains("--finish only follows --prepare"))
        #expect(rig.bus.rescanCount == rescans)
        #expect(rig.bus.configWrites.count == configWrites)
        #expect(try rig.portBits() == (true, true))
        #expect(await rig.hypervisor.liveHostdevs(of: "fpga-dev") == [ReflashRig.function])
    }

    // MARK: 6. --dry-run changes nothing

    @Test("rule 6: --dry-run changes nothing on any path: --prepare and --finish refused, AER and link losses not recovered; zero sysfs writes, no state file")
    func dryRun() async throws {
        let rig = try await ReflashRig(extraConfig: "reflash-guard = true", dryRun: true) { $0.aerGrace = .milliseconds(20) }
        defer { rig.loop.cancel() }

        let prepare = try #require(await rig.refusal(.prepare))
        #expect(prepare.reason == .unsafe)
        #expect(prepare.description.contains("--dry-run"))
        let finish = try #require(await rig.refusal(.finish))
        #expect(finish.reason == .unsafe)
        rig.bus.dropLink("0000:01:00")
        await rig.aer(.beginRecovery)
        await rig.aer(.failedRecovery)
        await rig.supervisor.cardLost(ReflashRig.card, cause: .linkWatch, reason: "link watch: all-ones")
        try await Task.sleep(for: .milliseconds(200))   // the grace probe has fired

        #expect(rig.bus.writes.isEmpty)
        #expect(rig.bus.configWrites.isEmpty)
        #expect(!rig.hasStateFile())
        #expect(rig.notifications(.cardLost).isEmpty)
        #expect(await rig.reflashState() == .placed)
    }

    @Test("rule 6: a card a previous run left held, then `run --dry-run`: --finish refused, the port stays masked and the record kept; zero sysfs writes")
    func dryRunAfterHeld() async throws {
        let rig = try await ReflashRig(extraConfig: "reflash-guard = true")
        _ = try await rig.supervisor.reflash(ReflashRig.card, .prepare)
        rig.cardReturnsOnRescan(as: "10ee:903f")
        let writes = rig.bus.writes.count
        let configWrites = rig.bus.configWrites.count

        let dry = await rig.restarted(dryRun: true)
        defer { dry.loop.cancel() }
        try await waitUntil("first pass") { await dry.supervisor.state(of: ReflashRig.card)?.phase == .absent }
        let finish = try #require(await dry.refusal(.finish))
        #expect(finish.reason == .unsafe)
        #expect(finish.description.contains("--dry-run"))
        #expect(dry.bus.writes.count == writes)
        #expect(dry.bus.configWrites.count == configWrites)
        #expect(try dry.portBits() == (false, false))
        #expect(dry.hasStateFile())
        #expect(!dry.onBus())
    }

    // MARK: 7. One recovery per loss

    @Test("rule 7: BEGIN_RECOVERY, FAILED_RECOVERY and the link watch for one loss → one cardLost, one recovery; the grace probe, firing while the recovery has the card off the bus, starts nothing")
    func oneRecoveryPerLoss() async throws {
        let rig = try await ReflashRig { $0.aerGrace = .milliseconds(50) }
        defer { rig.loop.cancel() }
        rig.bus.dropLink("0000:01:00")
        await rig.aer(.beginRecovery)
        await rig.aer(.failedRecovery)
        await rig.supervisor.cardLost(ReflashRig.card, cause: .linkWatch, reason: "link watch: 0000:01:00.0 all-ones")
        try await waitUntil("removed by the recovery") { !rig.removals.isEmpty }
        try await Task.sleep(for: .milliseconds(200))   // the grace probe has fired, the card still off the bus

        rig.cardReturnsOnRescan(as: "10ee:903f")
        try await waitUntil("back in its guest") {
            await rig.reflashState() == .placed && rig.notifications(.cardAttached).count >= 2
        }
        try await Task.sleep(for: .milliseconds(100))
        #expect(rig.notifications(.cardLost).count == 1)
        #expect(rig.removals == ["bus/pci/devices/0000:01:00.0/remove"])
        #expect(await rig.hypervisor.detachCalls == [ReflashRig.function])
        #expect(await rig.reflashState() == .placed)
    }

    @Test("rule 7: the grace probe of a loss whose recovery has already ended (the kernel refused the removal) does not start a second one")
    func staleGraceProbe() async throws {
        let grace = Duration.seconds(1)
        let rig = try await ReflashRig { $0.aerGrace = grace }
        defer { rig.loop.cancel() }
        rig.bus.failWrites(to: "bus/pci/devices/0000:01:00.0/remove", with: .notPermitted)
        rig.bus.dropLink("0000:01:00")
        await rig.aer(.beginRecovery)
        await rig.aer(.failedRecovery)
        try await waitUntil("the recovery failed") {
            await rig.reflashState() == .placed
                && !rig.notifications(.stepFailed).filter { "\($0.message)".contains("removing the card's functions failed") }.isEmpty
        }
        try await Task.sleep(for: grace + .milliseconds(500))   // past the grace period, the link still dead

        #expect(rig.notifications(.cardLost).count == 1)
        #expect(rig.removals.count == 1)
        #expect(await rig.reflashState() == .placed)
    }

    // MARK: 8. One card's recovery delays no other card

    @Test("rule 8: card A's recovery waiting for its guest delays neither card B's passes nor B's reflash, nor status")
    func perCardConcurrency() async throws {
        let rig = try await ReflashRig(secondCard: true)
        defer { rig.loop.cancel() }
        await rig.hypervisor.ignoreDetaches(in: "fpga-dev")
        await rig.supervisor.cardLost(ReflashRig.card, cause: .aer, reason: "AER recovery failed on 0000:01:00.0")
        try await waitUntil("A waits for its guest") { !rig.notifications(.stepFailed).isEmpty }

        await rig.hypervisor.define("fpga-test", state: .running)
        await rig.supervisor.handle(.lifecycle(guest: "fpga-test", .started))
        try await waitUntil("B attached while A waits") {
            await rig.supervisor.summary.hasSuffix("u250: attached to fpga-test")
        }

        // A never lets go: a status queued behind its recovery would never be answered.
        let asked = ContinuousClock.now
        let status = await AgentDaemon.answer(.status(card: nil), supervisor: rig.supervisor)
        #expect(ContinuousClock.now - asked < .seconds(5))
        #expect(status.cards == [
            ControlCardStatus(name: "u200", state: "u200: recovering (lost from the link)"),
            ControlCardStatus(name: "u250", state: "u250: attached to fpga-test"),
        ])

        let prepared = try await rig.supervisor.reflash(ReflashRig.secondCard, .prepare)
        #expect(prepared.contains("reflash u250 --finish"))
        #expect(rig.removals == ["bus/pci/devices/0000:02:00.0/remove"])
        #expect(rig.onBus(ReflashRig.function))
        #expect(await rig.supervisor.summary == "u200: recovering (lost from the link); u250: off the bus for a reflash")
    }

    // MARK: 9. The watchdog sees anything stuck

    @Test("rule 9: a recovery's removal stuck in the kernel (not a pass) stops the watchdog, naming it; fed again once it returns")
    func stuckWorkerCall() async throws {
        // Long enough that an ordinary pass on a loaded test machine is not "stuck".
        let rig = try await ReflashRig { $0.stuckAfter = .seconds(1) }
        defer { rig.loop.cancel() }
        let kernel = Gate()
        defer { kernel.open() }
        rig.bus.beforeWrite(to: "bus/pci/devices/0000:01:00.0/remove") { _ in kernel.wait() }
        rig.cardReturnsOnRescan(as: "10ee:903f")
        try await waitUntil("fed at start") { await rig.supervisor.heartbeat() }

        await rig.supervisor.cardLost(ReflashRig.card, cause: .linkWatch, reason: "link watch: all-ones")
        try await waitUntil("removal under way") { !rig.removals.isEmpty }
        try await waitUntil("watchdog starved", timeout: .seconds(5)) { await !rig.supervisor.heartbeat() }
        #expect(rig.supervisor.stuckWork().contains { $0.hasPrefix("reflash sysfs call on a worker thread for ") })

        kernel.open()
        try await waitUntil("fed again") { await rig.supervisor.heartbeat() }
        try await waitUntil("back in its guest") { await rig.isBackInItsGuest() }
    }

    @Test("rule 9: a libvirt call that never returns during --prepare stops the watchdog, naming it; fed again once it returns")
    func stuckLibvirtCall() async throws {
        let rig = try await ReflashRig { $0.stuckAfter = .milliseconds(500) }
        defer { rig.loop.cancel() }
        await rig.hypervisor.hang(.detach)

        let prepare = Task { try await rig.supervisor.reflash(ReflashRig.card, .prepare) }
        try await waitUntil("detach asked") { await !rig.hypervisor.detachCalls.isEmpty }
        try await waitUntil("watchdog starved", timeout: .seconds(5)) { await !rig.supervisor.heartbeat() }
        #expect(rig.supervisor.stuckWork().contains { $0.hasPrefix("libvirt: detach 0000:01:00.0 from fpga-dev for ") })

        await rig.hypervisor.unhang(.detach)
        _ = try await prepare.value
        try await waitUntil("fed again") { await rig.supervisor.heartbeat() }
        #expect(!rig.onBus())
    }
}

/// Issue 9's "Persisted": a start resumes exactly where the last process stood.
@Suite("Reflash state across restarts, reloads and hang-ups", .serialized)
struct ReflashPersistenceTests {
    @Test("killed between --prepare and --finish: the restarted agent says held, the port stays masked, --finish brings the card back and restores the port")
    func restartWhileHeld() async throws {
        let rig = try await ReflashRig(extraConfig: "reflash-guard = true")
        _ = try await rig.supervisor.reflash(ReflashRig.card, .prepare)
        #expect(try rig.portBits() == (false, false))

        let restarted = await rig.restarted()
        defer { restarted.loop.cancel() }
        try await waitUntil("first pass") { await restarted.supervisor.state(of: ReflashRig.card)?.phase == .absent }
        #expect(await restarted.supervisor.summary == "u200: off the bus for a reflash (fatal-error reporting masked on 0000:00:01.0)")
        #expect(try restarted.portBits() == (false, false))
        #expect(restarted.hasStateFile())
        #expect(restarted.notifications(.cardVanished).isEmpty)

        restarted.cardReturnsOnRescan(as: "10ee:9038")
        let finished = try await restarted.supervisor.reflash(ReflashRig.card, .finish)
        #expect(finished.hasPrefix("u200 is back: 0000:01:00.0 10ee:9038"))
        #expect(try restarted.portBits() == (true, true))
        #expect(!restarted.hasStateFile())
        try await waitUntil("back in its guest") { await restarted.hypervisor.liveHostdevs(of: "fpga-dev") == [ReflashRig.function] }
    }

    @Test("a restart while recovering resumes the recovery with the guard it saved: the card returns to its guest and the port is restored")
    func restartWhileRecovering() async throws {
        // Long enough that the first process's recovery is still waiting for the link when it stops.
        let rig = try await ReflashRig(extraConfig: "reflash-guard = true", recoveryTimeout: "60s")
        rig.bus.dropLink("0000:01:00")
        await rig.aer(.failedRecovery)
        try await waitUntil("removed by the recovery") { !rig.removals.isEmpty }
        #expect(try rig.portBits() == (false, false))

        let restarted = await rig.restarted()
        defer { restarted.loop.cancel() }
        #expect(restarted.hasStateFile())
        restarted.cardReturnsOnRescan(as: "10ee:903f")
        try await waitUntil("back in its guest after the restart") { await restarted.isBackInItsGuest() }
        #expect(try restarted.portBits() == (true, true))
        #expect(!restarted.hasStateFile())
        #expect(restarted.removals.count == 1)
    }

    @Test("a reload that drops a held card puts its port back and removes its record")
    func reloadDropsHeldCard() async throws {
        let rig = try await ReflashRig(extraConfig: "reflash-guard = true", secondCard: true)
        defer { rig.loop.cancel() }
        _ = try await rig.supervisor.reflash(ReflashRig.card, .prepare)
        #expect(try rig.portBits() == (false, false))
        #expect(rig.hasStateFile())

        var withoutIt = rig.config
        withoutIt.cards.removeAll { $0.name == ReflashRig.card }
        await rig.supervisor.reload(withoutIt)
        #expect(try rig.portBits() == (true, true))
        #expect(!rig.hasStateFile())
        #expect(await rig.supervisor.summary == "u250: on the host")
    }

    @Test("a reload that turns the guard off while the card is held: still masked while off the bus, --finish puts the port back")
    func reloadTurnsGuardOff() async throws {
        let rig = try await ReflashRig(extraConfig: "reflash-guard = true")
        defer { rig.loop.cancel() }
        _ = try await rig.supervisor.reflash(ReflashRig.card, .prepare)

        var unguarded = rig.config
        unguarded.cards[0].reflashGuard = .off
        await rig.supervisor.reload(unguarded)
        try await Task.sleep(for: .milliseconds(50))
        #expect(try rig.portBits() == (false, false))

        rig.cardReturnsOnRescan(as: "10ee:903f")
        _ = try await rig.supervisor.reflash(ReflashRig.card, .finish)
        #expect(try rig.portBits() == (true, true))
        #expect(!rig.hasStateFile())
    }

    @Test("a --finish cancelled while it waits for the card (the client hung up): still held with its guard, and the next --finish brings it back")
    func finishCancelledWhileWaiting() async throws {
        let rig = try await ReflashRig(extraConfig: "reflash-guard = true")
        defer { rig.loop.cancel() }
        _ = try await rig.supervisor.reflash(ReflashRig.card, .prepare)
        let finish = Task { try await rig.supervisor.reflash(ReflashRig.card, .finish) }
        try await waitUntil("rescanning") { rig.bus.rescanCount > 0 }
        finish.cancel()
        _ = await finish.result

        #expect(await rig.supervisor.summary == "u200: off the bus for a reflash (fatal-error reporting masked on 0000:00:01.0)")
        #expect(try rig.portBits() == (false, false))
        #expect(rig.hasStateFile())
        rig.cardReturnsOnRescan(as: "10ee:903f")
        let finished = try await rig.supervisor.reflash(ReflashRig.card, .finish)
        #expect(finished.hasPrefix("u200 is back"))
        #expect(try rig.portBits() == (true, true))
        #expect(!rig.hasStateFile())
        try await waitUntil("back in its guest") { await rig.isBackInItsGuest() }
    }

    @Test("a held card that comes back by itself (a hotplug slot re-enumerated it) ends its reflash: port restored, record removed, back in its guest")
    func heldCardReturnsByItself() async throws {
        let rig = try await ReflashRig(extraConfig: "reflash-guard = true")
        defer { rig.loop.cancel() }
        _ = try await rig.supervisor.reflash(ReflashRig.card, .prepare)
        #expect(try rig.portBits() == (false, false))

        ReflashRig.plugCard(rig.bus.sysfs, id: "10ee:9038")
        await rig.added(id: "10ee:9038")
        try await waitUntil("back in its guest") { await rig.hypervisor.liveHostdevs(of: "fpga-dev") == [ReflashRig.function] }
        #expect(try rig.portBits() == (true, true))
        #expect(!rig.hasStateFile())
        #expect(await rig.reflashState() == .placed)
        #expect(rig.bus.rescanCount == 0)
    }

    @Test("a --prepare cancelled while its detach is in flight (the client hung up, SIGTERM): nothing removed, no state file, the port as it was, the card back in its guest",
          arguments: [false, true])
    func prepareCancelledDuringDetach(guarded: Bool) async throws {
        let rig = try await ReflashRig(extraConfig: guarded ? "reflash-guard = true" : "")
        defer { rig.loop.cancel() }
        let port = rig.bus.sysfs.configBytes(of: ReflashRig.port)
        // The guest acks the eject, but by then the request's task is cancelled.
        await rig.hypervisor.onNextDetach { withUnsafeCurrentTask { $0?.cancel() } }

        let prepare = Task { try await rig.supervisor.reflash(ReflashRig.card, .prepare) }
        let answer = await prepare.result
        #expect(throws: (any Error).self) { try answer.get() }
        #expect(await rig.hypervisor.detachCalls == [ReflashRig.function])
        #expect(rig.removals.isEmpty)
        #expect(rig.onBus())
        #expect(!rig.hasStateFile())
        #expect(rig.bus.sysfs.configBytes(of: ReflashRig.port) == port)
        try await waitUntil("back in its guest") { await rig.isBackInItsGuest() }
    }
}
