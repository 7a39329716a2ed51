import Foundation
import PassthroughConfig
import PassthroughCore
import Testing

@Suite("Config loading")
struct ConfigLoaderTests {
    @Test("the documented example loads with its defaults")
    func example() throws {
        let config = try ConfigLoader.parse("""
            [libvirt]
            uri = "qemu:///system"            # default

            [[card]]
            name = "u200"
            address = "0000:01:00"
            ids = ["10ee:903f", "10EE:9038"]
            guest = "fpga-dev"
            host-driver = "auto"
            when-guest-stops = "host"

            [[card]]
            name = "nic-2"
            ids = ["8086:10d3"]
            guest = "router"
            host-driver = "e1000e"
            when-guest-stops = "keep"
            """, path: "config.toml")
        #expect(config.libvirtURI == "qemu:///system")
        #expect(config.cards.count == 2)
        let u200 = try #require(config.card(named: "u200"))
        #expect(u200.address == .slot(PCISlot("0000:01:00")!))
        #expect(u200.ids.map(\.description) == ["10ee:903f", "10ee:9038"])
        #expect(u200.guest.rawValue == "fpga-dev")
        #expect(u200.hostDriver == .auto)
        #expect(u200.whenGuestStops == .host)
        let nic = try #require(config.card(named: "nic-2"))
        #expect(nic.address == nil)
        #expect(nic.hostDriver == .driver(DriverName("e1000e")!))
        #expect(nic.whenGuestStops == .keep)
    }

    @Test("an empty file is a valid config with no cards and the default URI")
    func empty() throws {
        let config = try ConfigLoader.parse("", path: "config.toml")
        #expect(config.cards.isEmpty)
        #expect(config.libvirtURI == "qemu:///system")
    }

    @Test("each mistake is reported at its line and column", arguments: [
        // Bad TOML.
        ("[[card]]\nname = \n", "config.toml:2:8: invalid TOML"),
        // A typo in a key, with a suggestion.
        ("[[card]]\nname = \"u200\"\naddress = \"0000:01:00\"\nguest = \"vm\"\nhost_driver = \"xdma\"\n",
         "config.toml:5:1: unknown key \"host_driver\"; did you mean \"host-driver\"?"),
        ("[libvirt]\nurl = \"qemu:///system\"\n", "config.toml:2:1: unknown key \"url\"; did you mean \"uri\"?"),
        ("cards = 1\n", "config.toml:1:1: unknown key \"cards\"; did you mean \"card\"?"),
        // Wrong types.
        ("[[card]]\nname = 42\naddress = \"0000:01:00\"\nguest = \"vm\"\n", "config.toml:2:8: 'name' must be a string, not an integer"),
        ("[[card]]\nname = \"u200\"\nids = \"10ee:903f\"\nguest = \"vm\"\n", "config.toml:3:7: 'ids' must be an array of strings, not a string"),
        ("libvirt = \"qemu:///system\"\n", "config.toml:1:1: 'libvirt' must be a table ([libvirt]), not a string"),
        // Bad values point at the value, or the array element.
        ("[[card]]\nname = \"u200\"\naddress = \"../../x\"\nguest = \"vm\"\n", "config.toml:3:11: invalid PCI address \"../../x\""),
        ("[[card]]\nname = \"u200\"\nids = [\"10ee:903f\",\n       \"10ee:90\"]\nguest = \"vm\"\n",
         "config.toml:4:8: invalid PCI ID \"10ee:90\""),
        ("[[card]]\nname = \"U200\"\naddress = \"0000:01:00\"\nguest = \"vm\"\n", "config.toml:2:8: invalid card name \"U200\""),
        ("[[card]]\nname = \"u200\"\naddress = \"0000:01:00\"\nguest = \"a/b\"\n", "config.toml:4:9: invalid guest name \"a/b\""),
        ("[[card]]\nname = \"u200\"\naddress = \"0000:01:00\"\nguest = \"vm\"\nhost-driver = \"vfio-pci\"\n",
         "config.toml:5:15: 'host-driver' cannot be vfio-pci"),
        ("[[card]]\nname = \"u200\"\naddress = \"0000:01:00\"\nguest = \"vm\"\nwhen-guest-stops = \"later\"\n",
         "config.toml:5:20: invalid value \"later\" for 'when-guest-stops'"),
        // Missing pieces point at the card's header.
        ("\n[[card]]\nname = \"u200\"\nguest = \"vm\"\n", "config.toml:2:1: card \"u200\" has neither 'address' nor 'ids'"),
        ("[[card]]\nname = \"u200\"\nids = []\nguest = \"vm\"\n", "config.toml:1:1: card \"u200\" has neither 'address' nor 'ids'"),
        ("[[card]]\naddress = \"0000:01:00\"\nguest = \"vm\"\n", "config.toml:1:1: card has no 'name'"),
        ("[[card]]\nname = \"u200\"\naddress = \"0000:01:00\"\n", "config.toml:1:1: card has no 'guest'"),
        // Two cards.
        ("[[card]]\nname = \"u200\"\naddress = \"0000:01:00\"\nguest = \"vm\"\n\n[[card]]\nname = \"u200\"\naddress = \"0000:02:00\"\nguest = \"vm\"\n",
         "config.toml:7:8: duplicate card name \"u200\" (first defined at line 1)"),
        ("[[card]]\nname = \"a\"\naddress = \"0000:01:00\"\nguest = \"vm\"\n\n[[card]]\nname = \"b\"\nids = [\"10ee:903f\"]\nguest = \"vm\"\n",
         "config.toml:6:1: card \"b\" can match the same device as card \"a\" (line 1)"),
    ])
    func mistakes(text: String, expected: String) {
        let found = diagnostics(text)
        #expect(found.contains { $0.hasPrefix(expected) }, "got \(found)")
    }

