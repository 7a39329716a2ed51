import PassthroughCore
import PassthroughLibvirt

/// `live-xml`: reading a domain's live XML; each input is the document libvirt would return.
///
/// Every host function found must survive the round trip through the element the agent writes to attach
/// or detach it: what ``HostdevXML`` writes, ``LiveHostdevParser`` reads back as the same function.
@_cdecl("passthrough_fuzz_live_xml")
public func fuzzLiveXML(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let xml = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    let hostdevs: [Hostdev]
    do {
        hostdevs = try LiveHostdevParser.hostdevs(inDomainXML: xml)
    } catch {
        _ = error.description
        return 0
    }
    for hostdev in hostdevs {
        let written = "<domain><devices>\(HostdevXML.pci(hostdev.address, managed: hostdev.managed))</devices></domain>"
        let readBack = try? LiveHostdevParser.hostdevs(inDomainXML: written)
        if readBack != [Hostdev(address: hostdev.address, alias: nil, managed: hostdev.managed)] {
            fatalError("\(hostdev.address) written as \(written) reads back as \(String(describing: readBack))")
        }
    }
    return 0
}
