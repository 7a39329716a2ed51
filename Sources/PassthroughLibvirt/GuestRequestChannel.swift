import PassthroughCore

/// The guest request channel of one running domain, as its live definition has it.
///
/// The transport is a virtio-serial port named ``portName``. Its host side is a unix socket that QEMU listens on
/// (`<source mode='bind'/>`) and the agent connects to, one per domain: the socket a line arrives on names the
/// domain, so a guest cannot speak for another, and the unit needs no address family beyond AF_UNIX. AF_VSOCK
/// would need the peer CID mapped to a domain through the live XML, `AF_VSOCK` in `RestrictAddressFamilies=` and a
/// vhost-vsock device in every guest; the guest side of a virtio-serial port is a character device that `echo` and
/// `cat` can use.
public enum GuestRequestChannel: Hashable, Sendable {
    /// QEMU listens on this unix socket (libvirt picks the path when the definition gives none:
    /// `/var/lib/libvirt/qemu/channel/target/domain-N-NAME/org.passthrough-agent.0`).
    case listening(socketPath: String)
    /// The live definition has no channel named ``portName``: the agent may hot-add one.
    case absent
    /// A channel of that name exists but is not one the agent can connect to (why, for the log). It is the host
    /// owner's to change; the agent neither adds a second one nor touches it.
    case unusable(String)

    /// The virtio-serial port name the guest looks for (`/sys/class/virtio-ports/vportNpM/name`).
    public static let portName = "org.passthrough-agent.0"

    /// What the agent hot-adds to a running guest's live definition: no path, so libvirt picks one in its channel
    /// directory, and QEMU listens there. The same element, in the persistent definition, makes it permanent.
    public static let deviceXML =
        "<channel type='unix'><source mode='bind'/><target type='virtio' name='\(portName)'/></channel>"
}

/// The request channel could not be hot-added for a reason the user must fix on the host.
package enum GuestRequestChannelError: Error, Hashable, Sendable, CustomStringConvertible {
    /// libvirt adds a virtio-serial port only to an existing controller: when the live definition has none,
    /// `virDomainVirtioSerialAddrNext` (src/conf/domain_addr.c, reached from `qemuDomainAttachChrDevice`) fails with
    /// "no virtio-serial controllers are available", and a controller cannot be hot-plugged at all
    /// (`qemuDomainAttachControllerDevice` takes SCSI only). Guests with a qemu-guest-agent or SPICE channel
    /// have one already.
    case noVirtioSerialController(GuestName)

    /// Whether libvirt's error is the missing controller.
    static func isMissingController(_ error: LibvirtError) -> Bool {
        error.message.contains("no virtio-serial controllers are available")
    }

    public var description: String {
        switch self {
        case .noVirtioSerialController(let guest):
            """
            guest \(guest) has no virtio-serial controller, and libvirt cannot hot-plug one: add \
            \(GuestRequestChannel.deviceXML) (or <controller type='virtio-serial'/>) to its persistent definition \
            (virsh edit \(guest)), then restart the guest
            """
        }
    }
}
