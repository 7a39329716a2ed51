/// Finds the guest request channel in a domain's live XML.
///
/// Only `<channel>` elements directly under `/domain/devices` count, and only the one whose
/// `<target type='virtio' name='org.passthrough-agent.0'/>` names the request port; other channels (the
/// qemu-guest-agent's, SPICE's) and look-alikes inside `<metadata>` are ignored. Unreadable XML throws: the caller
/// then has no path, and must not take the channel for absent (it would hot-add a second one).
public enum LiveChannelParser {
    public static func requestChannel(inDomainXML xml: String) throws(DomainXMLError) -> GuestRequestChannel {
        var found: [PendingChannel] = []
        var pending: PendingChannel?
        try DomainXMLWalk.walk(xml) { step, _ in
            switch step {
            case .open(let path, let attributes):
                if path == channelPath {
                    pending = PendingChannel(type: attributes["type"])
                } else if path.count == 4, Array(path.prefix(3)) == channelPath {
                    pending?.observe(element: path[3], attributes: attributes)
                }
            case .close(let path):
                guard path == channelPath, let channel = pending.take() else { return }
                if channel.isRequestPort { found.append(channel) }
            }
        }
        guard let channel = found.first else { return .absent }
        guard found.count == 1 else {
            return .unusable("\(found.count) channels named \(GuestRequestChannel.portName)")
        }
        return channel.state
    }

    private static let channelPath = ["domain", "devices", "channel"]
}

/// A `<channel>` whose children are still being read.
private struct PendingChannel {
    let type: String?
    var targetType: String?
    var targetName: String?
    var sourceMode: String?
    var sourcePath: String?

    init(type: String?) {
        self.type = type
    }

    mutating func observe(element: String, attributes: [String: String]) {
        switch element {
        case "target":
            targetType = attributes["type"]
            targetName = attributes["name"]
        case "source":
            sourceMode = attributes["mode"]
            sourcePath = attributes["path"]
        default:
            break
        }
    }

    var isRequestPort: Bool { targetType == "virtio" && targetName == GuestRequestChannel.portName }

    var state: GuestRequestChannel {
        guard type == "unix" else {
            return .unusable("its host side is type '\(type ?? "")', not a unix socket")
        }
        // mode='connect' would make QEMU the client: the agent never listens for guests.
        guard sourceMode == "bind" else {
            return .unusable("its socket has mode '\(sourceMode ?? "")'; the agent connects to QEMU, so it must be 'bind'")
        }
        guard let sourcePath, sourcePath.hasPrefix("/") else {
            return .unusable("its socket has no absolute path in the live definition")
        }
        return .listening(socketPath: sourcePath)
    }
}
