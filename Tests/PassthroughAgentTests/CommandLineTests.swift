import Foundation
import PassthroughTestSupport
import Testing

/// The built `passthrough-agent`, run as a user runs it: exit statuses, stdout, stderr.
struct AgentProcess {
    var status: Int32
    var stdout: String
    var stderr: String

    static var binary: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
            .deletingLastPathComponent().appendingPathComponent("passthrough-agent")
    }

    /// Runs on a thread of its own: waiting for a child must not hold one of the few threads that
    /// run every other test's tasks.
    static func run(_ arguments: [String]) async throws -> AgentProcess {
        try await onOwnThread { try runBlocking(arguments) }
    }

    private static func runBlocking(_ arguments: [String]) throws -> AgentProcess {
        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return AgentProcess(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
                            stderr: String(decoding: stderr, as: UTF8.self))
    }
}

private func writeConfig(_ text: String, in bus: EmulatedPCIBus) -> String {
    bus.sysfs.writeFileCreatingDirectories("etc/config.toml", text)
    return bus.sysfs.root.appending("etc/config.toml").string
}

@Suite("The command line", .enabled(if: FileManager.default.isExecutableFile(atPath: AgentProcess.binary.path),
                                     "build the passthrough-agent product first (make test does)"))
struct CommandLineTests {
    @Test("a hostile config exits 78 with path:line:col on stderr and touches nothing")
    func hostileConfig() async throws {
        let bus = readyHost()
        let path = writeConfig("[[card]]\nname = \"u200\"\naddress = \"../../../devices\"\nguest = \"vm\"\n", in: bus)
        for command in [["status"], ["bind", "u200", "--to", "vfio"], ["check"]] {
            let result = try await AgentProcess.run(command + ["--config", path, "--sysfs-root", bus.sysfs.root.string])
            #expect(result.status == 78, "\(command): \(result.stderr)")
            #expect(result.stderr.contains("\(path):3:11: invalid PCI address \"../../../devices\""), "\(command): \(result.stderr)")
        }
        #expect(bus.sysfs.driver(of: "0000:01:00.0") == "xdma")
        #expect(bus.sysfs.driverOverride(of: "0000:01:00.0") == "(null)\n")
    }

