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

/// A fresh state directory under the fake sysfs root (removed with it).
private func guardFor(_ bus: EmulatedPCIBus, directory: String = "run/guard") -> ReflashGuard {
    ReflashGuard(layout: bus.sysfs.layout, io: bus, store: GuardStateStore(directory: bus.sysfs.root.appending(directory)),
                 logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
}

@Suite("Reflash guard on the upstream port")
struct ReflashGuardTests {
    @Test("engage clears exactly SERR# Enable and Fatal Error Reporting Enable; release restores the file byte for byte")
    func engageAndRelease() throws {
        let bus = reflashHost()
        let original = bus.sysfs.configBytes(of: "0000:00:01.0")
        let cardBefore = bus.sysfs.configBytes(of: "0000:01:00.0")
        let reflashGuard = guardFor(bus)

        let record = try reflashGuard.engage(port: rootPort)
        #expect(record == GuardRecord(port: rootPort, command: 0x0547, deviceControl: 0x2937))
        var expected = original
        expected[0x05] &= ~0x01                                   // Command bit 8
        expected[ConfigSpaceImage.express + 0x08] &= ~0x04        // Device Control bit 2
        #expect(bus.sysfs.configBytes(of: "0000:00:01.0") == expected)
        #expect(try reflashGuard.isEngaged(port: rootPort))

        #expect(try reflashGuard.release(port: rootPort))
        #expect(bus.sysfs.configBytes(of: "0000:00:01.0") == original)
        #expect(bus.sysfs.configBytes(of: "0000:01:00.0") == cardBefore)
        #expect(try !reflashGuard.isEngaged(port: rootPort))
        // Two 16-bit writes to clear, two to restore, nothing else.
        #expect(bus.configWrites.map(\.offset) == [0x04, Int64(ConfigSpaceImage.express + 0x08), 0x04, Int64(ConfigSpaceImage.express + 0x08)])
        #expect(bus.configWrites.allSatisfy { $0.bytes.count == 2 && $0.path == "bus/pci/devices/0000:00:01.0/config" })
    }

    @Test("bits that were already clear stay clear after release")
    func alreadyClear() throws {
        var image = ConfigSpaceImage.rootPort()
        image.set16(0x04, 0x0447)                          // SERR# off
        let bus = reflashHost(port: image)
        let original = bus.sysfs.configBytes(of: "0000:00:01.0")
        let reflashGuard = guardFor(bus)
        try reflashGuard.engage(port: rootPort)
        try reflashGuard.release(port: rootPort)
        #expect(bus.sysfs.configBytes(of: "0000:00:01.0") == original)
        #expect(try !bus.configSpace(rootPort).isSet(.serrEnable))
    }

    @Test("the originals are on disk before anything is cleared; engaging twice keeps the first originals")
    func persistedFirst() throws {
        let bus = reflashHost()
        let reflashGuard = guardFor(bus)
        try reflashGuard.engage(port: rootPort)
        let stateFile = reflashGuard.store.path(of: rootPort)
        #expect(try LinuxSysfsIO().read(stateFile) == "port=0000:00:01.0\ncommand=0x0547\ndevice-control=0x2937\n")
        // A second engage reads the cleared registers; it must not save those as the originals.
        #expect(try reflashGuard.engage(port: rootPort).command == 0x0547)
        try reflashGuard.release(port: rootPort)
        #expect(try bus.configSpace(rootPort).command() == 0x0547)
        #expect(!LinuxSysfsIO().exists(stateFile))
    }

    @Test("when the state cannot be saved, nothing is cleared")
    func unsavable() throws {
        let bus = reflashHost()
        let original = bus.sysfs.configBytes(of: "0000:00:01.0")
        bus.sysfs.writeFile("run", "a file where the state directory should be")
        #expect(throws: ReflashGuardError.self) { try guardFor(bus).engage(port: rootPort) }
        #expect(bus.configWrites.isEmpty)
        #expect(bus.sysfs.configBytes(of: "0000:00:01.0") == original)
    }

    @Test("a port that does not answer is refused before anything is saved")
    func portGone() throws {
        let bus = reflashHost()
        bus.dropLink("0000:00:01")
        let reflashGuard = guardFor(bus)
        #expect(throws: ReflashGuardError.configSpace(.notResponding(rootPort))) { try reflashGuard.engage(port: rootPort) }
        #expect(try reflashGuard.store.ports().isEmpty)
    }

    @Test("after a kill -9, a new instance restores what the old one saved")
    func restart() throws {
        let bus = reflashHost()
        let original = bus.sysfs.configBytes(of: "0000:00:01.0")
        try guardFor(bus).engage(port: rootPort)
        // The old agent is gone; only its state directory remains.
        let restarted = guardFor(bus)
        let results = restarted.restoreAll()
        #expect(results.map(\.port) == [rootPort])
        #expect(results.allSatisfy { if case .success = $0.result { true } else { false } })
        #expect(bus.sysfs.configBytes(of: "0000:00:01.0") == original)
        #expect(try restarted.store.ports().isEmpty)
        #expect(restarted.restoreAll().isEmpty)
    }

    @Test("a failed restore keeps the record for the next try")
    func restoreFails() throws {
        let bus = reflashHost()
        let reflashGuard = guardFor(bus)
        try reflashGuard.engage(port: rootPort)
        bus.failWrites(to: "bus/pci/devices/0000:00:01.0/config", with: .ioError)
        #expect(throws: ReflashGuardError.self) { try reflashGuard.release(port: rootPort) }
        #expect(try reflashGuard.isEngaged(port: rootPort))
    }

    @Test("a state file that is not ours is reported and left alone")
    func foreignState() throws {
        let bus = reflashHost()
        let reflashGuard = guardFor(bus)
        bus.sysfs.writeFileCreatingDirectories("run/guard/0000:00:01.0", "garbage\n")
        let results = reflashGuard.restoreAll()
        #expect(results.count == 1)
        #expect(bus.configWrites.isEmpty)
        #expect(LinuxSysfsIO().exists(reflashGuard.store.path(of: rootPort)))
    }
}
