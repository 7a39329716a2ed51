#if canImport(Glibc)
import Glibc
#endif
import Logging
import PassthroughAgent
import PassthroughCore
import PassthroughSysfs
import PassthroughTestSupport
import SystemPackage
import Testing

private func guardFor(_ bus: EmulatedPCIBus) -> ReflashGuard {
    ReflashGuard(layout: bus.sysfs.layout, io: bus, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
}

@Suite("Reflash guard on the upstream port")
struct ReflashGuardTests {
    @Test("clear clears exactly SERR# Enable and Fatal Error Reporting Enable; restore puts the file back byte for byte")
    func clearAndRestore() throws {
        let bus = reflashHost()
        let original = bus.sysfs.configBytes(of: "0000:00:01.0")
        let cardBefore = bus.sysfs.configBytes(of: "0000:01:00.0")
        let reflashGuard = guardFor(bus)

        let record = try reflashGuard.read(port: rootPort)
        #expect(record == GuardRecord(port: rootPort, command: 0x0547, deviceControl: 0x2937))
        try reflashGuard.engage(record)
        var expected = original
        expected[0x05] &= ~0x01                                   // Command bit 8
        expected[ConfigSpaceImage.express + 0x08] &= ~0x04        // Device Control bit 2
        #expect(bus.sysfs.configBytes(of: "0000:00:01.0") == expected)

        try reflashGuard.restore(record)
        #expect(bus.sysfs.configBytes(of: "0000:00:01.0") == original)
        #expect(bus.sysfs.configBytes(of: "0000:01:00.0") == cardBefore)
        // Two 16-bit writes to clear, two to restore, nothing else.
        #expect(bus.configWrites.map(\.offset) == [0x04, Int64(ConfigSpaceImage.express + 0x08), 0x04, Int64(ConfigSpaceImage.express + 0x08)])
        #expect(bus.configWrites.allSatisfy { $0.bytes.count == 2 && $0.path == "bus/pci/devices/0000:00:01.0/config" })
    }

    @Test("link-disable: Link Control saved whole; engage sets exactly Link Disable (bit 4), restore puts the file back byte for byte")
    func linkDisable() throws {
        let bus = reflashHost()
        let original = bus.sysfs.configBytes(of: "0000:00:01.0")
        let reflashGuard = guardFor(bus)
        let linkControl = ConfigSpaceImage.express + 0x10

        let record = try reflashGuard.read(port: rootPort, mode: .linkDisable)
        #expect(record == GuardRecord(port: rootPort, command: 0x0547, deviceControl: 0x2937,
                                      linkControl: ConfigSpaceImage.rootPort().get16(linkControl), mode: .linkDisable))
        #expect(try reflashGuard.engage(record))
        var expected = original
        expected[linkControl] |= 0x10
        #expect(bus.sysfs.configBytes(of: "0000:00:01.0") == expected)
        #expect(try bus.configSpace(rootPort).isSet(.serrEnable) && bus.configSpace(rootPort).isSet(.fatalErrorReporting))
        #expect(try !reflashGuard.engage(record), "engaging again writes nothing")

        try reflashGuard.restore(record)
        #expect(bus.sysfs.configBytes(of: "0000:00:01.0") == original)
        #expect(bus.configWrites.map(\.offset) == [Int64(linkControl), Int64(linkControl)])
    }

    @Test("engaging what is engaged writes nothing and says so: a while-lent guard re-asserted after a restart")
    func engageIsIdempotent() throws {
        let bus = reflashHost()
        let reflashGuard = guardFor(bus)
        let record = try reflashGuard.read(port: rootPort, mode: .whileLent)
        #expect(try reflashGuard.engage(record))
        let writes = bus.configWrites.count
        #expect(try !reflashGuard.engage(record))
        #expect(bus.configWrites.count == writes)
        // Something set SERR# again: engaging clears it, and only it.
        try bus.configSpace(rootPort).set(.serrEnable, to: true)
        #expect(try reflashGuard.engage(record))
        #expect(bus.configWrites.count == writes + 2)
        #expect(try !bus.configSpace(rootPort).isSet(.serrEnable))
    }

    @Test("bits that were already clear stay clear after restore")
    func alreadyClear() throws {
        var image = ConfigSpaceImage.rootPort()
        image.set16(0x04, 0x0447)                          // SERR# off
        let bus = reflashHost(port: image)
        let original = bus.sysfs.configBytes(of: "0000:00:01.0")
        let reflashGuard = guardFor(bus)
        let record = try reflashGuard.read(port: rootPort)
        try reflashGuard.engage(record)
        try reflashGuard.restore(record)
        #expect(bus.sysfs.configBytes(of: "0000:00:01.0") == original)
        #expect(try !bus.configSpace(rootPort).isSet(.serrEnable))
    }

    @Test("a port that does not answer is refused before anything is written")
    func portGone() throws {
        let bus = reflashHost()
        bus.dropLink("0000:00:01")
        #expect(throws: ReflashGuardError.configSpace(.notResponding(rootPort))) { try guardFor(bus).read(port: rootPort) }
        #expect(bus.configWrites.isEmpty)
    }

    @Test("config writes refused (kernel lockdown): clear fails and the port is as it was")
    func lockedDown() throws {
        let bus = reflashHost()
        let original = bus.sysfs.configBytes(of: "0000:00:01.0")
        let reflashGuard = guardFor(bus)
        let record = try reflashGuard.read(port: rootPort)
        bus.failWrites(to: "bus/pci/devices/0000:00:01.0/config", with: .notPermitted)
        #expect(throws: ReflashGuardError.self) { try reflashGuard.engage(record) }
        #expect(bus.sysfs.configBytes(of: "0000:00:01.0") == original)
    }
}