    @Test("without /proc (a chroot) the command line cannot be read: exit 71, never help and 0 as if asked nothing",
          .enabled(if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare"), "needs root and unshare"))
    func noProc() async throws {
        let bus = readyHost()
        let path = writeConfig("[[card]]\nname = \"u200\"\naddres = \"0000:01:00\"\nguest = \"vm\"\n", in: bus)
        // An Ansible `validate:` of this invalid file in a chroot without /proc must not pass.
        let result = try await onOwnThread { () throws -> AgentProcess in
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
            process.arguments = ["--mount", "sh", "-c", "umount -l /proc && exec \"$0\" check --config \"$1\"",
                                 AgentProcess.binary.path, path]
            let err = Pipe()
            process.standardError = err
            process.standardOutput = Pipe()
            try process.run()
            let stderr = err.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return AgentProcess(status: process.terminationStatus, stdout: "", stderr: String(decoding: stderr, as: UTF8.self))
        }
        #expect(result.status == 71, "\(result.stderr)")
        #expect(result.stderr.contains("cannot read its command line from /proc/self/cmdline"), "\(result.stderr)")
    }

    @Test("a zero-filled, non-UTF-8 or parser-crashing config is invalid (78) at its place, not 'no cards', 'missing' or an abort")
    func configBytes() async throws {
        let bus = readyHost()
        let path = writeConfig("", in: bus)
        let cases: [(bytes: [UInt8], place: String)] = [
            ([UInt8](repeating: 0, count: 512), "1:1: NUL byte"),
            (Array("# u200 in the caf".utf8) + [0xE9], "1:18: not UTF-8 text (byte 0xe9)"),
            // TOMLKit's parser aborted the process on this one (SIGABRT, status 134).
            (Array("[libvirt]\n[# u200".utf8), "2:2: invalid TOML: expected a key"),
        ]
        for (bytes, place) in cases {
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            let result = try await AgentProcess.run(["check", "--config", path, "--sysfs-root", bus.sysfs.root.string])
            #expect(result.status == 78, "\(place): \(result.stdout) \(result.stderr)")
            #expect(result.stderr.contains("\(path):\(place)"), "\(result.stderr)")
        }
    }

    @Test("status --json describes a hand-made sysfs tree")
    func statusJSON() async throws {
        let bus = readyHost()
        let path = writeConfig(exampleConfig, in: bus)
        let result = try await AgentProcess.run(["status", "--json", "--config", path, "--sysfs-root", bus.sysfs.root.string])
        #expect(result.status == 0, "\(result.stderr)")
        let cards = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]])
        #expect(cards.count == 2)
        let u200 = cards[0]
        #expect(u200["name"] as? String == "u200")
        #expect(u200["address"] as? String == "0000:01:00")
        #expect(u200["present"] as? Bool == true)
        #expect(u200["driver"] as? String == "xdma")
        #expect(u200["iommuGroup"] as? Int == 5)
        #expect((u200["groupPeers"] as? [Any])?.isEmpty == true)
        #expect(u200["guest"] as? String == "fpga-dev")
        let peers = try #require(cards[1]["groupPeers"] as? [[String: Any]])
        #expect(peers.map { $0["address"] as? String } == ["0000:00:1c.0", "0000:00:1f.3"])
        #expect(peers.last?["driver"] as? String == "snd_hda_intel")
    }

    @Test("check exits 1 on a host without an IOMMU and says so")
    func checkWithoutIOMMU() async throws {
        let bus = hostWithoutIOMMU()
        let path = writeConfig("[[card]]\nname = \"u200\"\naddress = \"0000:01:00\"\nguest = \"vm\"\n", in: bus)
        let result = try await AgentProcess.run(["check", "--config", path, "--sysfs-root", bus.sysfs.root.string,
                                           "--proc-root", bus.sysfs.root.appending("proc").string])
        #expect(result.status == 1)
        #expect(result.stdout.contains("PROBLEM  iommu: off"))
        #expect(result.stdout.contains("this host is not ready"))
    }

    @Test("check --json: a card with no way to notice a reflash fails check (1) with the line to add; link-watch passes it")
    func checkReflashPathJSON() async throws {
        let bus = reflashHost()
        bus.loadDriver("vfio-pci")
        let card = "[[card]]\nname = \"u200\"\naddress = \"0000:01:00\"\nguest = \"vm\"\n"
        let path = writeConfig(card, in: bus)
        let arguments = ["check", "--json", "--config", path, "--sysfs-root", bus.sysfs.root.string,
                         "--proc-root", bus.sysfs.root.appending("proc").string]
        let result = try await AgentProcess.run(arguments)
        #expect(result.status == 1, "\(result.stdout) \(result.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        let items = try #require(report["items"] as? [[String: Any]])
        let reflashPath = try #require(items.first { $0["name"] as? String == "card u200 reflash path" })
        #expect(reflashPath["status"] as? String == "problem")
        #expect(reflashPath["fix"] as? String == "add link-watch = \"2s\" to [[card]] u200")
        #expect(items.first { $0["name"] as? String == "card u200 link state" }?["status"] as? String == "ok")

        _ = writeConfig(card + "link-watch = \"2s\"\n", in: bus)
        let watched = try await AgentProcess.run(arguments)
        #expect(watched.status == 0, "\(watched.stdout) \(watched.stderr)")
    }

    @Test("bind refuses an IOMMU group shared with the host (77) and names the peer")
    func bindRefused() async throws {
        let bus = readyHost()
        let path = writeConfig(exampleConfig, in: bus)
        let result = try await AgentProcess.run(["bind", "nic", "--to", "vfio", "--config", path, "--sysfs-root", bus.sysfs.root.string])
        #expect(result.status == 77)
        #expect(result.stderr.contains("0000:00:1f.3 (snd_hda_intel)"))
        #expect(bus.sysfs.driver(of: "0000:03:00.0") == "e1000e")
    }

    @Test("an unknown card name is a usage error (64)")
    func unknownCard() async throws {
        let bus = readyHost()
        let path = writeConfig(exampleConfig, in: bus)
        let result = try await AgentProcess.run(["bind", "u250", "--to", "vfio", "--config", path, "--sysfs-root", bus.sysfs.root.string])
        #expect(result.status == 64)
        #expect(result.stderr.contains("no card named \"u250\""))
    }
}

@Suite("plan on the command line")
struct PlanCommandLineTests {
    @Test("plan --json lists the steps for a running guest (libvirt's test driver) and touches nothing")
    func planJSON() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: AgentProcess.binary.path), "build the passthrough-agent product first")
        let bus = readyHost()
        bus.sysfs.writeFileCreatingDirectories("etc/config.toml", alveoOnTestDriverConfig)
        let result = try await AgentProcess.run(["plan", "--json", "--config", bus.sysfs.root.appending("etc/config.toml").string,
                                                 "--sysfs-root", bus.sysfs.root.string])
        #expect(result.status == 0, "\(result.stderr)")
        let steps = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]])
        #expect(steps.map { $0["action"] as? String } == ["bind-vfio", "attach", "attach"])
        #expect(steps.allSatisfy { $0["card"] as? String == "u200" })
        #expect(steps[1]["address"] as? String == "0000:01:00.0")
        #expect(steps[1]["guest"] as? String == "test")
        #expect(bus.sysfs.driverOverride(of: "0000:01:00.0") == "(null)\n")
        #expect(bus.sysfs.driver(of: "0000:01:00.0") == "xdma")
    }
}
