import PassthroughCore

/// Which libvirt URIs the daemon can use: local ones only.
///
/// libvirt's URIs are `driver[+transport]://[user@][host][:port]/[path][?parameters]`. A host part or a
/// transport other than `unix` (`tcp`, `tls`, `ssh`, `libssh`, `libssh2`, `ext`) goes through the network
/// or another program; the service unit allows no network sockets (`RestrictAddressFamilies=AF_UNIX
/// AF_NETLINK`), so such a URI would only fail at every reconnect, and cards are local to their host
/// anyway. A URI without a scheme is a client-side alias (`uri_aliases`) that may name any host.
enum LibvirtURIRule {
    enum Verdict: Equatable {
        case local
        case malformed
        /// Why it is remote, e.g. `host "kvm1"`.
        case remote(String)
    }

    static let localTransports = ["unix"]

    static func check(_ uri: String) -> Verdict {
        guard let colon = uri.firstIndex(of: ":") else { return .malformed }
        let scheme = uri[..<colon]
        guard let first = scheme.unicodeScalars.first, isLetter(first),
              scheme.unicodeScalars.allSatisfy({ isLetter($0) || ("0"..."9").contains($0) || "+-.".unicodeScalars.contains($0) }),
              !uri.unicodeScalars.contains(where: { $0.isControlOrBidiControl || $0 == " " })
        else { return .malformed }

        if let plus = scheme.firstIndex(of: "+") {
            let transport = scheme[scheme.index(after: plus)...]
            if !localTransports.contains(String(transport)) {
                return .remote("transport \"+\(transport)\"")
            }
        }
        let rest = uri[uri.index(after: colon)...]
        if rest.hasPrefix("//") {
            let authority = rest.dropFirst(2).prefix { $0 != "/" && $0 != "?" && $0 != "#" }
            if !authority.isEmpty {
                return .remote("host \"\(authority)\"")
            }
        }
        return .local
    }

    private static func isLetter(_ scalar: Unicode.Scalar) -> Bool {
        ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar)
    }
}
