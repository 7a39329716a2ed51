import PassthroughAgent
import PassthroughCore
import PassthroughLibvirt
import PassthroughSysfs
import PassthroughTestSupport
import Synchronization
import Testing

/// Issue 11's guard modes on the emulated bus, asserting what a person reading the root port back with
/// `setpci` would see: exactly the documented bits flipped while guarded, the port byte for byte as it
/// was afterwards, the original registers on disk whatever happens in between.
@Suite("Reflash guard modes", .serialized)
struct GuardModeTests {
    /// Link Control of the rig's root port.
    static let linkControl = ConfigSpaceImage.express + 0x10
    /// The rig's root port before anything is guarded (its link is up: DLLLA is set in the image).
    static let original = ConfigSpaceImage.rootPort().bytes
    /// ``original`` with SERR# Enable and Fatal Error Reporting Enable cleared, and nothing else.
    static let masked: [UInt8] = {
        var bytes = original
        bytes[0x05] &= ~0x01
        bytes[ConfigSpaceImage.express + 0x08] &= ~0x04
        return bytes
    }()
    static let lentRecord = """
        state=lent
        port=0000:00:01.0
        guard=while-lent
        guard-command=0x0547
        guard-device-control=0x2937

        """

    // MARK: link-disable

    @Test("link-disable: --prepare sets exactly Link Disable on the port, once the card is removed, and masks nothing; --finish clears it before the first rescan and the port ends byte for byte as it was")
    func linkDisable() async throws {
        let rig = try await ReflashRig(extraConfig: "reflash-guard = \"link-disable\"")
        defer { rig.loop.cancel() }
        #expect(portBytes(rig) == Self.original)
        let atRemoval = Recorder<Bool>()
        rig.bus.beforeWrite(to: "bus/pci/devices/0000:01:00.0/remove") { [bus = rig.bus] _ in
            atRemoval.append(linkDisabled(bus))
        }

        _ = try await rig.supervisor.reflash(ReflashRig.card, .prepare)
        #expect(atRemoval.values == [false], "the link is still up while the card's functions are removed")
        var held = Self.original
        held[Self.linkControl] |= 0x10
        #expect(portBytes(rig) == held)
        #expect(try rig.portBits() == (true, true))
        #expect(!rig.onBus())
        #expect(await rig.supervisor.summary == "u200: off the bus for a reflash (link disabled on 0000:00:01.0)")
        #expect(try stateFile(rig).contains("guard=link-disable\n"))

        let atRescan = Recorder<Bool>()
        rig.bus.onRescan { [bus = rig.bus] _ in atRescan.append(linkDisabled(bus)) }
        rig.cardReturnsOnRescan(as: "10ee:903f")
        let finished = try await rig.supervisor.reflash(ReflashRig.card, .finish)
        #expect(finished.hasPrefix("u200 is back"))
        #expect(!atRescan.values.isEmpty && !atRescan.values.contains(true), "rescanned with the link disabled: \(atRescan.values)")
        #expect(portBytes(rig) == Self.original)
        #expect(!rig.hasStateFile())
        try await waitUntil("back in its guest") { await rig.isBackInItsGuest() }
    }

    @Test("link-disable: a restart while held keeps the link disabled; --finish after it enables the link, then brings the card back")
    func linkDisableAcrossRestart() async throws {
        let rig = try await ReflashRig(extraConfig: "reflash-guard = \"link-disable\"")
        _ = try await rig.supervisor.reflash(ReflashRig.card, .prepare)
        #expect(linkDisabled(rig.bus))

        let restarted = await rig.restarted()
        defer { restarted.loop.cancel() }
        try await waitUntil("first pass") { await restarted.supervisor.state(of: ReflashRig.card)?.phase == .absent }
        #expect(linkDisabled(restarted.bus))
        #expect(restarted.hasStateFile())
        #expect(await restarted.supervisor.summary == "u200: off the bus for a reflash (link disabled on 0000:00:01.0)")

        restarted.cardReturnsOnRescan(as: "10ee:903f")
        let finished = try await restarted.supervisor.reflash(ReflashRig.card, .finish)
        #expect(finished.hasPrefix("u200 is back"))
        #expect(portBytes(restarted) == Self.original)
        #expect(!restarted.hasStateFile())
        try await waitUntil("back in its guest") { await restarted.isBackInItsGuest() }
    }