@Suite("Reflash state on disk")
struct ReflashStateStoreTests {
    private let u200 = CardName("u200")!
    private let site = ReflashSite(slot: PCISlot("0000:01:00")!, upstreamPort: rootPort,
                                   functions: [PCIAddress("0000:01:00.0")!, PCIAddress("0000:01:00.1")!])

    private func store(_ bus: EmulatedPCIBus) -> ReflashStateStore {
        ReflashStateStore(directory: bus.sysfs.root.appending("run/cards"))
    }

    @Test("held with the guard's registers: one readable file, read back whole; placed removes it")
    func heldRoundTrip() throws {
        let bus = reflashHost()
        let store = store(bus)
        let record = GuardRecord(port: rootPort, command: 0x0547, deviceControl: 0x2937)
        try store.save(.held(site, guard: record), of: u200)
        #expect(try LinuxSysfsIO().read(store.path(of: u200)) == """
            state=held
            slot=0000:01:00
            port=0000:00:01.0
            functions=0000:01:00.0,0000:01:00.1
            guard-command=0x0547
            guard-device-control=0x2937

            """)
        #expect(try store.load(u200) == .held(site, guard: record))
        #expect(try store.cards() == [u200])
        try store.save(.placed, of: u200)
        #expect(!LinuxSysfsIO().exists(store.path(of: u200)))
        #expect(try store.load(u200) == .placed)
    }

    @Test("what a restart resumes: a take-off or bring-back in flight is held; recovering keeps its generation")
    func persistedStates() throws {
        let bus = reflashHost()
        let store = store(bus)
        let record = GuardRecord(port: rootPort, command: 0x0547, deviceControl: 0x2937)
        let cases: [(ReflashState, ReflashState)] = [
            (.takingOff(site, guard: record), .held(site, guard: record)),
            (.takingOff(site, guard: nil), .held(site, guard: nil)),
            (.bringingBack(site, guard: record), .held(site, guard: record)),
            (.recovering(site, generation: 7, guard: record), .recovering(site, generation: 7, guard: record)),
            (.recovering(site, generation: 2, guard: nil), .recovering(site, generation: 2, guard: nil)),
            (.gaveUp(site), .gaveUp(site)),
        ]
        for (saved, loaded) in cases {
            try store.save(saved, of: u200)
            #expect(try store.load(u200) == loaded, "\(saved)")
        }
    }

    @Test("while-lent with the card placed: state=lent, the port and the original registers; read back as the machine's lent guard")
    func lentRoundTrip() throws {
        let bus = reflashHost()
        let store = store(bus)
        let record = GuardRecord(port: rootPort, command: 0x0547, deviceControl: 0x2937, mode: .whileLent)
        try store.save(.placed, lentGuard: record, of: u200)
        #expect(try LinuxSysfsIO().read(store.path(of: u200)) == """
            state=lent
            port=0000:00:01.0
            guard=while-lent
            guard-command=0x0547
            guard-device-control=0x2937

            """)
        let resumed = try store.resume(u200)
        #expect(resumed.state == .placed)
        #expect(resumed.lentGuard == record)
        #expect(try store.cards() == [u200])
        try store.save(.placed, lentGuard: nil, of: u200)
        #expect(!LinuxSysfsIO().exists(store.path(of: u200)))
    }

    @Test("a while-lent guard outlives the reflash it is held across; a link-disable record keeps Link Control")
    func guardsAcrossStates() throws {
        let bus = reflashHost()
        let store = store(bus)
        let lent = GuardRecord(port: rootPort, command: 0x0547, deviceControl: 0x2937, mode: .whileLent)
        let link = GuardRecord(port: rootPort, command: 0x0547, deviceControl: 0x2937, linkControl: 0x0040, mode: .linkDisable)
        let cases: [(ReflashState, GuardRecord?, ReflashState, GuardRecord?)] = [
            (.takingOff(site, guard: nil), lent, .held(site, guard: nil), lent),
            (.held(site, guard: nil), lent, .held(site, guard: nil), lent),
            (.recovering(site, generation: 4, guard: nil), lent, .recovering(site, generation: 4, guard: nil), lent),
            (.gaveUp(site), lent, .gaveUp(site), lent),
            (.held(site, guard: link), nil, .held(site, guard: link), nil),
            (.bringingBack(site, guard: link), nil, .held(site, guard: link), nil),
        ]
        for (state, lentGuard, loadedState, loadedLent) in cases {
            try store.save(state, lentGuard: lentGuard, of: u200)
            let resumed = try store.resume(u200)
            #expect(resumed.state == loadedState, "\(state)")
            #expect(resumed.lentGuard == loadedLent, "\(state)")
        }
        try store.save(.held(site, guard: link), of: u200)
        #expect(try LinuxSysfsIO().read(store.path(of: u200)).contains("guard=link-disable\nguard-command=0x0547\nguard-device-control=0x2937\nguard-link-control=0x0040\n"))
    }

    @Test("a file that is not ours is reported, and left alone")
    func foreign() throws {
        let bus = reflashHost()
        let store = store(bus)
        for text in ["garbage\n", "state=held\nslot=0000:01:00\n", "state=held\nstate=held\nslot=0000:01:00\nport=0000:00:01.0\nfunctions=\n",
                     "state=held\nslot=0000:01:00\nport=0000:00:01.0\nfunctions=\nguard-command=0x0547\n",
                     // A link-disable record without Link Control, a mode that is not one, a lent state without a while-lent guard.
                     "state=held\nslot=0000:01:00\nport=0000:00:01.0\nfunctions=\nguard=link-disable\nguard-command=0x0547\nguard-device-control=0x2937\n",
                     "state=held\nslot=0000:01:00\nport=0000:00:01.0\nfunctions=\nguard=off\nguard-command=0x0547\nguard-device-control=0x2937\n",
                     "state=lent\nport=0000:00:01.0\nguard-command=0x0547\nguard-device-control=0x2937\n",
                     "state=lent\nport=0000:00:01.0\n"] {
            bus.sysfs.writeFileCreatingDirectories("run/cards/u200", text)
            #expect(throws: ReflashStateError.self, "\(text)") { try store.load(u200) }
            #expect(LinuxSysfsIO().exists(store.path(of: u200)))
        }
    }

    @Test("the directory cannot be made: the save fails, and says where")
    func unsavable() throws {
        let bus = reflashHost()
        bus.sysfs.writeFile("run", "a file where the state directory should be")
        #expect(throws: ReflashStateError.self) { try store(bus).save(.held(site, guard: nil), of: u200) }
    }
}
