import Foundation
import Testing

/// `systemd/passthrough-agent.service` as `(section, key, value)` triples, in file order.
private func unitDirectives() throws -> [(section: String, key: String, value: String)] {
    var section = ""
    var directives: [(section: String, key: String, value: String)] = []
    for raw in try RepositoryFile.contents(UnitFileTests.unitPath).split(separator: "\n") {
        let line = raw.trimmingCharacters(in: .whitespaces)
        if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
        if line.hasPrefix("[") {
            section = String(line.dropFirst().dropLast())
        } else if let equals = line.firstIndex(of: "=") {
            directives.append((section, String(line[..<equals]), String(line[line.index(after: equals)...])))
        }
    }
    return directives
}

struct UnitFileTests {
    static let unitPath = "systemd/passthrough-agent.service"
    private static let analyze = "/usr/bin/systemd-analyze"
    /// 2.6 since the agent reads other processes' open files (CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH, every
    /// process visible), to find who holds a card before it takes it away.
    private static let ceiling = 2.6

    @Test func requiredServiceSettings() throws {
        let service = Dictionary(try unitDirectives().filter { $0.section == "Service" }.map { ($0.key, $0.value) }) { _, last in last }
        #expect(service["Type"] == "notify")
        #expect(service["NotifyAccess"] == "main")
        #expect(service["ExecStart"] == "/usr/local/bin/passthrough-agent run")
        #expect(service["ExecReload"] == "/bin/kill -HUP $MAINPID")
        #expect(service["WatchdogSec"] == "30s")
        #expect(service["Restart"] == "on-failure")
        #expect(service["RestartPreventExitStatus"] == "78")
        #expect(service["RuntimeDirectory"] == "passthrough-agent")
        #expect(service["RuntimeDirectoryMode"] == "0700")
        // A reflash in progress (card held, port masked) survives `systemctl stop` as well as a restart.
        #expect(service["RuntimeDirectoryPreserve"] == "yes")
        #expect(service["ConfigurationDirectory"] == "passthrough-agent")
        #expect(service["CapabilityBoundingSet"]?.split(separator: " ").contains("CAP_SYS_ADMIN") == true)
        #expect(Set(service["RestrictAddressFamilies"]?.split(separator: " ") ?? []) == ["AF_UNIX", "AF_NETLINK"])
        #expect(service["ProcSubset"] != "pid", "/proc/cmdline must stay readable")
    }

    /// A card held for a reflash stays held across `systemctl stop` and `start`: its record, with the
    /// upstream port's saved registers, is in /run/passthrough-agent/cards. `restart` would delete it on
    /// a stop, and the next start would know neither that the card is off the bus nor how to unmask the port.
    @Test func reflashStateSurvivesAStop() throws {
        let service = Dictionary(try unitDirectives().filter { $0.section == "Service" }.map { ($0.key, $0.value) }) { _, last in last }
        #expect(service["RuntimeDirectoryPreserve"] == "yes")
    }

    /// Who holds a card: another user's /proc/PID/fd must be listable (CAP_DAC_READ_SEARCH) and its links
    /// followable (CAP_SYS_PTRACE), and no process may be hidden, or a QEMU holding a card looks like none.
    @Test func otherProcessesOpenFilesAreVisible() throws {
        let service = Dictionary(try unitDirectives().filter { $0.section == "Service" }.map { ($0.key, $0.value) }) { _, last in last }
        let capabilities = Set(service["CapabilityBoundingSet"]?.split(separator: " ").map(String.init) ?? [])
        #expect(capabilities.isSuperset(of: ["CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"]))
        #expect(service["ProtectProc"] == nil || service["ProtectProc"] == "default")
        #expect(service["ProcSubset"] != "pid")
    }

    /// Each of these would break the daemon: /sys read-only, udev netlink unreachable.
    @Test func noSettingThatBreaksRebinding() throws {
        let keys = try unitDirectives().map(\.key)
        for forbidden in ["ProtectKernelTunables", "PrivateNetwork", "ReadOnlyPaths", "InaccessiblePaths", "DynamicUser", "User"] {
            #expect(!keys.contains(forbidden), "\(forbidden)")
        }
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: analyze), "needs systemd-analyze (systemd ≥ 250 for --offline)"))
    func exposureStaysLow() async throws {
        let run = try await ToolRun.run(Self.analyze, ["security", "--offline=true", RepositoryFile.url(Self.unitPath).path])
        #expect(run.status == 0, "\(run.output)")
        let match = try #require(run.output.firstMatch(of: #/Overall exposure level for passthrough-agent\.service: (\d+\.\d+)/#), "\(run.output)")
        let exposure = try #require(Double(match.1))
        #expect(exposure <= Self.ceiling, "\(run.output)")

        // The number recorded at the top of the unit should be the one systemd-analyze reports.
        let header = try RepositoryFile.contents(Self.unitPath)
        #expect(header.contains("Overall exposure level for passthrough-agent.service: \(match.1)"))
    }
}
