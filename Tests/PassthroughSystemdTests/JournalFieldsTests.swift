import Logging
import PassthroughSystemd
import Testing

struct JournalFieldsTests {
    private func encode(
        level: Logger.Level = .notice,
        message: Logger.Message = "card rebound",
        metadata: Logger.Metadata = [:],
        error: (any Error)? = nil
    ) -> [String] {
        JournalFields.encode(
            level: level, message: message, metadata: metadata, error: error,
            identifier: "passthrough-agent", label: "passthrough.sysfs", source: "PassthroughSysfs",
            file: "PassthroughSysfs/Binder.swift", function: "rebind(_:to:)", line: 42
        )
    }

    @Test(arguments: [
        (Logger.Level.trace, 7), (.debug, 7), (.info, 6), (.notice, 5), (.warning, 4), (.error, 3), (.critical, 2),
    ])
    func mapsLevelsToSyslogPriorities(level: Logger.Level, priority: Int) {
        #expect(SyslogPriority(level).rawValue == priority)
        #expect(encode(level: level).contains("PRIORITY=\(priority)"))
    }

    @Test func startsWithTheHandlersOwnFields() {
        #expect(encode() == [
            "MESSAGE=card rebound",
            "PRIORITY=5",
            "SYSLOG_IDENTIFIER=passthrough-agent",
            "CODE_FILE=PassthroughSysfs/Binder.swift",
            "CODE_LINE=42",
            "CODE_FUNC=rebind(_:to:)",
            "LOGGER_LABEL=passthrough.sysfs",
            "LOGGER_SOURCE=PassthroughSysfs",
        ])
    }

    @Test func metadataBecomesSanitisedSortedFields() {
        let fields = encode(metadata: [
            LogMetadataKey.card: "fpga0",
            "pci-slot": "0000:01:00.0",
            LogMetadataKey.driverFrom: "xclmgmt",
            LogMetadataKey.driverTo: "vfio-pci",
            LogMetadataKey.durationMicroseconds: "1200",
        ])
        #expect(Array(fields.dropFirst(8)) == [
            "DRIVER_FROM=xclmgmt",
            "DRIVER_TO=vfio-pci",
            "DURATION_USEC=1200",
            "PASSTHROUGH_CARD=fpga0",
            "PCI_SLOT=0000:01:00.0",
        ])
    }

    @Test func everyFieldNameIsValid() {
        let fields = encode(metadata: ["_private": "x", "9": "y", "weird key!": "z", "message": "m"], error: Failure())
        for field in fields {
            let name = String(field.prefix { $0 != "=" })
            #expect(JournalFieldName.isValid(name), "\(name)")
        }
    }

    @Test func messageIDPassesThrough() {
        #expect(encode(metadata: ["message-id": "60bd35b3daf642e1971e5fbb8afbe012"])
            .contains("MESSAGE_ID=60bd35b3daf642e1971e5fbb8afbe012"))
        #expect(encode(metadata: NotificationKind.cardAppeared.metadata)
            .contains("MESSAGE_ID=60bd35b3daf642e1971e5fbb8afbe012"))
    }

    @Test func reservedNamesAreNotDuplicated() {
        let fields = encode(metadata: ["message": "shadow", "PRIORITY": "0"])
        #expect(fields.filter { $0.hasPrefix("MESSAGE=") } == ["MESSAGE=card rebound"])
        #expect(fields.filter { $0.hasPrefix("PRIORITY=") } == ["PRIORITY=5"])
        #expect(fields.contains("META_MESSAGE=shadow"))
        #expect(fields.contains("META_PRIORITY=0"))
    }

    @Test func multiLineValuesAreKeptVerbatim() {
        let fields = encode(message: "config rejected", metadata: ["detail": "a.toml:1:1: x\na.toml:2:1: y"])
        #expect(fields.contains("DETAIL=a.toml:1:1: x\na.toml:2:1: y"))
        #expect(fields.first == "MESSAGE=config rejected")
    }

    @Test func errorBecomesAField() {
        #expect(encode(error: Failure()).contains("ERROR=unbind refused"))
    }
}

private struct Failure: Error, CustomStringConvertible {
    var description: String { "unbind refused" }
}
