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

    @Test("a card function whose driver cannot be read: status and check say the card is left alone")
    func unreadableOwnDriver() throws {
        let bus = readyHost()
        bus.sysfs.addDriver("xdma\u{202e}")
        bus.sysfs.unbind("0000:01:00.1")
        bus.sysfs.bind("0000:01:00.1", to: "xdma\u{202e}")
        let config = try ConfigLoader.parse(exampleConfig, path: "config.toml")
        let u200 = try CardStatus.all(config: config, reader: bus.host.reader)[0]
        #expect(u200.functions[1].driver == nil)
        #expect(u200.functions[1].driverUnreadable == "xdma\u{202e}")
        #expect(u200.problem == "0000:01:00.1 is held by an unreadable driver (\"xdma\\u{202e}\"); the card is left where it is until its driver can be read")
        let table = StatusTable.render([u200])
        #expect(table.contains("10ee:9038  (unreadable)"))
        #expect(table.contains("problem: 0000:01:00.1 is held by an unreadable driver"))

        let item = try #require(ReadinessCheck.run(host: bus.host, config: .success(config)).items.first { $0.name == "card u200" })
        #expect(item.status == .problem)
        #expect(item.detail.contains("0000:01:00.1 is held by an unreadable driver"))
        #expect(item.fix == "see what holds it: readlink /sys/bus/pci/devices/0000:01:00.1/driver")
    }

    @Test("a group peer whose driver cannot be read: status shows it, check calls the group not viable")
    func unreadablePeer() throws {
        let bus = readyHost()
        bus.sysfs.addDriver("nvme\u{7}")
        bus.sysfs.addFunction("0000:01:01.0", id: "144d:a808", classCode: 0x010802, driver: "nvme\u{7}", iommuGroup: 5, below: "0000:00:01.0")
        let config = try ConfigLoader.parse(exampleConfig, path: "config.toml")
        let u200 = try CardStatus.all(config: config, reader: bus.host.reader)[0]
        #expect(u200.groupPeers == [CardStatus.Peer(address: "0000:01:01.0", driver: nil, driverUnreadable: "nvme\u{7}")])
        #expect(StatusTable.render([u200]).contains("group peers: 0000:01:01.0 (unreadable driver)"))
        let item = try #require(ReadinessCheck.run(host: bus.host, config: .success(config)).items.first { $0.name == "card u200" })
        #expect(item.status == .problem)
        #expect(item.detail.contains("IOMMU group 5 also holds 0000:01:01.0 (an unreadable driver (\"nvme\\u{7}\")), used by the host"))
    }

    @Test("a PCI bridge configured as a card: status and check refuse it, with the fix")
    func bridgeAsCard() throws {
        let bus = readyHost()
        let config = try ConfigLoader.parse("[[card]]\nname = \"port\"\naddress = \"0000:00:01\"\nguest = \"vm\"\n", path: "c")
        let port = try CardStatus.all(config: config, reader: bus.host.reader)[0]
        #expect(port.problem?.hasPrefix("0000:00:01.0 is a PCI bridge (class 0x060400), which is never passed through or unbound") == true)
        let item = try #require(ReadinessCheck.run(host: bus.host, config: .success(config)).items.first { $0.name == "card port" })
        #expect(item.status == .problem)
        #expect(item.fix?.contains("the device behind the bridge") == true)
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

    @Test("kernel lockdown is a problem only for cards whose reflash writes config space: any guard mode, or a bus reset",
          arguments: ["true", "\"mask\"", "\"link-disable\"", "\"while-lent\"", "false\nreset = \"secondary-bus\""])
    func lockdown(guardValue: String) throws {
        let bus = readyHost()
        let guarded = try ConfigLoader.parse(exampleConfig + "\nreflash-guard = \(guardValue)\n", path: "config.toml")
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
