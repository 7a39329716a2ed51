import PassthroughLibvirt
import PassthroughUdev

/// One line of `monitor`: an event from udev or libvirt, flattened for people and for `jq`.
public struct MonitorRecord: Encodable, Hashable, Sendable {
    public enum Source: String, Encodable, Sendable { case udev, libvirt }

    public var source: Source
    /// udev: add, remove, bind, unbind, change.
    public var action: String?
    /// libvirt: started, stopped, device-removed…; udev: coldplug-complete, resync, failed.
    public var event: String?
    public var detail: String?
    public var address: String?
    public var id: String?
    public var driver: String?
    public var guest: String?
    public var alias: String?
    public var coldplug: Bool?
    public var errorEvent: String?
    public var deviceOnline: Bool?

    init(source: Source) {
        self.source = source
    }

    public init(_ event: UdevMonitorEvent) {
        self.init(source: .udev)
        switch event {
        case .device(let device):
            action = device.action.description
            address = device.address.description
            id = device.id?.description
            driver = device.driver?.rawValue
            coldplug = device.isColdplug ? true : nil
            errorEvent = device.errorEvent?.description
            deviceOnline = device.deviceOnline
        case .coldplugComplete(let count):
            self.event = "coldplug-complete"
            detail = "\(count) PCI functions"
        case .resync(let reason):
            self.event = "resync"
            detail = reason.description
        case .failed(let error):
            self.event = "failed"
            detail = "\(error)"
        }
    }

    public init(_ event: HypervisorEvent) {
        self.init(source: .libvirt)
        guest = event.guest
        switch event {
        case .lifecycle(_, let lifecycle):
            (self.event, detail) = Self.describe(lifecycle)
        case .deviceRemoved(_, let alias):
            self.event = "device-removed"
            self.alias = alias
        case .deviceRemovalFailed(_, let alias):
            self.event = "device-removal-failed"
            self.alias = alias
        case .deviceAdded(_, let alias):
            self.event = "device-added"
            self.alias = alias
        case .connected:
            self.event = "connected"
        case .disconnected(let reason):
            self.event = "disconnected"
            detail = reason
        case .resync:
            self.event = "resync"
        }
    }

    static func describe(_ lifecycle: LifecycleEvent) -> (String, String?) {
        switch lifecycle {
        case .defined: ("defined", nil)
        case .undefined: ("undefined", nil)
        case .started: ("started", nil)
        case .suspended: ("suspended", nil)
        case .resumed: ("resumed", nil)
        case .stopped(let reason): ("stopped", "\(reason)")
        case .shutdown: ("shutdown", nil)
        case .pmSuspended: ("pmsuspended", nil)
        case .crashed: ("crashed", nil)
        case .other(let event, let detail): ("event-\(event)", "detail \(detail)")
        }
    }

    /// `udevadm monitor` / `virsh event` style.
    public var text: String {
        var words = [source.rawValue.padding(7)]
        words.append((action ?? event ?? "?").padding(18))
        if let address { words.append(address) }
        if let id { words.append(id) }
        if let driver { words.append("driver=\(driver)") }
        if let guest { words.append("guest=\(guest)") }
        if let alias { words.append("alias=\(alias)") }
        if let errorEvent { words.append("ERROR_EVENT=\(errorEvent)") }
        if let deviceOnline { words.append("DEVICE_ONLINE=\(deviceOnline ? 1 : 0)") }
        if coldplug == true { words.append("(coldplug)") }
        if let detail { words.append(address == nil && guest == nil ? detail : "(\(detail))") }
        return words.joined(separator: " ").trimmingTrailingSpaces()
    }
}
