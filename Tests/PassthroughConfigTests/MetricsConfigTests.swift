import PassthroughConfig
import PassthroughCore
import Testing

private let card = "[[card]]\nname = \"u200\"\naddress = \"0000:01:00\"\nguest = \"vm\"\n"

@Suite("Config: [agent] metrics-file")
struct MetricsConfigTests {
    @Test("absent: no metrics are written")
    func absentMeansNone() throws {
        #expect(try ConfigLoader.parse(card, path: "config.toml").metricsFile == nil)
        #expect(try ConfigLoader.parse("[agent]\n" + card, path: "config.toml").metricsFile == nil)
    }

    @Test("the textfile collector's directory")
    func accepted() throws {
        let config = try ConfigLoader.parse("""
            [agent]
            metrics-file = "/var/lib/prometheus/node-exporter/passthrough_agent.prom"
            \(card)
            """, path: "config.toml")
        #expect(config.metricsFile == "/var/lib/prometheus/node-exporter/passthrough_agent.prom")
    }

    @Test("a relative path, a file the collector would not read, a wrong type: each at its place")
    func refused() {
        #expect(diagnostics("[agent]\nmetrics-file = \"passthrough_agent.prom\"\n" + card) == [
            "config.toml:2:16: 'metrics-file' must be an absolute path, not \"passthrough_agent.prom\": "
                + "e.g. \"/var/lib/prometheus/node-exporter/passthrough_agent.prom\"",
        ])
        #expect(diagnostics("[agent]\nmetrics-file = \"/var/lib/prometheus/node-exporter/agent.txt\"\n" + card).first?
            .hasPrefix("config.toml:2:16: 'metrics-file' must name a file ending in .prom") == true)
        #expect(diagnostics("[agent]\nmetrics-file = \"/var/lib/prometheus/../../etc/x.prom\"\n" + card).first?
            .hasPrefix("config.toml:2:16: 'metrics-file' must name a file ending in .prom") == true)
        #expect(diagnostics("[agent]\nmetrics-file = 1\n" + card) == ["config.toml:2:16: 'metrics-file' must be a string, not an integer"])
        #expect(diagnostics("agent = \"x\"\n" + card) == ["config.toml:1:1: 'agent' must be a table ([agent]), not a string"])
    }

    @Test("a misspelt key is named, with the right one")
    func misspelt() {
        #expect(diagnostics("[agent]\nmetric-file = \"/x.prom\"\n" + card) == [
            "config.toml:2:1: unknown key \"metric-file\"; did you mean \"metrics-file\"?",
        ])
    }
}
