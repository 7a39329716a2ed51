import InMemoryLogging
import Logging
import PassthroughAgent
import PassthroughCore
import PassthroughLibvirt
import PassthroughSystemd
import PassthroughTestSupport
import Testing

/// Issue 12 from the agent's side: a guest asks for its own card's reflash over its channel, on the
/// emulated bus with the whole supervisor running. Each test asserts what the guest reads back and what
/// the host owner would notice: the card on the bus and in its guest, sysfs writes, the journal.
@Suite("Guest requests", .serialized)
struct GuestRequestTests {
    static let prepared = "ok u200 is off the bus: program the FPGA, then send: finish u200"
    static let finished = "ok u200 is back on the bus and is being attached to this guest again"

    @Test("fpga-dev: prepare u200 takes it out of the guest and off the bus; finish u200 brings it back and re-attaches it")
    func prepareAndFinish() async throws {
        let guest = try await GuestRequestRig()
        defer { guest.stop() }
        let rig = guest.rig
        #expect(try await guest.source.ask("status", from: "fpga-dev") == "ok u200=attached")

        #expect(try await guest.source.ask("prepare u200", from: "fpga-dev") == Self.prepared)
        #expect(!rig.onBus())
        #expect(await rig.hypervisor.detachCalls == [ReflashRig.function])
        #expect(await rig.hypervisor.liveHostdevs(of: "fpga-dev").isEmpty)
        #expect(rig.hasStateFile())
        #expect(try await guest.source.ask("status", from: "fpga-dev") == "ok u200=held")

        rig.cardReturnsOnRescan(as: "10ee:9038")
        #expect(try await guest.source.ask("finish u200", from: "fpga-dev") == Self.finished)
        // Said while it was held, if that took longer than its recovery-timeout (2 s: a loaded machine).
        let remindedWhileHeld = rig.notifications(.reflashNotFinished).count
        try await waitUntil("re-attached") { await rig.isBackInItsGuest() }
        try await waitUntil("settled") { await rig.supervisor.state(of: ReflashRig.card)?.statusWord == "attached" }
        #expect(try await guest.source.ask("status", from: "fpga-dev") == "ok u200=attached")
        #expect(!rig.hasStateFile())
        // Finished: no reminder once the recovery-timeout has passed.
        try await Task.sleep(for: .milliseconds(2500))
        #expect(rig.notifications(.reflashNotFinished).count == remindedWhileHeld)
        #expect(rig.notifications(.guestRequestRefused).isEmpty)
    }

    @Test("prepare with the guard: the port is masked while off the bus and restored by the guest's finish")
    func guarded() async throws {
        let guest = try await GuestRequestRig()
        defer { guest.stop() }
        let rig = guest.rig
        await rig.supervisor.reload(try ReflashRig.config("guest-requests = true\nreflash-guard = true"))
        #expect(try await guest.source.ask("prepare u200", from: "fpga-dev") == Self.prepared)
        #expect(try rig.portBits() == (false, false))
        rig.cardReturnsOnRescan(as: "10ee:903f")
        #expect(try await guest.source.ask("finish u200", from: "fpga-dev") == Self.finished)
        #expect(try rig.portBits() == (true, true))
        try await waitUntil("re-attached") { await rig.isBackInItsGuest() }
    }