    @Test("link-disable: the link cannot be disabled (config writes refused) → the card is rescanned back, --prepare fails saying so, no state is left")
    func linkDisableRefused() async throws {
        let rig = try await ReflashRig(extraConfig: "reflash-guard = \"link-disable\"")
        defer { rig.loop.cancel() }
        rig.bus.failWrites(to: "bus/pci/devices/0000:00:01.0/config", with: .notPermitted)
        rig.cardReturnsOnRescan(as: "10ee:903f")

        let refused = try #require(await rig.refusal(.prepare))
        #expect(refused.reason == .failed)
        #expect(refused.description.contains("u200: cannot disable the link on 0000:00:01.0"))
        #expect(refused.description.contains("it was rescanned back onto the bus"))
        #expect(refused.description.contains("Kernel lockdown forbids config-space writes"))
        #expect(rig.onBus())
        #expect(portBytes(rig) == Self.original)
        #expect(!rig.hasStateFile())
        try await waitUntil("back in its guest") { await rig.isBackInItsGuest() }
    }

    @Test("link-disable on a port that does not implement Link Disable (the bit reads back zero, as on QEMU's root ports) → the card is rescanned back, --prepare fails naming the port, no state is left")
    func linkDisableNotImplemented() async throws {
        let rig = try await ReflashRig(extraConfig: "reflash-guard = \"link-disable\"")
        defer { rig.loop.cancel() }
        let port = ConfigSpace(address: rootPort, layout: rig.bus.sysfs.layout, io: rig.bus)
        rig.bus.hardWireToZero("\(rootPort)", byteOffset: try port.expressCapability() + 0x10, bits: 0x10)
        rig.cardReturnsOnRescan(as: "10ee:903f")

        let refused = try #require(await rig.refusal(.prepare))
        #expect(refused.reason == .failed)
        #expect(refused.description.contains("u200: cannot disable the link on 0000:00:01.0"))
        #expect(refused.description.contains("ignores writes to"))
        #expect(refused.description.contains("it was rescanned back onto the bus"))
        #expect(rig.onBus())
        #expect(portBytes(rig) == Self.original)
        #expect(!rig.hasStateFile())
        try await waitUntil("back in its guest") { await rig.isBackInItsGuest() }
    }

    @Test("link-disable: the agent died between saving Link Control and removing the card → the restarted agent finds the card on the bus: the reflash is over, the port as it was, no record")
    func linkDisableCrashBeforeRemoval() async throws {
        let rig = try await ReflashRig(extraConfig: "reflash-guard = \"link-disable\"")
        let site = ReflashSite(slot: ReflashRig.function.slot, upstreamPort: rootPort, functions: [ReflashRig.function])
        let saved = try ReflashGuard(layout: rig.bus.sysfs.layout, io: rig.bus, logger: rig.logs.logger())
            .read(port: rootPort, mode: .linkDisable)
        try rig.store.save(.takingOff(site, guard: saved), of: ReflashRig.card)

        let restarted = await rig.restarted()
        defer { restarted.loop.cancel() }
        try await waitUntil("the reflash is over") { await restarted.reflashState() == .placed && !restarted.hasStateFile() }
        #expect(portBytes(restarted) == Self.original)
        #expect(restarted.removals.isEmpty)
        try await waitUntil("in its guest") { await restarted.isBackInItsGuest() }
    }

    // MARK: while-lent

    @Test("while-lent: masked once the card is attached to its running guest, exactly the two bits; released when the guest stops and the card comes home (host driver, or idle on vfio-pci)",
          arguments: [GuestStopPolicy.host, .keep])
    func whileLent(_ whenGuestStops: GuestStopPolicy) async throws {
        let rig = try await ReflashRig(extraConfig: "reflash-guard = \"while-lent\"\nwhen-guest-stops = \"\(whenGuestStops.rawValue)\"")
        defer { rig.loop.cancel() }
        try await waitUntil("masked while lent") { portBytes(rig) == Self.masked }
        #expect(try stateFile(rig) == Self.lentRecord)
        #expect(await rig.supervisor.summary == "u200: attached to fpga-dev (fatal-error reporting masked on 0000:00:01.0 while lent)")

        await rig.hypervisor.define("fpga-dev", state: .shutOff)
        await rig.supervisor.handle(.lifecycle(guest: "fpga-dev", .stopped(.shutdown)))
        let home = whenGuestStops == .host ? "u200: on the host" : "u200: on vfio-pci, fpga-dev not running"
        try await waitUntil("home") { await rig.supervisor.summary == home }
        #expect(portBytes(rig) == Self.original)
        #expect(!rig.hasStateFile())
        // Engaged once, released once: two 16-bit writes each, to the port only.
        #expect(rig.bus.configWrites.map(\.path) == Array(repeating: "bus/pci/devices/0000:00:01.0/config", count: 4))

        // Lent again when the guest starts again.
        await rig.hypervisor.define("fpga-dev", state: .running)
        await rig.supervisor.handle(.lifecycle(guest: "fpga-dev", .started))
        try await waitUntil("masked again") { portBytes(rig) == Self.masked && rig.hasStateFile() }
        #expect(try stateFile(rig) == Self.lentRecord)
    }

