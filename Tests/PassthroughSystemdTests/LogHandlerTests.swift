import Glibc
import Logging
import PassthroughSystemd
import Synchronization
import Testing

/// Collects what a handler writes, so tests never touch the real stderr.
private final class CapturedLines: Sendable {
    private let lines = Mutex<[String]>([])
    var all: [String] { lines.withLock { $0 } }
    var sink: LogLineSink { LogLineSink { line in self.lines.withLock { $0.append(line) } } }
}

struct AgentLogHandlerTests {
    @Test func writesLevelCardMessageAndPairs() {
        let captured = CapturedLines()
        var logger = Logger(label: "passthrough.test") { AgentLogHandler.lines(label: $0, sink: captured.sink) }
        logger[metadataKey: LogMetadataKey.card] = "fpga0"
        logger.warning("rebind failed", metadata: [
            "pci-slot": "0000:01:00.0", "note": "two words", "message-id": "54a0b6a8aeb44d15865234500560809a",
        ])
        #expect(captured.all == [#"WARNING [fpga0] rebind failed note="two words" pci-slot=0000:01:00.0"#])
    }

    @Test func omitsBracketsWithoutCardAndHonoursLevel() {
        let captured = CapturedLines()
        var logger = Logger(label: "passthrough.test") { AgentLogHandler.lines(label: $0, sink: captured.sink) }
        logger.debug("hidden at the default level")
        logger.info("agent started")
        logger.logLevel = .debug
        logger.debug("now visible")
        #expect(captured.all == ["INFO agent started", "DEBUG now visible"])
    }

    @Test func callMetadataOverridesProviderOverridesHandler() {
        let captured = CapturedLines()
        let provider = Logger.MetadataProvider { [LogMetadataKey.guest: "from-provider", "task": "resync"] }
        var logger = Logger(label: "passthrough.test") {
            AgentLogHandler.lines(label: $0, sink: captured.sink, metadataProvider: provider)
        }
        logger[metadataKey: LogMetadataKey.guest] = "from-handler"
        logger[metadataKey: "scope"] = "handler"
        logger.notice("attached", metadata: ["task": "attach"])
        #expect(captured.all == ["NOTICE attached GUEST=from-provider scope=handler task=attach"])
    }

    @Test func quotesAndEscapesAwkwardValues() {
        let line = LogLine.format(level: .error, message: "config rejected", metadata: [
            "detail": "line 1\nline \"2\"", "empty": "", "path": "/etc/passthrough-agent/agent.toml",
        ])
        #expect(line == #"ERROR config rejected detail="line 1\nline \"2\"" empty="" path=/etc/passthrough-agent/agent.toml"#)
    }

    /// With no journald, libsystemd drops the entry and reports success: nothing reaches the
    /// fallback. Only run where that is true, so a developer's journal gets no test entries.
    @Test(.enabled(if: access(LogDestination.journalSocketPath, F_OK) != 0, "a journald is listening"))
    func journalHandlerWithoutJournalIsHarmless() {
        let captured = CapturedLines()
        let logger = Logger(label: "passthrough.test") { AgentLogHandler.journal(label: $0, fallback: captured.sink) }
        logger.error("no journal here", metadata: ["detail": "multi\nline"])
        #expect(captured.all.isEmpty)
    }

    @Test func factoryFollowsTheDestination() {
        func output(_ destination: LogDestination) -> AgentLogHandler.Output? {
            (LogHandlers.make(label: "a", metadataProvider: nil, destination: destination) as? AgentLogHandler)?.output
        }
        if case .journal(let identifier, _)? = output(.journal) {
            #expect(identifier == "passthrough-agent")
        } else {
            Issue.record("the journal destination does not write to the journal")
        }
        if case .lines? = output(.standardError) {} else {
            Issue.record("the stderr destination does not write readable lines")
        }
    }
}

struct LogDestinationTests {
    private let stderrIdentity = FileIdentity(device: 25, inode: 4711)

    @Test func journalOnlyWhenStderrIsTheJournalStream() {
        #expect(LogDestination.choose(journalSocketExists: true, journalStream: "25:4711", standardErrorIdentity: stderrIdentity) == .journal)
    }

    @Test func standardErrorOtherwise() {
        // No journald (a container, this CI machine).
        #expect(LogDestination.choose(journalSocketExists: false, journalStream: "25:4711", standardErrorIdentity: stderrIdentity) == .standardError)
        // A terminal or pipe: systemd did not set JOURNAL_STREAM.
        #expect(LogDestination.choose(journalSocketExists: true, journalStream: nil, standardErrorIdentity: stderrIdentity) == .standardError)
        // Inherited from a service, but stderr was redirected since.
        #expect(LogDestination.choose(journalSocketExists: true, journalStream: "25:4712", standardErrorIdentity: stderrIdentity) == .standardError)
        #expect(LogDestination.choose(journalSocketExists: true, journalStream: "garbage", standardErrorIdentity: stderrIdentity) == .standardError)
        #expect(LogDestination.choose(journalSocketExists: true, journalStream: "25:4711", standardErrorIdentity: nil) == .standardError)
    }

    @Test func parsesJournalStream() {
        #expect(FileIdentity(journalStream: "8:123") == FileIdentity(device: 8, inode: 123))
        #expect(FileIdentity(journalStream: "8:") == nil)
        #expect(FileIdentity(journalStream: "8:1:2") == nil)
    }
}
