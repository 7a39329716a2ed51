// PCI hostdevs in domain XML, both ways: the hostdev a live definition lists and how it is read, and the
// <hostdev> element written to attach or detach one (with the escaping every written value goes through).

import PassthroughCore

/// A PCI host device in a guest's live definition.
public struct Hostdev: Hashable, Sendable {
    /// The host function passed through (`<source><address …/>`), not the guest-side slot.
    public let address: PCIAddress
    /// libvirt's device alias (`hostdev0`, `ua-…`), which device events name; `nil` if libvirt gave none.
    public let alias: String?
    /// Whether libvirt binds and unbinds the host driver itself (`managed='yes'`).
    public let managed: Bool

    public init(address: PCIAddress, alias: String?, managed: Bool) {
        self.address = address
        self.alias = alias
        self.managed = managed
    }
}

/// Finds the PCI host devices in a domain's XML.
///
/// Only `<hostdev mode='subsystem' type='pci'>` elements directly under `/domain/devices` count, and only their
/// `<source><address/>` names the host function. The hostdev's own `<address type='pci'/>` is its slot in the
/// guest, and other devices' PCI addresses (disks, NICs) are guest slots too; none of them are host devices.
/// Elements of the same name inside `<metadata>` are someone else's data and are ignored.
public enum LiveHostdevParser {
    public static func hostdevs(inDomainXML xml: String) throws(DomainXMLError) -> [Hostdev] {
        var found: [Hostdev] = []
        var pending: PendingHostdev?
        try DomainXMLWalk.walk(xml) { step, offset throws(DomainXMLError) in
            switch step {
            case .open(let path, let attributes):
                if var hostdev = pending {
                    try hostdev.observe(path: path, attributes: attributes, at: offset)
                    pending = hostdev
                }
                if path == hostdevPath {
                    pending = PendingHostdev(attributes)
                }
            case .close(let path):
                guard path == hostdevPath, let hostdev = pending else { return }
                guard let address = hostdev.address else {
                    throw DomainXMLError("PCI hostdev without a source address", at: offset)
                }
                found.append(Hostdev(address: address, alias: hostdev.alias, managed: hostdev.managed))
                pending = nil
            }
        }
        return found
    }

    private static let hostdevPath = ["domain", "devices", "hostdev"]
}

/// A PCI hostdev whose children are still being read.
private struct PendingHostdev {
    let managed: Bool
    var address: PCIAddress?
    var alias: String?

    /// `nil` for hostdevs that are not PCI host functions (USB, SCSI, mdev, capabilities mode).
    init?(_ attributes: [String: String]) {
        guard attributes["mode"] == "subsystem", attributes["type"] == "pci" else { return nil }
        managed = attributes["managed"] == "yes"
    }

    mutating func observe(path: [String], attributes: [String: String], at offset: Int) throws(DomainXMLError) {
        guard path.count == 5 || path.count == 4, Array(path.prefix(3)) == ["domain", "devices", "hostdev"] else {
            return
        }
        switch Array(path.dropFirst(3)) {
        case ["source", "address"]:
            guard address == nil else { throw DomainXMLError("PCI hostdev with two source addresses", at: offset) }
            guard let parsed = Self.pciAddress(attributes) else {
                throw DomainXMLError("unreadable PCI hostdev source address", at: offset)
            }
            address = parsed
        case ["alias"]:
            alias = attributes["name"]
        default:
            break
        }
    }

    /// Reads `domain='0x0000' bus='0x01' slot='0x00' function='0x0'`, as libvirt writes it.
    private static func pciAddress(_ attributes: [String: String]) -> PCIAddress? {
        if let type = attributes["type"], type != "pci" { return nil }
        guard let domain = hexAttribute(attributes["domain"], max: 0xffff_ffff),
              let bus = hexAttribute(attributes["bus"], max: 0xff),
              let slot = hexAttribute(attributes["slot"], max: 0x1f),
              let function = hexAttribute(attributes["function"], max: 0x7)
        else { return nil }
        return PCIAddress(domain: domain, bus: UInt8(bus), device: UInt8(slot), function: UInt8(function))
    }

    /// `0x` and one to eight hex digits, no sign, at most `max`.
    private static func hexAttribute(_ text: String?, max: UInt32) -> UInt32? {
        guard let text, text.hasPrefix("0x") || text.hasPrefix("0X") else { return nil }
        let digits = text.utf8.dropFirst(2)
        guard (1...8).contains(digits.count) else { return nil }
        var value: UInt32 = 0
        for byte in digits {
            let digit: UInt32
            switch byte {
            case 0x30...0x39: digit = UInt32(byte - 0x30)
            case 0x41...0x46: digit = UInt32(byte - 0x41 + 10)
            case 0x61...0x66: digit = UInt32(byte - 0x61 + 10)
            default: return nil
            }
            value = value << 4 | digit
        }
        return value <= max ? value : nil
    }
}

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
            + attribute("domain", Hex.prefixed(address.domain, width: 4))
            + attribute("bus", Hex.prefixed(address.bus, width: 2))
            + attribute("slot", Hex.prefixed(address.device, width: 2))
            + attribute("function", Hex.prefixed(address.function, width: 1))
            + "/></source></hostdev>"
    }

    private static func attribute(_ name: String, _ value: String) -> String {
        " \(name)='\(XMLEscaping.attribute(value))'"
    }
}

/// Escaping for values placed in XML we send to libvirt.
///
/// Every value goes through here even when its type already restricts it to hex digits: the XML must stay
/// well-formed whatever a future caller passes.
enum XMLEscaping {
    /// Escapes a value for a single- or double-quoted attribute.
    static func attribute(_ value: String) -> String {
        var escaped = ""
        escaped.reserveCapacity(value.utf8.count)
        for scalar in value.unicodeScalars {
            switch scalar {
            case "&": escaped += "&amp;"
            case "<": escaped += "&lt;"
            case ">": escaped += "&gt;"
            case "'": escaped += "&apos;"
            case "\"": escaped += "&quot;"
            // Attribute-value normalisation would turn raw whitespace controls into spaces; keep them exact.
            case "\t", "\n", "\r": escaped += "&#\(scalar.value);"
            default: escaped.unicodeScalars.append(scalar)
            }
        }
        return escaped
    }
}