    @Test("while-lent survives an agent restart while lent: still masked, the originals on disk untouched, nothing written; released with them when the guest stops")
    func whileLentAcrossRestart() async throws {
        let rig = try await ReflashRig(extraConfig: "reflash-guard = \"while-lent\"")
        try await waitUntil("masked while lent") { portBytes(rig) == Self.masked }
        let writes = rig.bus.configWrites.count

        let restarted = await rig.restarted()
        defer { restarted.loop.cancel() }
        try await waitUntil("attached after the restart") {
            await restarted.supervisor.state(of: ReflashRig.card)?.phase == .converged(.inGuest(GuestName("fpga-dev")!))
        }
        #expect(portBytes(restarted) == Self.masked)
        #expect(try stateFile(restarted) == Self.lentRecord)
        #expect(restarted.bus.configWrites.count == writes)

        await restarted.hypervisor.define("fpga-dev", state: .shutOff)
        await restarted.supervisor.handle(.lifecycle(guest: "fpga-dev", .stopped(.shutdown)))
        try await waitUntil("home") { await restarted.supervisor.summary == "u200: on the host" }
        #expect(portBytes(restarted) == Self.original)
        #expect(!restarted.hasStateFile())
    }

    @Test("while-lent: the agent died between saving the registers and masking them → the restarted agent masks (reading nothing as original), and restores the originals when the card comes home")
    func whileLentCrashBeforeMasking() async throws {
        let rig = try await ReflashRig(extraConfig: "reflash-guard = \"while-lent\"")
        try await waitUntil("masked while lent") { portBytes(rig) == Self.masked }
        let port = rig.bus.configSpace(rootPort)
        // The record is on disk, the bits are as they were: where a kill -9 between the two leaves the port.
        try port.set(.serrEnable, to: true)
        try port.set(.fatalErrorReporting, to: true)

        let restarted = await rig.restarted()
        defer { restarted.loop.cancel() }
        try await waitUntil("masked by the restarted agent") { portBytes(restarted) == Self.masked }
        #expect(try stateFile(restarted) == Self.lentRecord)

        await restarted.hypervisor.define("fpga-dev", state: .shutOff)
        await restarted.supervisor.handle(.lifecycle(guest: "fpga-dev", .stopped(.shutdown)))
        try await waitUntil("home") { await restarted.supervisor.summary == "u200: on the host" }
        #expect(portBytes(restarted) == Self.original)
        #expect(!restarted.hasStateFile())
    }

    @Test("while-lent: a card dropped from the configuration while the agent was down has its port put back at the next start, and its record removed")
    func whileLentLeftover() async throws {
        let rig = try await ReflashRig(extraConfig: "reflash-guard = \"while-lent\"", secondCard: true)
        try await waitUntil("masked while lent") { portBytes(rig) == Self.masked }
        var withoutIt = rig.config
        withoutIt.cards.removeAll { $0.name == ReflashRig.card }

        let restarted = await rig.restarted(with: withoutIt)
        defer { restarted.loop.cancel() }
        #expect(portBytes(restarted) == Self.original)
        #expect(!restarted.hasStateFile())
    }

