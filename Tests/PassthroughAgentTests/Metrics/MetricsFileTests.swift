import Foundation
import InMemoryLogging
import Logging
@testable import PassthroughAgent
import PassthroughConfig
import PassthroughCore
import PassthroughLibvirt
import PassthroughSystemd
import PassthroughTestSupport
import PassthroughUdev
import Testing

/// The metrics file as node_exporter's textfile collector reads it, written by the daemon's own pieces on the
/// emulated bus: what a Prometheus user sees of each card.
@Suite("Metrics: the textfile node_exporter reads", .serialized)
struct MetricsFileTests {
    /// The reflash rig with its facts going to `metrics`, and the file kept under its temporary root.
    private static func rig(_ metrics: AgentMetrics, recoveryTimeout: String = "2s") async throws -> (ReflashRig, Textfile, Task<Void, Never>) {
        let rig = try await ReflashRig(recoveryTimeout: recoveryTimeout) { $0.observer = metrics }
        let textfile = Textfile(under: rig.bus.sysfs.root)
        return (rig, textfile, textfile.keep(metrics))
    }

    @Test("a card lent to its running guest: placement attached, attached 1, guest running 1, its slot, ID and guest, its link")
    func lentCard() async throws {
        let metrics = AgentMetrics(wallClock: { 1_764_000_000 })
        let (rig, textfile, writer) = try await Self.rig(metrics)
        defer { rig.loop.cancel(); writer.cancel() }
        rig.bus.setLink(ReflashRig.port, current: ("8.0 GT/s PCIe", 16), maximum: ("8.0 GT/s PCIe", 16))
        rig.bus.setLink("\(ReflashRig.function)", current: ("8.0 GT/s PCIe", 16), maximum: ("8.0 GT/s PCIe", 16))
        await rig.added()   // looked at again, link included
        await rig.supervisor.handle(HypervisorEvent.connected)

        try await waitUntil("the file shows the card in its guest") {
            textfile.has(#"passthrough_agent_card_link_width_lanes{card="u200"} 16.0"#, "passthrough_agent_libvirt_connected 1.0")
        }
        #expect(textfile.has(
            #"passthrough_agent_card_placement{card="u200",placement="attached"} 1.0"#,
            #"passthrough_agent_card_placement{card="u200",placement="host"} 0.0"#,
            #"passthrough_agent_card_placement{card="u200",placement="vfio_idle"} 0.0"#,
            #"passthrough_agent_card_placement{card="u200",placement="held"} 0.0"#,
            #"passthrough_agent_card_placement{card="u200",placement="recovering"} 0.0"#,
            #"passthrough_agent_card_placement{card="u200",placement="gave_up"} 0.0"#,
            #"passthrough_agent_card_attached{card="u200"} 1.0"#,
            #"passthrough_agent_card_guest_running{card="u200"} 1.0"#,
            #"passthrough_agent_card_info{card="u200",address="0000:01:00",id="10ee:903f",guest="fpga-dev"} 1.0"#,
            #"passthrough_agent_card_link_speed_transfers_per_second{card="u200"} 8000000000.0"#,
            #"passthrough_agent_card_last_transition_timestamp_seconds{card="u200"} 1764000000.0"#,
            #"passthrough_agent_reflashes_total{card="u200",kind="announced",result="recovered"} 0"#,
            #"passthrough_agent_recoveries_total{card="u200",kind="aer",result="gave_up"} 0"#,
            #"passthrough_agent_step_failures_total{action="attach"} 0"#,
            #"passthrough_agent_udev_resyncs_total 0"#,
            #"passthrough_agent_reattach_duration_seconds_count{card="u200"} 0"#,
            "# TYPE passthrough_agent_card_placement gauge",
            "# TYPE passthrough_agent_reattach_duration_seconds histogram"
        ), "\(textfile.text ?? "no file")")
        // node_exporter runs as its own user, and the unit's UMask=0077 must not hide the file from it.
        #expect(textfile.mode == 0o644)
    }

    @Test("reflash --prepare: held; --finish with a new ID: back in the guest, one announced reflash counted, the re-attach timed, the old ID's info gone")
    func reflash() async throws {
        let metrics = AgentMetrics()
        let (rig, textfile, writer) = try await Self.rig(metrics)
        defer { rig.loop.cancel(); writer.cancel() }

        _ = try await rig.supervisor.reflash(ReflashRig.card, .prepare)
        try await waitUntil("held, off its guest") {
            textfile.has(#"passthrough_agent_card_placement{card="u200",placement="held"} 1.0"#,
                         #"passthrough_agent_card_placement{card="u200",placement="attached"} 0.0"#,
                         #"passthrough_agent_card_attached{card="u200"} 0.0"#)
        }
        #expect(textfile.has(#"passthrough_agent_card_guest_running{card="u200"} 1.0"#))

        rig.cardReturnsOnRescan(as: "10ee:9038")
        _ = try await rig.supervisor.reflash(ReflashRig.card, .finish)
        try await waitUntil("back in its guest, counted and timed") {
            textfile.has(#"passthrough_agent_card_placement{card="u200",placement="attached"} 1.0"#,
                         #"passthrough_agent_reflashes_total{card="u200",kind="announced",result="recovered"} 1"#,
                         #"passthrough_agent_reattach_duration_seconds_count{card="u200"} 1"#)
        }
        let text = try #require(textfile.text)
        #expect(text.contains(#"passthrough_agent_card_info{card="u200",address="0000:01:00",id="10ee:9038",guest="fpga-dev"} 1.0"#))
        #expect(!text.contains(#"id="10ee:903f""#), "the info series of the ID before the reflash is gone")
        #expect(textfile.has(#"passthrough_agent_reattach_duration_seconds_bucket{card="u200",le="+Inf"} 1"#,
                             #"passthrough_agent_card_placement{card="u200",placement="held"} 0.0"#))
        Self.keepSample(textfile)
    }

    @Test("a card lost (AER) that never comes back: gave_up, and the recovery counted as aer/gave_up")
    func recoveryGaveUp() async throws {
        let metrics = AgentMetrics()
        let (rig, textfile, writer) = try await Self.rig(metrics)
        defer { rig.loop.cancel(); writer.cancel() }
        await rig.supervisor.cardLost(ReflashRig.card, cause: .aer, reason: "AER recovery failed on 0000:01:00.0")
        try await waitUntil("gave up") {
            textfile.has(#"passthrough_agent_card_placement{card="u200",placement="gave_up"} 1.0"#,
                         #"passthrough_agent_recoveries_total{card="u200",kind="aer",result="gave_up"} 1"#)
        }
        #expect(textfile.has(#"passthrough_agent_card_attached{card="u200"} 0.0"#))
        // Absent: no link to tell.
        #expect(textfile.text?.contains("passthrough_agent_card_link_speed_transfers_per_second{") == false)
    }

    @Test("a card that leaves the bus by itself (hotplug slot) and returns: an unannounced reflash, timed to its re-attach")
    func unannouncedReflash() async throws {
        let metrics = AgentMetrics()
        let (rig, textfile, writer) = try await Self.rig(metrics)
        defer { rig.loop.cancel(); writer.cancel() }
        // pciehp removes the function (the guest's QEMU lets go first), then enumerates it again.
        await rig.hypervisor.unplug(ReflashRig.function, from: "fpga-dev")
        rig.bus.sysfs.removeFunction("\(ReflashRig.function)")
        await rig.supervisor.handle(.device(UdevEvent(
            action: .remove, isColdplug: false, syspath: "/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0",
            address: ReflashRig.function, id: nil, driver: nil, errorEvent: nil, deviceOnline: nil, sequenceNumber: nil)))
        try await waitUntil("absent") { await rig.supervisor.summary == "u200: absent" }
        ReflashRig.plugCard(rig.bus.sysfs, id: "10ee:903f")
        await rig.added()
        try await waitUntil("back, counted as unannounced and timed") {
            textfile.has(#"passthrough_agent_reflashes_total{card="u200",kind="unannounced",result="recovered"} 1"#,
                         #"passthrough_agent_reattach_duration_seconds_count{card="u200"} 1"#,
                         #"passthrough_agent_card_placement{card="u200",placement="attached"} 1.0"#)
        }
        #expect(textfile.has(#"passthrough_agent_reflashes_total{card="u200",kind="announced",result="recovered"} 0"#))
    }

    @Test("an attach that fails is counted by action; a udev overflow and libvirt going away are said")
    func failuresAndSources() async throws {
        let metrics = AgentMetrics()
        var options = CardSupervisor.Options.fast
        options.observer = metrics
        let fixture = try await DaemonFixture.make(options: options)
        await fixture.hypervisor.failAttaches(1)
        await fixture.pass()
        await fixture.supervisor.handle(UdevMonitorEvent.resync(.receiveBufferOverflow))
        await fixture.supervisor.handle(HypervisorEvent.disconnected(reason: "libvirtd stopped"))
        let text = metrics.exposition()
        #expect(text.contains("passthrough_agent_step_failures_total{action=\"attach\"} 1\n"), "\(text)")
        #expect(text.contains("passthrough_agent_step_failures_total{action=\"bind-vfio\"} 0\n"))
        #expect(text.contains("passthrough_agent_udev_resyncs_total 1\n"))
        #expect(text.contains("passthrough_agent_libvirt_connected 0.0\n"))
        // Retrying after the failure: in none of the six places, and its guest still runs.
        let placed = text.split(separator: "\n").filter { $0.hasPrefix("passthrough_agent_card_placement{") && $0.hasSuffix(" 1.0") }
        #expect(placed.isEmpty, "\(placed)")
        #expect(text.contains(#"passthrough_agent_card_placement{card="u200",placement="attached"} 0.0"#))
        #expect(text.contains("passthrough_agent_card_guest_running{card=\"u200\"} 1.0\n"))
    }

    @Test("a card removed from the configuration takes its series with it")
    func forgottenCard() async throws {
        let metrics = AgentMetrics()
        let (rig, textfile, writer) = try await Self.rig(metrics)
        defer { rig.loop.cancel(); writer.cancel() }
        try await waitUntil("u200 in the file") { textfile.text?.contains(#"card="u200""#) == true }
        await rig.supervisor.reload(try ConfigLoader.parse("", path: "config.toml"))
        try await waitUntil("u200 gone") { textfile.text.map { !$0.contains(#"card="u200""#) } ?? false }
        #expect(textfile.has("passthrough_agent_libvirt_connected 0.0"))
    }

    // MARK: The writer

    @Test("nothing changes: the file is still replaced every 30 s (node_textfile_mtime_seconds means alive), and not before")
    func refreshedWhenQuiet() async throws {
        let clock = ManualClock()
        let textfile = Textfile(under: FakeSysfs().root)
        let writer = textfile.keep(AgentMetrics(), clock: clock, coalesce: .seconds(2))
        defer { writer.cancel() }
        try await waitUntil("first write, and the refresh waiting") { textfile.inode != nil && clock.waiting == 1 }
        let first = try #require(textfile.inode)
        clock.advance(by: .seconds(29))
        #expect(textfile.inode == first)
        clock.advance(by: .seconds(1))
        try await waitUntil("rewritten at 30 s") { textfile.inode != first && textfile.inode != nil }
        let second = try #require(textfile.inode)
        try await waitUntil("waiting again") { clock.waiting == 1 }
        clock.advance(by: .seconds(30))
        try await waitUntil("rewritten at 60 s") { textfile.inode != second && textfile.inode != nil }
        #expect(textfile.has("passthrough_agent_libvirt_connected 0.0"))
    }

    @Test("a burst of changes right after a write: one write, 2 s later, with all of them")
    func burstsAreCoalesced() async throws {
        let clock = ManualClock()
        let metrics = AgentMetrics()
        let textfile = Textfile(under: FakeSysfs().root)
        let writer = textfile.keep(metrics, clock: clock, coalesce: .seconds(2))
        defer { writer.cancel() }
        try await waitUntil("first write") { textfile.inode != nil && clock.waiting == 1 }
        let first = try #require(textfile.inode)
        for _ in 0..<5 { metrics.record(.udevResync) }
        try await waitUntil("the writer waits out the 2 s") { clock.waiting == 2 }
        #expect(textfile.inode == first)
        #expect(textfile.has("passthrough_agent_udev_resyncs_total 0"))
        clock.advance(by: .seconds(2))
        try await waitUntil("written with all five") { textfile.has("passthrough_agent_udev_resyncs_total 5") }
        #expect(textfile.inode != first)
    }

    @Test("a write that fails is logged once per distinct error, the writer goes on, and says when it works again")
    func failureLoggedOnce() async throws {
        let clock = ManualClock()
        let metrics = AgentMetrics()
        let textfile = Textfile(under: FakeSysfs().root)
        // A directory where the file should be: every rename over it fails the same way (EISDIR).
        try FileManager.default.createDirectory(atPath: textfile.file.string + "/x", withIntermediateDirectories: true)
        let writer = textfile.keep(metrics, clock: clock, coalesce: .seconds(2))
        defer { writer.cancel() }
        let temporary = textfile.directory.appending(".passthrough_agent.prom.new").string
        try await waitUntil("the first attempt, at the start") {
            (try? String(contentsOfFile: temporary, encoding: .utf8))?.contains("passthrough_agent_udev_resyncs_total 0\n") == true
        }
        for count in 1...3 {
            try await waitUntil("writer idle") { clock.waiting == 1 }
            clock.advance(by: .seconds(2))
            metrics.record(.udevResync)
            try await waitUntil("attempt \(count)") {
                (try? String(contentsOfFile: temporary, encoding: .utf8))?.contains("passthrough_agent_udev_resyncs_total \(count)\n") == true
            }
        }
        let errors = textfile.logs.entries.filter { $0.level == .error }
        #expect(errors.count == 1, "\(errors.map(\.message))")
        #expect(errors.first.map { "\($0.message)".contains("cannot write \(textfile.file): Is a directory") } == true,
                "\(errors.map(\.message))")

        try FileManager.default.removeItem(atPath: textfile.file.string)
        try await waitUntil("writer idle") { clock.waiting == 1 }
        clock.advance(by: .seconds(2))
        metrics.record(.udevResync)
        try await waitUntil("written again") { textfile.has("passthrough_agent_udev_resyncs_total 4") }
        try await waitUntil("said so") { textfile.logs.entries.contains { "\($0.message)".contains("written again") } }
        #expect(textfile.logs.entries.filter { $0.level == .error }.count == 1)
    }

    @Test("replaced atomically: a reader never finds a half-written .prom, and no other .prom appears beside it")
    func neverHalfWritten() async throws {
        let metrics = AgentMetrics()
        // Many cards: a file of some size, so that a non-atomic write would be caught in the middle.
        for index in 0..<40 {
            metrics.record(.card(CardReport(card: CardName("card\(index)")!, guest: GuestName("vm\(index)")!, placement: .attached,
                                            attached: true, guestRunning: true, slot: PCISlot("0000:\(index + 10):00"), id: PCIID("10ee:903f"),
                                            link: PCILinkState(speed: 8, width: 16))))
        }
        let textfile = Textfile(under: FakeSysfs().root)
        let writer = textfile.keep(metrics)
        defer { writer.cancel() }
        try await waitUntil("first write") { textfile.text != nil }
        let families = try #require(textfile.text).components(separatedBy: "# TYPE ").count
        let reader = Task.detached {
            var reads = 0
            var bad: [String] = []
            while !Task.isCancelled {
                for name in textfile.names where name.hasSuffix(".prom") && name != "passthrough_agent.prom" { bad.append("stray \(name)") }
                if let text = textfile.text {
                    reads += 1
                    if !text.hasSuffix("\n") || text.components(separatedBy: "# TYPE ").count != families { bad.append("partial: \(text.count) bytes") }
                }
            }
            return (reads, bad)
        }
        for round in 0..<300 { metrics.record(.udevResync); if round % 50 == 0 { await Task.yield() } }
        try await waitUntil("all written") { textfile.has("passthrough_agent_udev_resyncs_total 300") }
        reader.cancel()
        let (reads, bad) = await reader.value
        #expect(reads > 0)
        #expect(bad.isEmpty, "\(bad.prefix(5))")
    }

    /// With PASSTHROUGH_METRICS_SAMPLE=path, a copy of the reflash test's file, for `promtool check metrics`
    /// by hand or for a look.
    private static func keepSample(_ textfile: Textfile) {
        guard let path = ProcessInfo.processInfo.environment["PASSTHROUGH_METRICS_SAMPLE"], let text = textfile.text else { return }
        try? text.write(toFile: path, atomically: true, encoding: .utf8)
    }
}
