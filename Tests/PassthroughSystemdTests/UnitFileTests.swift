import Foundation
import PassthroughTestSupport
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

/// The `[Service]` settings, the last one winning where a key repeats (as systemd reads single-valued keys).
private func serviceSettings() throws -> [String: String] {
    Dictionary(try unitDirectives().filter { $0.section == "Service" }.map { ($0.key, $0.value) }) { _, last in last }
}

struct UnitFileTests {
    static let unitPath = "systemd/passthrough-agent.service"
    private static let analyze = "/usr/bin/systemd-analyze"
    /// 2.6 since the agent reads other processes' open files (CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH, every
    /// process visible), to find who holds a card before it takes it away.
    private static let ceiling = 2.2

    @Test func requiredServiceSettings() throws {
        let service = try serviceSettings()
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
        let service = try serviceSettings()
        #expect(service["RuntimeDirectoryPreserve"] == "yes")
    }

    /// Who holds a card: another user's /proc/PID/fd must be listable (CAP_DAC_READ_SEARCH) and its links
    /// followable (CAP_SYS_PTRACE), and no process may be hidden, or a QEMU holding a card looks like none.
    @Test func otherProcessesOpenFilesAreVisible() throws {
        let service = try serviceSettings()
        let capabilities = Set(service["CapabilityBoundingSet"]?.split(separator: " ").map(String.init) ?? [])
        #expect(capabilities.isSuperset(of: ["CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"]))
        #expect(service["ProtectProc"] == nil || service["ProtectProc"] == "default")
        #expect(service["ProcSubset"] != "pid")
    }

    /// Each capability the unit keeps is one the agent uses, and the unit's comments say what for.
    @Test func everyCapabilityIsExplained() throws {
        let capabilities = Set(try serviceSettings()["CapabilityBoundingSet"]?.split(separator: " ").map(String.init) ?? [])
        #expect(capabilities == ["CAP_SYS_ADMIN", "CAP_DAC_READ_SEARCH", "CAP_DAC_OVERRIDE", "CAP_SYS_PTRACE"])
        let comments = try RepositoryFile.contents(Self.unitPath).split(separator: "\n").filter { $0.hasPrefix("#") }
        for capability in capabilities {
            #expect(comments.contains { $0.contains(capability) }, "\(capability) is granted without a word on why")
        }
    }

    /// CAP_SYS_PTRACE is there to follow other processes' fd links, CAP_DAC_READ_SEARCH to list them: the
    /// system calls that would use them on other processes' memory, or to open files by handle, stay denied.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: analyze), "needs systemd-analyze"))
    func otherProcessesStayOutOfReach() async throws {
        let filters = try unitDirectives().filter { $0.section == "Service" && $0.key == "SystemCallFilter" }.map(\.value)
        var allowed: Set<String> = []
        for filter in filters {
            let denies = filter.hasPrefix("~")
            var names: Set<String> = []
            for item in filter.drop(while: { $0 == "~" }).split(separator: " ") {
                names.formUnion(try await Self.systemCalls(in: String(item)))
            }
            if denies { allowed.subtract(names) } else { allowed.formUnion(names) }
        }
        #expect(allowed.contains("openat") && allowed.contains("read"), "the filter could not be resolved: \(filters)")
        for call in ["ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "open_by_handle_at"] {
            #expect(!allowed.contains(call), "\(call) is allowed")
        }
    }

    /// The system calls a `SystemCallFilter=` item names: itself, or a group's members, nested groups resolved.
    private static func systemCalls(in item: String) async throws -> Set<String> {
        guard item.hasPrefix("@") else { return [item] }
        let run = try await ToolRun.run(analyze, ["syscall-filter", item])
        try #require(run.status == 0, "\(run.output)")
        var calls: Set<String> = []
        // Members are indented; the group's name, its comment and the tool's notes are not members.
        for line in run.output.split(separator: "\n") where line.hasPrefix("    ") {
            let member = line.trimmingCharacters(in: .whitespaces)
            guard !member.hasPrefix("#"), let name = member.split(separator: "#").first.map(String.init) else { continue }
            calls.formUnion(name.hasPrefix("@") ? try await systemCalls(in: name) : [name])
        }
        return calls
    }

    /// /sys is read-only for the agent except the two trees every move writes; without them each bind,
    /// unbind, override, remove and rescan fails with EROFS.
    @Test func kernelTunablesReadOnlyButPCIWritable() throws {
        let service = try serviceSettings()
        #expect(service["ProtectKernelTunables"] == "yes")
        let writable = Set(try unitDirectives().filter { $0.section == "Service" && $0.key == "ReadWritePaths" }
            .flatMap { $0.value.split(separator: " ").map(String.init) })
        #expect(writable.isSuperset(of: ["/sys/bus/pci", "/sys/devices"]), "\(writable)")
    }

    /// `[agent] metrics-file` in node_exporter's textfile directory: writable, and optional ('-'), so a host
    /// without node_exporter starts the agent as before; nothing else under /var is opened.
    @Test func metricsDirectoryIsOptionalAndTheOnlyOneUnderVar() throws {
        let writable = try unitDirectives().filter { $0.section == "Service" && $0.key == "ReadWritePaths" }
            .flatMap { $0.value.split(separator: " ").map(String.init) }
        #expect(writable.contains("-/var/lib/prometheus/node-exporter"), "\(writable)")
        #expect(writable.filter { $0.hasPrefix("/var") || $0.hasPrefix("-/var") } == ["-/var/lib/prometheus/node-exporter"], "\(writable)")
    }

    /// Room for every control connection the socket serves on top of the agent's own descriptors.
    @Test func descriptorLimitFitsTheConnectionCap() throws {
        let limit = try #require(Int(try serviceSettings()["LimitNOFILE"] ?? ""), "LimitNOFILE= is not a number")
        let idle = 13, connections = 16, transient = 8
        #expect(limit >= 2 * (idle + connections + transient))
    }

    /// Each of these would break the daemon: /sys read-only, udev netlink unreachable.
    @Test func noSettingThatBreaksRebinding() throws {
        let keys = try unitDirectives().map(\.key)
        for forbidden in ["PrivateNetwork", "ReadOnlyPaths", "InaccessiblePaths", "DynamicUser", "User"] {
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
