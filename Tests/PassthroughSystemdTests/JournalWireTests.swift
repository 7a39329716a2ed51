import Glibc
import Logging
import PassthroughSystemd
import Testing

/// What journald would receive from ``AgentLogHandler``, read from a fake journald socket.
///
/// libsystemd only ever writes to /run/systemd/journal/socket, so this needs a private mount
/// namespace; it runs only when asked, never against a real journald:
///
///     unshare -m --propagation private sh -c 'mount -t tmpfs tmpfs /run/systemd &&
///       mkdir /run/systemd/journal && PASSTHROUGH_FAKE_JOURNAL=1 swift test --skip-build \
///       --scratch-path .build-systemd --filter JournalWireTests'
@Suite(.enabled(if: getenv("PASSTHROUGH_FAKE_JOURNAL") != nil, "set PASSTHROUGH_FAKE_JOURNAL=1 inside a mount namespace"))
struct JournalWireTests {
    /// Splits a native-protocol datagram into fields: `NAME=value\n`, or for values with a
    /// newline `NAME\n` + 64-bit little-endian length + value + `\n`.
    private func fields(_ datagram: [UInt8]) throws -> [String: String] {
        var fields: [String: String] = [:]
        var rest = datagram[...]
        while !rest.isEmpty {
            let lineEnd = try #require(rest.firstIndex(of: UInt8(ascii: "\n")))
            let line = rest[..<lineEnd]
            if let equals = line.firstIndex(of: UInt8(ascii: "=")) {
                fields[String(decoding: line[..<equals], as: UTF8.self)] = String(decoding: line[(equals + 1)...], as: UTF8.self)
                rest = rest[(lineEnd + 1)...]
            } else {
                let lengthStart = lineEnd + 1
                let length = rest[lengthStart..<(lengthStart + 8)].reversed().reduce(0) { $0 << 8 | Int($1) }
                let valueStart = lengthStart + 8
                fields[String(decoding: line, as: UTF8.self)] = String(decoding: rest[valueStart..<(valueStart + length)], as: UTF8.self)
                rest = rest[(valueStart + length + 1)...]
            }
        }
        return fields
    }

    @Test func handlerSendsStructuredFields() throws {
        let journal = try FakeDatagramSocket(path: LogDestination.journalSocketPath)
        let logger = Logger(label: "passthrough.test") { AgentLogHandler.journal(label: $0) }
        logger.error("rebind failed", metadata: NotificationKind.stepFailed.metadata([
            LogMetadataKey.card: "fpga0", "pci-slot": "0000:01:00.0", "detail": "line one\nline two",
        ]))

        let received = try fields(try #require(journal.receiveBytes(), "nothing reached the fake journald"))
        #expect(received["MESSAGE"] == "rebind failed")
        #expect(received["PRIORITY"] == "3")
        #expect(received["SYSLOG_IDENTIFIER"] == "passthrough-agent")
        #expect(received["CODE_FILE"]?.hasSuffix("JournalWireTests.swift") == true)
        #expect(received["CODE_LINE"].flatMap { Int($0) } != nil)
        #expect(received["CODE_FUNC"] == "handlerSendsStructuredFields()")
        #expect(received["MESSAGE_ID"] == "54a0b6a8aeb44d15865234500560809a")
        #expect(received["PASSTHROUGH_CARD"] == "fpga0")
        #expect(received["PCI_SLOT"] == "0000:01:00.0")
        #expect(received["DETAIL"] == "line one\nline two")
    }
}