    @Test("every mistake in a file is listed, in file order")
    func allMistakes() {
        let found = diagnostics("""
            [[card]]
            nmae = "u200"
            address = "0000:01:00.9"
            guest = "vm"
            """)
        #expect(found.count == 3, "got \(found)")
        #expect(found.first?.hasPrefix("config.toml:1:1: card has no 'name'") == true)
        #expect(found.dropFirst().first?.hasPrefix("config.toml:2:1: unknown key \"nmae\"; did you mean \"name\"?") == true)
        #expect(found.last?.hasPrefix("config.toml:3:11: invalid PCI address \"0000:01:00.9\"") == true)
    }

    @Test("inline tables and quoted keys still get positions")
    func inlineForms() {
        let found = diagnostics("card = [ { name = \"u200\", \"address\" = \"zz\", guest = \"vm\" } ]\n")
        #expect(found.first?.hasPrefix("config.toml:1:39: invalid PCI address \"zz\"") == true, "got \(found)")
    }

    @Test("control characters in values are escaped in messages")
    func escaping() {
        let found = diagnostics("[[card]]\nname = \"u\\u001b[31m\"\naddress = \"0000:01:00\"\nguest = \"vm\"\n")
        #expect(found.first?.contains("\\u{1b}") == true, "got \(found)")
        #expect(found.first?.contains("\u{1b}") == false)
    }

    @Test("a missing file is a config error naming the file")
    func missingFile() {
        #expect(throws: ConfigError.self) { try ConfigLoader.load(path: "/nonexistent/config.toml") }
        do {
            _ = try ConfigLoader.load(path: "/nonexistent/config.toml")
        } catch {
            #expect(error.description == "/nonexistent/config.toml:1:1: cannot read the configuration file (no such file)")
        }
    }

    @Test("a reload names what changed but waits for a restart: the libvirt URI and the metrics file")
    func reloadWaitsForRestart() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("reload-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("config.toml").path
        let card = "[[card]]\nname = \"u200\"\naddress = \"0000:01:00\"\nguest = \"vm\"\n"
        try Data(card.utf8).write(to: URL(fileURLWithPath: path))
        let running = try ConfigLoader.load(path: path)
        #expect(try ConfigLoader.reload(path: path, running: running).waitingForRestart.isEmpty)

        try Data(("[libvirt]\nuri = \"qemu:///session\"\n[agent]\nmetrics-file = \"/var/lib/node/pa.prom\"\n" + card).utf8)
            .write(to: URL(fileURLWithPath: path))
        let (config, waiting) = try ConfigLoader.reload(path: path, running: running)
        #expect(config.cards.count == 1)
        #expect(waiting == ["libvirt.uri", "agent.metrics-file"])
    }
}
