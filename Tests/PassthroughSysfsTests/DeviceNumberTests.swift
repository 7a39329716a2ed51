import PassthroughSysfs
import SystemPackage
import Testing

@Suite("Device numbers: sysfs `dev` attributes and stat through a link")
struct DeviceNumberTests {
    @Test("sysfs prints MAJ:MIN in decimal with a newline", arguments: [
        ("236:5\n", DeviceNumber(major: 236, minor: 5)),
        ("1:3", DeviceNumber(major: 1, minor: 3)),
        ("511:1048575\n", DeviceNumber(major: 511, minor: 1_048_575)),
    ])
    func parses(text: String, expected: DeviceNumber) {
        #expect(DeviceNumber(sysfsText: text) == expected)
    }

    @Test("anything else is no device number", arguments: ["", "\n", "236", "236:", ":5", "0xec:5", "236:5:1", "-1:3", "a:b", "236 :5"])
    func rejects(text: String) {
        #expect(DeviceNumber(sysfsText: text) == nil)
    }

    /// glibc's `makedev`: minor bits 0-7, major bits 8-19, minor bits 20-43, major bits 44-63.
    @Test("st_rdev decodes as glibc encodes it, large numbers included", arguments: [
        (DeviceNumber(major: 1, minor: 3), UInt64(0x103)),
        (DeviceNumber(major: 236, minor: 5), UInt64(0xec05)),
        (DeviceNumber(major: 0x1234, minor: 0x56789), UInt64(0x1000_5672_3489)),
    ])
    func decodes(expected: DeviceNumber, raw: UInt64) {
        #expect(DeviceNumber(rawValue: raw) == expected)
    }

    @Test("stat through a link finds the character device it leads to; other files have none")
    func statThroughALink() throws {
        let io = LinuxSysfsIO()
        #expect(try io.characterDevice(at: "/dev/null") == DeviceNumber(major: 1, minor: 3))
        #expect(try io.characterDevice(at: "/proc/self/exe") == nil)
        #expect(throws: SysfsError.self) { try io.characterDevice(at: "/nonexistent/passthrough-agent") }
    }
}
