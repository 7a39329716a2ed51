import PassthroughCore
@testable import PassthroughLibvirt
import Testing

@Suite struct LiveChannelParserTests {
    static let agentPath = "/var/lib/libvirt/qemu/channel/target/domain-3-fpga-guest/org.passthrough-agent.0"

    /// What libvirt writes for the qemu-guest-agent's channel: another name, so never ours.
    static let guestAgentChannel = """
        <channel type='unix'>
          <source mode='bind' path='/var/lib/libvirt/qemu/channel/target/domain-3-fpga-guest/org.qemu.guest_agent.0'/>
          <target type='virtio' name='org.qemu.guest_agent.0' state='connected'/>
          <alias name='channel0'/>
          <address type='virtio-serial' controller='0' bus='0' port='1'/>
        </channel>
        """

    static func channel(type: String = "unix", mode: String = "bind", path: String? = agentPath,
                        targetType: String = "virtio", name: String = GuestRequestChannel.portName) -> String {
        let pathAttribute = path.map { " path='\($0)'" } ?? ""
        return """
            <channel type='\(type)'>
              <source mode='\(mode)'\(pathAttribute)/>
              <target type='\(targetType)' name='\(name)' state='disconnected'/>
              <alias name='channel1'/>
              <address type='virtio-serial' controller='0' bus='0' port='2'/>
            </channel>
            """
    }

    struct Case: Sendable, CustomTestStringConvertible {
        let label: String
        let devices: String
        var metadata = ""
        let expected: GuestRequestChannel
        var testDescription: String { label }
    }

    static let cases: [Case] = [
        Case(label: "present, beside the guest agent's",
             devices: guestAgentChannel + channel(), expected: .listening(socketPath: agentPath)),
        Case(label: "absent: no channels at all", devices: "", expected: .absent),
        Case(label: "absent: only other names", devices: guestAgentChannel + channel(name: "org.example.other.0"),
             expected: .absent),
        Case(label: "absent: a guestfwd channel is not a virtio port",
             devices: channel(targetType: "guestfwd"), expected: .absent),
        Case(label: "absent: our element inside <metadata> is someone else's data",
             devices: "", metadata: "<devices>\(channel())</devices>", expected: .absent),
        Case(label: "mode connect: QEMU would be the client",
             devices: channel(mode: "connect"),
             expected: .unusable("its socket has mode 'connect'; the agent connects to QEMU, so it must be 'bind'")),
        Case(label: "a pty, not a unix socket", devices: channel(type: "pty", path: nil),
             expected: .unusable("its host side is type 'pty', not a unix socket")),
        Case(label: "no path in the live definition", devices: channel(path: nil),
             expected: .unusable("its socket has no absolute path in the live definition")),
        Case(label: "two of them", devices: channel() + channel(),
             expected: .unusable("2 channels named org.passthrough-agent.0")),
        Case(label: "escaped path is decoded",
             devices: channel(path: "/var/lib/libvirt/qemu/channel/target/domain-4-a&amp;b&apos;c/org.passthrough-agent.0"),
             expected: .listening(socketPath: "/var/lib/libvirt/qemu/channel/target/domain-4-a&b'c/org.passthrough-agent.0")),
    ]

    @Test(arguments: cases)
    func findsTheRequestChannel(_ testCase: Case) throws {
        let xml = LiveHostdevParserTests.domain(devices: testCase.devices, metadata: testCase.metadata)
        #expect(try LiveChannelParser.requestChannel(inDomainXML: xml) == testCase.expected)
    }

    /// Unreadable XML gives no path, and is never taken for "absent" (which would hot-add a second channel).
    @Test(arguments: [
        "<domain><devices>\(channel())</devices>",
        "<domain><devices>\(channel())</device></domain>",
        "<domain><devices><channel type='unix' type='unix'/></devices></domain>",
        "<domain/><domain/>",
        "<channel type='unix'/>",
        "",
    ])
    func malformedXMLThrows(_ xml: String) {
        #expect(throws: DomainXMLError.self) { try LiveChannelParser.requestChannel(inDomainXML: xml) }
    }

    @Test func hotAddElementIsReadBackAsTheRequestPort() throws {
        // What the agent hot-adds, as libvirt then shows it: the same element plus the path it picked.
        let shown = GuestRequestChannel.deviceXML.replacing(
            "<source mode='bind'/>", with: "<source mode='bind' path='\(Self.agentPath)'/>")
        #expect(shown != GuestRequestChannel.deviceXML)
        let xml = LiveHostdevParserTests.domain(devices: shown)
        #expect(try LiveChannelParser.requestChannel(inDomainXML: xml) == .listening(socketPath: Self.agentPath))
        #expect(try LiveChannelParser.requestChannel(inDomainXML: LiveHostdevParserTests.domain(
            devices: GuestRequestChannel.deviceXML)) == .unusable("its socket has no absolute path in the live definition"))
    }

    @Test func missingControllerErrorSaysWhatToAdd() {
        let guest = GuestName("fpga-guest")!
        let libvirt = LibvirtError(code: 1, domain: 10, message: "internal error: no virtio-serial controllers are available",
                                   operation: "virDomainAttachDeviceFlags")
        #expect(GuestRequestChannelError.isMissingController(libvirt))
        let error = GuestRequestChannelError.noVirtioSerialController(guest)
        #expect(error.description.contains("<controller type='virtio-serial'/>"))
        #expect(error.description.contains("virsh edit fpga-guest"))
        #expect(error.description.contains(GuestRequestChannel.deviceXML))
    }
}
