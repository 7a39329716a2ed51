import PassthroughConfig
import PassthroughCore
import Testing

private let card = "[[card]]\nname = \"u200\"\naddress = \"0000:01:00\"\nguest = \"vm\"\n"

@Suite("Config: reflash keys")
struct ReflashConfigTests {
    @Test("defaults: no link watch, no guard, no reset, 60 s recovery timeout, no guest requests")
    func defaults() throws {
        let u200 = try #require(try ConfigLoader.parse(card, path: "config.toml").card(named: "u200"))
        #expect(u200.linkWatch == .off)
        #expect(u200.reflashGuard == .off)
        #expect(u200.reset == .none)
        #expect(u200.recoveryTimeout == .seconds(60))
        #expect(u200.guestRequests == false)
    }

    @Test("every key set")
    func allSet() throws {
        let text = card + "link-watch = \"500ms\"\nreflash-guard = true\nreset = \"secondary-bus\"\nrecovery-timeout = \"2m\"\n"
            + "guest-requests = true\n"
        let u200 = try #require(try ConfigLoader.parse(text, path: "config.toml").card(named: "u200"))
        #expect(u200.linkWatch == .every(.milliseconds(500)))
        #expect(u200.reflashGuard == .mask)
        #expect(u200.reset == .secondaryBus)
        #expect(u200.recoveryTimeout == .seconds(120))
        #expect(u200.guestRequests)
    }

    @Test("reflash-guard: true is the mask, false is off, or a mode by name", arguments: [
        ("true", ReflashGuardMode.mask), ("false", .off), ("\"mask\"", .mask), ("\"link-disable\"", .linkDisable),
        ("\"while-lent\"", .whileLent),
    ])
    func guardModes(value: String, expected: ReflashGuardMode) throws {
        let u200 = try #require(try ConfigLoader.parse(card + "reflash-guard = \(value)\n", path: "config.toml").card(named: "u200"))
        #expect(u200.reflashGuard == expected)
    }

    @Test("link-watch = \"off\" is the same as leaving it out")
    func explicitOff() throws {
        let u200 = try #require(try ConfigLoader.parse(card + "link-watch = \"off\"\n", path: "config.toml").card(named: "u200"))
        #expect(u200.linkWatch == .off)
    }

    @Test("durations", arguments: [
        ("500ms", Duration.milliseconds(500)), ("1s", .seconds(1)), ("2m", .seconds(120)), ("1h", .seconds(3600)),
    ])
    func durations(text: String, expected: Duration) {
        #expect(ConfigDuration.parse(text) == expected)
        #expect(ConfigDuration.format(expected) == text)
    }

    @Test("not durations", arguments: ["", "1", "s", "1.5s", "-1s", "1 s", "1S", "1sec", "1m30s", "99999999999s", "١s"])
    func notDurations(text: String) {
        #expect(ConfigDuration.parse(text) == nil)
    }

    @Test("each mistake is reported at its value", arguments: [
        (card + "link-watch = \"fast\"\n",
         "config.toml:5:14: invalid duration \"fast\" for 'link-watch': use a whole number and a unit (ms, s, m, h), e.g. \"500ms\" or \"2m\", or \"off\""),
        (card + "link-watch = \"Off\"\n", "config.toml:5:14: invalid duration \"Off\" for 'link-watch'"),
        (card + "link-watch = 1\n", "config.toml:5:14: 'link-watch' must be a string, not an integer"),
        (card + "link-watch = \"10ms\"\n", "config.toml:5:14: 'link-watch' must be between 100ms and 1h, not \"10ms\""),
        (card + "reflash-guard = \"yes\"\n", "config.toml:5:17: invalid value \"yes\" for 'reflash-guard': use true (the same as \"mask\"), false, \"mask\", \"link-disable\" or \"while-lent\""),
        (card + "reflash-guard = \"link_disable\"\n", "config.toml:5:17: invalid value \"link_disable\" for 'reflash-guard'"),
        (card + "reflash-guard = 1\n", "config.toml:5:17: 'reflash-guard' must be true, false or a string, not an integer: use true"),
        (card + "reflash-guard = [\"mask\"]\n", "config.toml:5:17: 'reflash-guard' must be true, false or a string, not an array"),
        (card + "reset = \"flr\"\n", "config.toml:5:9: invalid value \"flr\" for 'reset': use \"none\" or \"secondary-bus\""),
        (card + "recovery-timeout = \"0s\"\n", "config.toml:5:20: 'recovery-timeout' must be between 1s and 1h, not \"0s\""),
        (card + "recovery-timeout = \"60\"\n", "config.toml:5:20: invalid duration \"60\" for 'recovery-timeout'"),
        (card + "reflash_guard = true\n", "config.toml:5:1: unknown key \"reflash_guard\"; did you mean \"reflash-guard\"?"),
        (card + "guest-requests = \"yes\"\n", "config.toml:5:18: 'guest-requests' must be true or false, not a string"),
        (card + "guest-requests = 1\n", "config.toml:5:18: 'guest-requests' must be true or false, not an integer"),
        (card + "guest-request = true\n", "config.toml:5:1: unknown key \"guest-request\"; did you mean \"guest-requests\"?"),
    ])
    func mistakes(text: String, expected: String) {
        let found = diagnostics(text)
        #expect(found.count == 1, "got \(found)")
        #expect(found.contains { $0.hasPrefix(expected) }, "got \(found)")
    }
}
