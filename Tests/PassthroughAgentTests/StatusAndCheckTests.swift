import PassthroughAgent
import PassthroughConfig
import PassthroughCore
import PassthroughTestSupport
import Testing

@Suite("status and check against hand-made hosts")
struct StatusAndCheckTests {
    @Test("status describes each card: functions, driver, group, peers outside the card, guest")
    func status() throws {
        let bus = readyHost()
        let config = try ConfigLoader.parse(exampleConfig, path: "config.toml")
        let cards = try CardStatus.all(config: config, reader: bus.host.reader)
        #expect(cards.map(\.name) == ["u200", "nic"])
        let u200 = cards[0]
        #expect(u200.present)
        #expect(u200.address == "0000:01:00")
        #expect(u200.ids == ["10ee:9038", "10ee:903f"])
        #expect(u200.driver == "xdma")
        #expect(u200.iommuGroup == 5)
        #expect(u200.groupPeers.isEmpty)
        #expect(u200.functions.map(\.address) == ["0000:01:00.0", "0000:01:00.1"])
        #expect(u200.guest == "fpga-dev")
        let nic = cards[1]
        #expect(nic.groupPeers == [
            CardStatus.Peer(address: "0000:00:1c.0", driver: "pcieport"), CardStatus.Peer(address: "0000:00:1f.3", driver: "snd_hda_intel"),
        ])

        let table = StatusTable.render(cards)
        #expect(table.contains("u200  0000:01:00.0  yes      10ee:903f  xdma"))
        #expect(table.contains("group peers: 0000:00:1c.0 (pcieport), 0000:00:1f.3 (snd_hda_intel)"))
    }

    @Test("an absent card is shown as not present, with the reason")
    func absent() throws {
        let bus = readyHost()
        bus.sysfs.removeFunction("0000:01:00.0")
        bus.sysfs.removeFunction("0000:01:00.1")
        let config = try ConfigLoader.parse(exampleConfig, path: "config.toml")
        let u200 = try CardStatus.all(config: config, reader: bus.host.reader)[0]
        #expect(!u200.present)
        #expect(u200.driver == nil)
        #expect(u200.problem == "not on the PCI bus")
        #expect(StatusTable.render([u200]).contains("u200  0000:01:00  no"))
    }

    @Test("check: a ready host with a viable card; the NIC's shared group is a problem with a fix")
    func checkReadyHost() throws {
        let bus = readyHost()
        let config = try ConfigLoader.parse(exampleConfig, path: "config.toml")
        let report = ReadinessCheck.run(host: bus.host, config: .success(config))
        let byName = Dictionary(uniqueKeysWithValues: report.items.map { ($0.name, $0) })
        #expect(byName["iommu"]?.status == .ok)
        #expect(byName["vfio-pci"]?.status == .ok)
        #expect(byName["config"]?.status == .ok)
        #expect(byName["card u200"]?.status == .ok)
        #expect(byName["card nic"]?.status == .problem)
        #expect(byName["card nic"]?.detail.contains("0000:00:1f.3 (snd_hda_intel)") == true)
        #expect(byName["card nic"]?.fix != nil)
        #expect(!report.ready)

        let onlyU200 = try ConfigLoader.parse("[[card]]\nname = \"u200\"\naddress = \"0000:01:00\"\nguest = \"vm\"\n", path: "c")
        #expect(ReadinessCheck.run(host: bus.host, config: .success(onlyU200)).ready)
    }

    @Test("check: without an IOMMU it says so plainly, with the kernel parameter to add on Intel")
    func checkWithoutIOMMU() throws {
        let bus = hostWithoutIOMMU()
        bus.setProc("cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 quiet\n")
        bus.setProc("cpuinfo", "processor\t: 0\nvendor_id\t: GenuineIntel\n")
        let config = try ConfigLoader.parse("[[card]]\nname = \"u200\"\naddress = \"0000:01:00\"\nguest = \"vm\"\n", path: "c")
        let report = ReadinessCheck.run(host: bus.host, config: .success(config))
        #expect(!report.ready)
        let iommu = try #require(report.items.first { $0.name == "iommu" })
        #expect(iommu.status == .problem)
        #expect(iommu.detail.hasPrefix("off"))
        #expect(iommu.fix?.contains("intel_iommu=on") == true)
        #expect(report.items.first { $0.name == "vfio-pci" }?.status == .problem)
        #expect(report.items.first { $0.name == "card u200" }?.detail.contains("no IOMMU group") == true)
        #expect(report.text.contains("this host is not ready"))
    }

    @Test("check: a missing configuration is a readiness problem, not a config mistake")
    func missingConfig() throws {
        let bus = readyHost()
        let error: ConfigError
        do {
            _ = try ConfigLoader.load(path: "/nonexistent/passthrough.toml")
            Issue.record("expected an error")
            return
        } catch let caught {
            error = caught
        }
        let report = ReadinessCheck.run(host: bus.host, config: .failure(error))
        let item = try #require(report.items.first { $0.name == "config" })
        #expect(item.status == .problem)
        #expect(item.fix?.contains("/nonexistent/passthrough.toml") == true)
    }

    @Test("kernel lockdown is a problem only for cards whose reflash writes config space")
    func lockdown() throws {
        let bus = readyHost()
        let guarded = try ConfigLoader.parse(exampleConfig + "\nreflash-guard = true\n", path: "config.toml")
        let plain = try ConfigLoader.parse(exampleConfig, path: "config.toml")
        // No securityfs: nothing said.
        #expect(!ReadinessCheck.run(host: bus.host, config: .success(guarded)).items.contains { $0.name == "lockdown" })
        bus.sysfs.writeFileCreatingDirectories("kernel/security/lockdown", "none [integrity] confidentiality\n")
        let item = try #require(ReadinessCheck.run(host: bus.host, config: .success(guarded)).items.first { $0.name == "lockdown" })
        #expect(item.status == .problem)
        #expect(item.detail.contains("integrity") && item.detail.contains("nic"))
        #expect(!ReadinessCheck.run(host: bus.host, config: .success(plain)).items.contains { $0.name == "lockdown" })
        bus.sysfs.writeFile("kernel/security/lockdown", "[none] integrity confidentiality\n")
        #expect(ReadinessCheck.run(host: bus.host, config: .success(guarded)).items.first { $0.name == "lockdown" }?.status == .ok)
    }
}
