import PassthroughCore
@testable import PassthroughUdev
import SystemPackage
import Testing

/// Decoding of what libudev reports, without libudev: runs everywhere.
@Suite("Decoding udev device properties")
struct UdevDeviceRecordTests {
    private let syspath = "/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0"

    private func record(
        action: String? = "change", sysname: String? = "0000:01:00.0", driver: String? = "xdma",
        sequenceNumber: UInt64 = 42, _ properties: [String: String] = [:]
    ) -> UdevDeviceRecord {
        UdevDeviceRecord(
            action: action, syspath: syspath, sysname: sysname, driver: driver,
            sequenceNumber: sequenceNumber, properties: properties)
    }

    @Test("an AER change event decodes into core types, in lower case")
    func aerChange() throws {
        let event = try record([
            "PCI_SLOT_NAME": "0000:01:00.0", "PCI_ID": "10EE:903F",
            "ERROR_EVENT": "FAILED_RECOVERY", "DEVICE_ONLINE": "0",
        ]).decode(isColdplug: false).get()

        #expect(event == UdevEvent(
            action: .change, syspath: syspath, address: PCIAddress("0000:01:00.0")!,
            id: PCIID(vendor: 0x10ee, device: 0x903f), driver: DriverName("xdma"),
            errorEvent: .failedRecovery, deviceOnline: false, sequenceNumber: 42))
        #expect(event.id?.description == "10ee:903f")
    }

    @Test("remove and unbind carry no driver; the address falls back to the sysfs name")
    func removeWithoutSlotName() throws {
        for action in ["remove", "unbind"] {
            let event = try record(action: action, ["PCI_ID": "10ee:903f"]).decode(isColdplug: false).get()
            #expect(event.action == UdevAction(action))
            #expect(event.driver == nil)
            #expect(event.address.description == "0000:01:00.0")
            #expect(event.id == PCIID("10ee:903f"))
        }
    }

    @Test("coldplug records become add without a sequence number; the ID comes from sysfs if needed")
    func coldplug() throws {
        var raw = record(action: nil, sequenceNumber: 0)
        raw.sysfsVendor = "0x10ee\n"
        raw.sysfsDevice = "0x903f\n"
        let event = try raw.decode(isColdplug: true).get()
        #expect(event.action == .add)
        #expect(event.isColdplug)
        #expect(event.sequenceNumber == nil)
        #expect(event.id == PCIID("10ee:903f"))
        #expect(event.driver == DriverName("xdma"))
    }

    @Test("other actions and unknown AER values pass through verbatim")
    func passThrough() throws {
        let event = try record(action: "move", ["ERROR_EVENT": "SOMETHING_NEW", "DEVICE_ONLINE": "1"])
            .decode(isColdplug: false).get()
        #expect(event.action == .other("move"))
        #expect(event.errorEvent == .other("SOMETHING_NEW"))
        #expect(event.deviceOnline == true)
    }

    @Test("devices behind an Intel VMD (domain 10000 and up) decode, from PCI_SLOT_NAME or the sysfs name", arguments: [
        (["PCI_SLOT_NAME": "10000:e0:00.0", "PCI_ID": "8086:2030"], "10000:e0:00.0"),
        (["PCI_ID": "8086:2030"], "10001:e1:00.0"),
        (["PCI_SLOT_NAME": "5d0505:01:00.1"], "5d0505:01:00.1"),
    ])
    func vmdDomain(properties: [String: String], address: String) throws {
        let raw = UdevDeviceRecord(
            action: "add", syspath: "/sys/devices/pci0000:00/0000:00:0e.0/pci10001:e1/10001:e1:00.0",
            sysname: "10001:e1:00.0", driver: "pcieport", sequenceNumber: 7, properties: properties)
        // Before: a parse failure, so every uevent of such a device was a resync and a full re-enumeration.
        let event = try raw.decode(isColdplug: false).get()
        #expect(event.address.description == address)
    }

    @Test("broken records are reported with the field at fault", arguments: [
        (UdevDeviceRecord(action: "add", syspath: nil, sysname: "0000:01:00.0"), "SYSPATH", nil),
        (UdevDeviceRecord(action: nil, syspath: "/sys/x", sysname: "0000:01:00.0"), "ACTION", nil),
        (UdevDeviceRecord(action: "add", syspath: "/sys/x", sysname: "bogus"), "PCI_SLOT_NAME", "bogus"),
        (UdevDeviceRecord(action: "add", syspath: "/sys/x", sysname: nil), "PCI_SLOT_NAME", nil),
        (UdevDeviceRecord(action: "add", syspath: "/sys/x", sysname: "0000:01:00.0",
                          properties: ["PCI_SLOT_NAME": "../../x"]), "PCI_SLOT_NAME", "../../x"),
        (UdevDeviceRecord(action: "add", syspath: "/sys/x", sysname: "0000:01:00.0",
                          properties: ["PCI_ID": "10ee"]), "PCI_ID", "10ee"),
        (UdevDeviceRecord(action: "add", syspath: "/sys/x", sysname: "0000:01:00.0", driver: "../evil"), "DRIVER", "../evil"),
        (UdevDeviceRecord(action: "change", syspath: "/sys/x", sysname: "0000:01:00.0",
                          properties: ["DEVICE_ONLINE": "yes"]), "DEVICE_ONLINE", "yes"),
    ] as [(UdevDeviceRecord, String, String?)])
    func broken(record: UdevDeviceRecord, field: String, value: String?) {
        let result = record.decode(isColdplug: false)
        guard case .failure(let error) = result else {
            Issue.record("expected a failure, got \(result)")
            return
        }
        #expect(error == UdevParseError(syspath: record.syspath, field: field, value: value))
    }
}

@Suite("udev vocabulary")
struct UdevVocabularyTests {
    @Test("actions and AER values print back what the kernel sent", arguments: [
        "add", "remove", "bind", "unbind", "change", "move", "offline",
    ])
    func actionRoundTrip(raw: String) {
        #expect(UdevAction(raw).description == raw)
    }

    @Test("AER values map to cases and print back", arguments: [
        ("BEGIN_RECOVERY", AERErrorEvent.beginRecovery),
        ("SUCCESSFUL_RECOVERY", .successfulRecovery),
        ("FAILED_RECOVERY", .failedRecovery),
        ("NEW_THING", .other("NEW_THING")),
    ])
    func aerRoundTrip(raw: String, expected: AERErrorEvent) {
        #expect(AERErrorEvent(raw) == expected)
        #expect(expected.description == raw)
    }

    @Test("errors and resync reasons explain themselves")
    func descriptions() {
        #expect(UdevError(.enableReceiving, errno: .permissionDenied).description
            == "udev_monitor_enable_receiving failed: Permission denied")
        #expect(UdevError(.alreadyStarted).description == "the monitor was already started or shut down")
        #expect(UdevResyncReason.receiveBufferOverflow.description.contains("ENOBUFS"))
        #expect(UdevParseError(syspath: "/sys/x", field: "PCI_ID", value: nil).description == "/sys/x: missing PCI_ID")
    }
}
