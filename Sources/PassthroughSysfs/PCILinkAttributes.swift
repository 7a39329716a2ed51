import PassthroughCore

extension PCISysfsReader {
    /// The link of a PCIe function as it trained, and what the function itself can do; `nil` where the
    /// kernel has no such attributes (not PCIe) or says `Unknown`.
    public func link(of address: PCIAddress) -> (current: PCILinkState?, maximum: PCILinkState?) {
        func state(_ speed: String, _ width: String) -> PCILinkState? {
            guard let speedText = try? io.read(layout.attribute(speed, of: address)),
                  let widthText = try? io.read(layout.attribute(width, of: address))
            else { return nil }
            return PCILinkState(speed: speedText, width: widthText)
        }
        return (state("current_link_speed", "current_link_width"), state("max_link_speed", "max_link_width"))
    }

    /// The link between `function` and the port above it: as trained, and the best both ends can do (the
    /// lesser of their `max_link_*`; the function's alone when the port does not say).
    public func trainedLink(of function: PCIAddress, below port: PCIAddress?) -> (now: PCILinkState?, capable: PCILinkState?) {
        let (now, maximum) = link(of: function)
        let portMaximum = port.flatMap { link(of: $0).maximum }
        return (now, maximum.map { card in portMaximum.map(card.limited(by:)) ?? card })
    }
}
