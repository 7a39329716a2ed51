import PassthroughCore

/// The `<hostdev>` element for attaching or detaching one PCI function.
///
/// libvirt matches a detach by the source address, so the same element serves both.
public enum HostdevXML {
    /// `<hostdev mode='subsystem' type='pci' managed='no'><source><address domain='0x0000' bus='0x01'
    /// slot='0x00' function='0x0'/></source></hostdev>`, on one line.
    public static func pci(_ address: PCIAddress, managed: Bool = false) -> String {
        let managedValue = managed ? "yes" : "no"
        return "<hostdev mode='subsystem' type='pci' managed='\(XMLEscaping.attribute(managedValue))'>"
            + "<source><address"
            + attribute("domain", hex(UInt32(address.domain), width: 4))
            + attribute("bus", hex(UInt32(address.bus), width: 2))
            + attribute("slot", hex(UInt32(address.device), width: 2))
            + attribute("function", hex(UInt32(address.function), width: 1))
            + "/></source></hostdev>"
    }

    private static func attribute(_ name: String, _ value: String) -> String {
        " \(name)='\(XMLEscaping.attribute(value))'"
    }

    /// libvirt's own spelling: `0x` and zero-padded lower-case digits.
    private static func hex(_ value: UInt32, width: Int) -> String {
        let digits = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, width - digits.count)) + digits
    }
}