    @Test("another guest asking for u200 reads what it would for a card that does not exist; nothing moves; the journal names it")
    func otherGuestsCard() async throws {
        let guest = try await GuestRequestRig(secondCard: true)
        defer { guest.stop() }
        let rig = guest.rig
        await rig.hypervisor.define("intruder", state: .running)
        let writes = rig.bus.writes.count

        #expect(try await guest.source.ask("prepare u200", from: "intruder") == "error unknown-card no card u200 for this guest")
        #expect(try await guest.source.ask("finish u200", from: "intruder") == "error unknown-card no card u200 for this guest")
        #expect(try await guest.source.ask("prepare nosuch", from: "intruder") == "error unknown-card no card nosuch for this guest")
        // fpga-dev's own channel cannot reach fpga-test's card either.
        #expect(try await guest.source.ask("prepare u250", from: "fpga-dev") == "error unknown-card no card u250 for this guest")
        #expect(try await guest.source.ask("status", from: "intruder") == "ok")

        #expect(rig.bus.writes.count == writes)
        #expect(rig.removals.isEmpty)
        #expect(await rig.hypervisor.detachCalls.isEmpty)
        #expect(await rig.hypervisor.liveHostdevs(of: "fpga-dev") == [ReflashRig.function])
        #expect(await rig.reflashState() == .placed)
        let refused = rig.notifications(.guestRequestRefused)
        #expect(refused.count == 4)
        #expect(refused.allSatisfy { $0.level == .warning })
        #expect(refused.map { $0.metadata[LogMetadataKey.guest] } == ["intruder", "intruder", "intruder", "fpga-dev"])
        #expect(refused.map { $0.metadata[LogMetadataKey.card] } == ["u200", "u200", nil, "u250"])
        #expect("\(refused[0].message)" == "guest intruder asked for u200, which is lent to fpga-dev; refused")
    }