    @Test("while-lent: a reflash of the lent card finds the port guarded and keeps it so (the originals are never re-read); back in its guest it is still lent")
    func whileLentAcrossReflash() async throws {
        let rig = try await ReflashRig(extraConfig: "reflash-guard = \"while-lent\"")
        defer { rig.loop.cancel() }
        try await waitUntil("masked while lent") { portBytes(rig) == Self.masked }
        let writes = rig.bus.configWrites.count

        _ = try await rig.supervisor.reflash(ReflashRig.card, .prepare)
        #expect(portBytes(rig) == Self.masked)
        let held = try stateFile(rig)
        #expect(held.hasPrefix("state=held\n"))
        #expect(held.hasSuffix("guard=while-lent\nguard-command=0x0547\nguard-device-control=0x2937\n"))

        rig.cardReturnsOnRescan(as: "10ee:903f")
        _ = try await rig.supervisor.reflash(ReflashRig.card, .finish)
        try await waitUntil("back in its guest") { await rig.hypervisor.liveHostdevs(of: "fpga-dev") == [ReflashRig.function] }
        try await waitUntil("lent again") { await rig.supervisor.state(of: ReflashRig.card)?.phase == .converged(.inGuest(GuestName("fpga-dev")!)) }
        #expect(portBytes(rig) == Self.masked)
        #expect(try stateFile(rig) == Self.lentRecord)
        #expect(rig.bus.configWrites.count == writes)

        await rig.hypervisor.define("fpga-dev", state: .shutOff)
        await rig.supervisor.handle(.lifecycle(guest: "fpga-dev", .stopped(.shutdown)))
        try await waitUntil("home") { await rig.supervisor.summary == "u200: on the host" }
        #expect(portBytes(rig) == Self.original)
    }

    @Test("while-lent: a card removed from the configuration, or turned to another mode, puts the port back")
    func whileLentReload() async throws {
        let rig = try await ReflashRig(extraConfig: "reflash-guard = \"while-lent\"", secondCard: true)
        defer { rig.loop.cancel() }
        try await waitUntil("masked while lent") { portBytes(rig) == Self.masked }

        var masking = rig.config
        masking.cards[0].reflashGuard = .mask
        await rig.supervisor.reload(masking)
        try await waitUntil("released by the reload") { portBytes(rig) == Self.original }
        #expect(!rig.hasStateFile())
        #expect(await rig.supervisor.summary.hasPrefix("u200: attached to fpga-dev; "))

        await rig.supervisor.reload(rig.config)
        try await waitUntil("masked again") { portBytes(rig) == Self.masked }
        var withoutIt = rig.config
        withoutIt.cards.removeAll { $0.name == ReflashRig.card }
        await rig.supervisor.reload(withoutIt)
        #expect(portBytes(rig) == Self.original)
        #expect(!rig.hasStateFile())
    }

    @Test("while-lent under --dry-run: a guard a previous run left is neither re-asserted nor released; zero config writes")
    func whileLentDryRun() async throws {
        let rig = try await ReflashRig(extraConfig: "reflash-guard = \"while-lent\"")
        try await waitUntil("masked while lent") { portBytes(rig) == Self.masked }
        try rig.bus.configSpace(rootPort).set(.serrEnable, to: true)
        let writes = rig.bus.configWrites.count
        var unguarded = rig.config
        unguarded.cards[0].reflashGuard = .off

        for config in [rig.config, unguarded] {
            let dry = await rig.restarted(with: config, dryRun: true)
            try await waitUntil("first pass") { await dry.supervisor.state(of: ReflashRig.card)?.phase == .converged(.inGuest(GuestName("fpga-dev")!)) }
            try await Task.sleep(for: .milliseconds(100))
            dry.loop.cancel()
            await dry.loop.value
            #expect(dry.bus.configWrites.count == writes)
            #expect(try stateFile(dry) == Self.lentRecord)
        }
    }
}

/// The root port's config space, compared whole; shown (when an expectation fails) as the bytes that differ.
private func portBytes(_ rig: ReflashRig) -> PortBytes {
    PortBytes(bytes: rig.bus.sysfs.configBytes(of: ReflashRig.port))
}

private struct PortBytes: Equatable, CustomStringConvertible {
    var bytes: [UInt8]

    static func == (lhs: PortBytes, rhs: [UInt8]) -> Bool { lhs.bytes == rhs }

    var description: String {
        let original = GuardModeTests.original
        let changed = bytes.indices.filter { $0 >= original.count || bytes[$0] != original[$0] }
        return changed.isEmpty ? "as originally" : changed.map { "0x\(String($0, radix: 16))=0x\(String(bytes[$0], radix: 16))" }.joined(separator: " ")
    }
}

private func linkDisabled(_ bus: EmulatedPCIBus) -> Bool {
    (try? bus.configSpace(rootPort).isSet(.linkDisable)) ?? false
}

private func stateFile(_ rig: ReflashRig) throws -> String {
    try LinuxSysfsIO().read(rig.store.path(of: ReflashRig.card))
}

/// What a hook saw, in order: hooks run on whichever thread writes.
private final class Recorder<Value: Sendable>: Sendable {
    private let seen = Mutex<[Value]>([])

    func append(_ value: Value) { seen.withLock { $0.append(value) } }

    var values: [Value] { seen.withLock { $0 } }
}
