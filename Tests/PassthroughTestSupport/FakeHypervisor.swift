import PassthroughCore
import PassthroughLibvirt
import PassthroughSysfs

/// libvirt as the daemon sees it, over an ``EmulatedPCIBus``: attach works only for a function
/// bound to vfio-pci (as with managed='no'), and the live XML is what was attached.
public actor FakeHypervisor: Hypervisor {
    public struct Unreachable: Error, CustomStringConvertible {
        public var description: String { "not connected to libvirt" }
    }

    public struct Refused: Error, CustomStringConvertible {
        public var description: String
    }

    private let bus: EmulatedPCIBus
    private var guests: [String: GuestState] = [:]
    private var live: [String: [PCIAddress]] = [:]
    private var unreadableXML: Set<String> = []
    private var failingAttaches = 0
    private var hanging: Set<Call> = []
    private var hangingIn: [Call: Set<String>] = [:]
    private var ignoringDetaches: Set<String> = []
    private var nextDetachHook: (@Sendable () -> Void)?
    public private(set) var attachCalls: [PCIAddress] = []
    public private(set) var detachCalls: [PCIAddress] = []
    private var requestChannels: [String: GuestRequestChannel] = [:]
    private var hotAddableChannels: [String: String] = [:]
    /// The guests the request channel was hot-added to, in call order (failed attempts included).
    public private(set) var channelHotAdds: [String] = []
    public var reachable = true

    public init(bus: EmulatedPCIBus) {
        self.bus = bus
    }

    public func define(_ guest: String, state: GuestState) {
        guests[guest] = state
        // A crashed guest keeps its live XML: with on_crash=preserve its QEMU, and the card, live on.
        if !state.mayHoldDevices { live[guest] = [] }
    }

    /// Puts `address` in the live XML of `guest` as it stands, as if attached before this test began (by
    /// hand, or by a domain the agent does not manage).
    public func hold(_ address: PCIAddress, in guest: String) {
        live[guest, default: []].append(address)
    }

    /// The live XML of `guest` cannot be read any more (what ``LiveHostdevParser`` throws on).
    public func breakLiveXML(of guest: String) {
        unreadableXML.insert(guest)
    }

    public func setReachable(_ value: Bool) { reachable = value }

    /// The next `count` attaches fail as libvirt does when QEMU refuses.
    public func failAttaches(_ count: Int) { failingAttaches = count }

    /// The libvirt calls that can be made to hang, as an RPC does when libvirtd or QEMU never answers.
    public enum Call: Hashable, Sendable {
        case attach
        case detach
        /// Reading the request channel from the live XML, and hot-adding it.
        case channel
    }

    /// Calls of this kind do not return until ``unhang(_:)`` (a wedged libvirtd); cancelling the caller ends them.
    public func hang(_ call: Call) { hanging.insert(call) }

    /// Calls of this kind to `guest` only do not return until ``unhang(_:)`` (its QEMU does not answer).
    public func hang(_ call: Call, in guest: String) { hangingIn[call, default: []].insert(guest) }

    public func unhang(_ call: Call) {
        hanging.remove(call)
        hangingIn[call] = nil
    }

    private func waitWhileHanging(_ call: Call, in guest: GuestName? = nil) async throws {
        while hanging.contains(call) || guest.map({ hangingIn[call]?.contains($0.rawValue) == true }) == true {
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    /// `guest` never acks an eject: it has no OS, or it is paused (by `virsh suspend`, or by QEMU itself on
    /// an uncorrectable AER error). Detach requests are recorded and its live XML keeps the device.
    public func ignoreDetaches(in guest: String) { ignoringDetaches.insert(guest) }

    /// Runs `hook` inside the next detach call, on the caller's task, before the guest answers: the moment
    /// a client hangs up or the agent is told to stop while a detach is in flight.
    public func onNextDetach(_ hook: @escaping @Sendable () -> Void) { nextDetachHook = hook }

    /// What QEMU does when the host removes a vfio device: the guest unplugs it.
    public func unplug(_ address: PCIAddress, from guest: String) {
        live[guest]?.removeAll { $0 == address }
    }

    public func liveHostdevs(of guest: String) -> [PCIAddress] { live[guest] ?? [] }

    /// The request channel in the live XML of `guest` (`.absent` unless set).
    public func setRequestChannel(_ channel: GuestRequestChannel, of guest: String) {
        requestChannels[guest] = channel
    }

    /// A hot-add of the request channel to `guest` succeeds, and QEMU then listens at `socketPath` (as libvirt
    /// picks a path in its channel directory). Without this, hot-adds fail as on a guest without a
    /// virtio-serial controller.
    public func allowChannelHotAdd(to guest: String, socketPath: String) {
        hotAddableChannels[guest] = socketPath
    }

    // MARK: Hypervisor

    public func guestState(_ guest: GuestName) async throws -> GuestState {
        guard reachable else { throw Unreachable() }
        return guests[guest.rawValue] ?? .absent
    }

    public func hostdevs(of guest: GuestName) async throws -> [Hostdev] {
        guard reachable else { throw Unreachable() }
        guard !unreadableXML.contains(guest.rawValue) else { throw Self.unreadable(guest.rawValue) }
        return (live[guest.rawValue] ?? []).map { Hostdev(address: $0, alias: "hostdev-\($0)", managed: false) }
    }

    public func guestsHolding(_ functions: Set<PCIAddress>) async throws -> [GuestName: [PCIAddress]] {
        guard reachable else { throw Unreachable() }
        var holding: [GuestName: [PCIAddress]] = [:]
        for (name, state) in guests where state.mayHoldDevices {
            guard !unreadableXML.contains(name) else { throw Self.unreadable(name) }
            let listed = Set(live[name] ?? []).intersection(functions)
            if !listed.isEmpty, let guest = GuestName(name) { holding[guest] = listed.sorted() }
        }
        return holding
    }

    private static func unreadable(_ guest: String) -> DomainXMLError {
        DomainXMLError("domain \(guest): PCI hostdev without a source address", at: 412)
    }

    public func attach(_ address: PCIAddress, to guest: GuestName) async throws {
        guard reachable else { throw Unreachable() }
        attachCalls.append(address)
        try await waitWhileHanging(.attach, in: guest)
        if failingAttaches > 0 {
            failingAttaches -= 1
            throw Refused(description: "internal error: unable to execute QEMU command 'device_add'")
        }
        guard guests[guest.rawValue]?.isActive == true else { throw Refused(description: "domain is not running") }
        guard bus.sysfs.driver(of: address.description) == "vfio-pci" else {
            throw Refused(description: "\(address) is not bound to vfio-pci")
        }
        guard !(live[guest.rawValue] ?? []).contains(address) else {
            throw Refused(description: "\(address) is already in use by \(guest)")
        }
        live[guest.rawValue, default: []].append(address)
    }

    public func requestChannel(of guest: GuestName) async throws -> GuestRequestChannel {
        guard reachable else { throw Unreachable() }
        try await waitWhileHanging(.channel)
        guard !unreadableXML.contains(guest.rawValue) else { throw Self.unreadable(guest.rawValue) }
        return requestChannels[guest.rawValue] ?? .absent
    }

    public func addRequestChannel(to guest: GuestName) async throws {
        guard reachable else { throw Unreachable() }
        channelHotAdds.append(guest.rawValue)
        guard guests[guest.rawValue]?.isActive == true else { throw Refused(description: "domain is not running") }
        guard requestChannels[guest.rawValue] == nil || requestChannels[guest.rawValue] == .absent else {
            throw Refused(description: "chardev already exists")
        }
        guard let path = hotAddableChannels[guest.rawValue] else {
            throw GuestRequestChannelError.noVirtioSerialController(guest)
        }
        requestChannels[guest.rawValue] = .listening(socketPath: path)
    }

    public func detach(_ address: PCIAddress, from guest: GuestName) async throws {
        guard reachable else { throw Unreachable() }
        detachCalls.append(address)
        nextDetachHook.take()?()
        try await waitWhileHanging(.detach, in: guest)
        guard !ignoringDetaches.contains(guest.rawValue) else { return }
        live[guest.rawValue]?.removeAll { $0 == address }
    }
}