    @Test("a malformed line, an address, a path, a 300-byte line: error bad-request, nothing moves")
    func badRequests() async throws {
        let guest = try await GuestRequestRig()
        defer { guest.stop() }
        let rig = guest.rig
        let writes = rig.bus.writes.count
        #expect(try await guest.source.ask("PREPARE u200", from: "fpga-dev")
            == "error bad-request unknown request 'PREPARE': expected one of prepare, finish, status, version (lower case)")
        #expect(try await guest.source.ask("prepare 0000:01:00.0", from: "fpga-dev")
            == "error bad-request '0000:01:00.0' is not a card name (lower-case letters, digits and '-')")
        #expect(try await guest.source.ask("prepare ../../sys/bus/pci/rescan", from: "fpga-dev")?.hasPrefix("error bad-request '../../sys/bus") == true)
        #expect(try await guest.source.ask("prepare " + String(repeating: "u", count: 292), from: "fpga-dev")
            == "error bad-request line longer than 256 bytes")
        guest.source.send(Array("prepare u200".utf8) + [0], from: "fpga-dev")
        try await waitUntil("NUL answered") { guest.source.answers(of: "fpga-dev").count == 5 }
        #expect(guest.source.answers(of: "fpga-dev").last == "error bad-request control character in the line (words are separated by spaces only)")
        #expect(try await guest.source.ask("version", from: "fpga-dev") == "ok passthrough-agent guest-protocol 1")

        #expect(rig.bus.writes.count == writes)
        #expect(await rig.hypervisor.detachCalls.isEmpty)
        #expect(await rig.reflashState() == .placed)
    }

    @Test("guest-requests off for the card: refused, status lists nothing, no channel is listened to")
    func requestsOff() async throws {
        let guest = try await GuestRequestRig(requests: false)
        defer { guest.stop() }
        #expect(try await guest.source.ask("prepare u200", from: "fpga-dev")
            == "error refused guest requests are off for u200 on this host (ask its owner for guest-requests = true)")
        #expect(try await guest.source.ask("status", from: "fpga-dev") == "ok")
        #expect(guest.source.watches == [[]])
        #expect(await guest.rig.hypervisor.detachCalls.isEmpty)
        #expect(guest.rig.notifications(.guestRequestRefused).count == 1)
    }

    @Test("the guest not running as libvirt sees it (paused), or libvirt not answering: refused, nothing moves")
    func guestNotRunning() async throws {
        let guest = try await GuestRequestRig()
        defer { guest.stop() }
        let rig = guest.rig
        await rig.hypervisor.define("fpga-dev", state: .paused)
        #expect(try await guest.source.ask("prepare u200", from: "fpga-dev")
            == "error refused this guest is not running as far as the host can tell")
        await rig.hypervisor.define("fpga-dev", state: .running)
        await rig.hypervisor.setReachable(false)
        #expect(try await guest.source.ask("prepare u200", from: "fpga-dev")
            == "error refused the host cannot confirm that this guest runs (libvirt does not answer); try again later")
        #expect(await rig.hypervisor.detachCalls.isEmpty)
        #expect(rig.removals.isEmpty)
        #expect(rig.notifications(.guestRequestRefused).map { $0.metadata[LogMetadataKey.guest] } == ["fpga-dev", "fpga-dev"])
    }

    @Test("run --dry-run: prepare and finish are refused as a dry run; zero sysfs writes, no state file")
    func dryRun() async throws {
        let guest = try await GuestRequestRig(dryRun: true)
        defer { guest.stop() }
        let rig = guest.rig
        #expect(try await guest.source.ask("prepare u200", from: "fpga-dev") == "error refused the agent runs as a dry run and changes nothing")
        #expect(try await guest.source.ask("finish u200", from: "fpga-dev") == "error refused the agent runs as a dry run and changes nothing")
        #expect(rig.bus.writes.isEmpty)
        #expect(!rig.hasStateFile())
        #expect(await rig.hypervisor.detachCalls.isEmpty)
    }

    @Test("one request per guest at a time: lines sent meanwhile are answered busy, after the first answer, in order")
    func busyInOrder() async throws {
        let guest = try await GuestRequestRig()
        defer { guest.stop() }
        let rig = guest.rig
        await rig.hypervisor.hang(.detach)
        guest.source.send("prepare u200", from: "fpga-dev")
        try await waitUntil("detach in flight") { await !rig.hypervisor.detachCalls.isEmpty }
        guest.source.send("status", from: "fpga-dev")
        guest.source.send("prepare u200", from: "fpga-dev")
        guest.source.send("nonsense", from: "fpga-dev")
        // Another guest is not held up by fpga-dev's request.
        #expect(try await guest.source.ask("version", from: "fpga-test") == "ok passthrough-agent guest-protocol 1")
        try await Task.sleep(for: .milliseconds(100))
        #expect(guest.source.answers(of: "fpga-dev").isEmpty)

        await rig.hypervisor.unhang(.detach)
        try await waitUntil("four answers") { guest.source.answers(of: "fpga-dev").count == 4 }
        let busy = "error busy the previous request of this guest is still being carried out; send one at a time"
        #expect(guest.source.answers(of: "fpga-dev") == [Self.prepared, busy, busy, busy])
        #expect(rig.removals.count == 1)
        #expect(try await guest.source.ask("status", from: "fpga-dev") == "ok u200=held")
    }

    @Test("rate limit per guest with a fake clock: over it, error rate-limited, journaled once per burst; other guests unaffected")
    func rateLimited() async throws {
        let clock = VirtualClock()
        let guest = try await GuestRequestRig(clock: clock, rateLimit: GuestRequestRateLimit(burst: 2, refill: .seconds(10))!)
        defer { guest.stop() }
        let version = "ok passthrough-agent guest-protocol 1"
        let limited = "error rate-limited too many requests; try again in 10 s"
        var answers: [String?] = []
        for _ in 0..<4 { answers.append(try await guest.source.ask("version", from: "fpga-dev")) }
        #expect(answers == [version, version, limited, limited])
        #expect(try await guest.source.ask("version", from: "fpga-test") == version)
        #expect(guest.rig.notifications(.guestRequestRefused).count == 1)

        try await clock.sleep(for: .seconds(10))
        #expect(try await guest.source.ask("prepare u200", from: "fpga-dev") == Self.prepared)
        #expect(try await guest.source.ask("status", from: "fpga-dev") == limited)
        let refused = guest.rig.notifications(.guestRequestRefused)
        #expect(refused.count == 2)
        #expect(refused.allSatisfy { $0.metadata[LogMetadataKey.guest] == "fpga-dev" && $0.level == .warning })
    }

    @Test("a guest's prepare, then the card back by itself (a hotplug slot): the reflash ends as with finish, no reminder")
    func returnsByItself() async throws {
        let guest = try await GuestRequestRig()
        defer { guest.stop() }
        let rig = guest.rig
        #expect(try await guest.source.ask("prepare u200", from: "fpga-dev") == Self.prepared)
        ReflashRig.plugCard(rig.bus.sysfs, id: "10ee:9038")
        await rig.added(id: "10ee:9038")
        try await waitUntil("back in its guest") { await rig.isBackInItsGuest() }
        #expect(!rig.hasStateFile())
        #expect(rig.bus.rescanCount == 0)
        // A late finish finds nothing to do and touches nothing.
        #expect(try await guest.source.ask("finish u200", from: "fpga-dev")
            == "error refused u200 is on the bus: finish only follows prepare, and never rescans under a card that is present")
        try await Task.sleep(for: .milliseconds(2500))
        #expect(rig.notifications(.reflashNotFinished).isEmpty)
        #expect(rig.bus.rescanCount == 0)
    }

    @Test("held with no finish within recovery-timeout: one notification naming the card, its guest and how to finish; still held")
    func notFinished() async throws {
        let guest = try await GuestRequestRig(recoveryTimeout: "1s")
        defer { guest.stop() }
        let rig = guest.rig
        #expect(try await guest.source.ask("prepare u200", from: "fpga-dev") == Self.prepared)
        try await waitUntil("reminded") { !rig.notifications(.reflashNotFinished).isEmpty }
        try await Task.sleep(for: .milliseconds(1500))
        let reminders = rig.notifications(.reflashNotFinished)
        #expect(reminders.count == 1)
        let reminder = try #require(reminders.first)
        #expect(reminder.level == .warning)
        #expect(reminder.metadata[LogMetadataKey.card] == "u200")
        #expect(reminder.metadata[LogMetadataKey.guest] == "fpga-dev")
        #expect("\(reminder.message)".contains("send `finish u200` from fpga-dev"))
        #expect(!rig.onBus())
        #expect(try await guest.source.ask("status", from: "fpga-dev") == "ok u200=held")
        // Late is still fine.
        rig.cardReturnsOnRescan(as: "10ee:903f")
        #expect(try await guest.source.ask("finish u200", from: "fpga-dev") == Self.finished)
        try await waitUntil("re-attached") { await rig.isBackInItsGuest() }
    }

    @Test("the channels listened to follow the guest's state and the configuration")
    func watchFollows() async throws {
        let guest = try await GuestRequestRig()
        defer { guest.stop() }
        let rig = guest.rig
        let fpgaDev = GuestName("fpga-dev")!
        try await waitUntil("first watch") { !guest.source.watches.isEmpty }
        #expect(guest.source.watches == [[fpgaDev]])

        await rig.hypervisor.define("fpga-dev", state: .shutOff)
        await guest.service.refreshWatch()
        #expect(guest.source.watches.last == [])
        await rig.hypervisor.define("fpga-dev", state: .running)
        await guest.service.refreshWatch()
        #expect(guest.source.watches.last == [fpgaDev])
        // libvirt gone for a moment: nobody is hung up on.
        await rig.hypervisor.setReachable(false)
        await guest.service.refreshWatch()
        #expect(guest.source.watches.count == 3)
        await rig.hypervisor.setReachable(true)
        // A reload that turns requests off, said the way AgentDaemon says it: the service looks on its own task.
        await rig.supervisor.reload(try ReflashRig.config())
        guest.service.guestsMayHaveChanged()
        try await waitUntil("no guest listened to") { guest.source.watches.count == 4 }
        #expect(guest.source.watches == [[fpgaDev], [], [fpgaDev], []])
    }
}
