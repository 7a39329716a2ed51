import PassthroughCore
import PassthroughLibvirt

/// `live-xml`: reading a domain's live XML; each input is the document libvirt would return.
///
/// Every host function found must survive the round trip through the element the agent writes to attach
/// or detach it: what ``HostdevXML`` writes, ``LiveHostdevParser`` reads back as the same function. The guest
/// request channel is read from the same document, and must be unreadable exactly when the hostdevs are (one
/// walk over the document checks its shape for both).
@_cdecl("passthrough_fuzz_live_xml")
public func fuzzLiveXML(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let xml = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    let hostdevs: [Hostdev]
    let channel = Result { () throws(DomainXMLError) in try LiveChannelParser.requestChannel(inDomainXML: xml) }
    do {
        hostdevs = try LiveHostdevParser.hostdevs(inDomainXML: xml)
    } catch {
        _ = error.description
        // Only the hostdev reader's own complaints ("PCI hostdev …") may leave the channel readable.
        if case .success(let found) = channel, !error.message.contains("PCI hostdev") {
            fatalError("the document's shape is refused for hostdevs (\(error)) but not for the channel (\(found))")
        }
        return 0
    }
    if case .failure(let error) = channel {
        fatalError("the channel is unreadable (\(error)) in a document whose hostdevs are read")
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
