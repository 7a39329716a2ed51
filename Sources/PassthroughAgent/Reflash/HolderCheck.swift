import PassthroughCore
import PassthroughLibvirt
import PassthroughSysfs

/// Who holds a card's functions, asked before any of them is unbound, removed or reset.
///
/// The kernel's `vfio_unregister_group_dev` waits for every user of a device to let go: uninterruptibly after
/// the first signal, holding `pci_rescan_remove_lock` and the device lock, so every rescan, remove, hotplug
/// and `driver_override` read on the host waits with it. A guest that cannot answer (no OS, paused, crashed
/// and kept) never lets go, and only a reboot ends the wait. So both witnesses are asked: libvirt, for every
/// domain with a process whose live XML lists a function, and `/proc`, for any process with the function's
/// VFIO file open (a QEMU this libvirt does not manage, or one it forgot). Whatever either cannot tell makes
/// the verdict `.unknown`, which callers treat exactly like `.held`: hands off.
package struct HolderCheck: Sendable {
    package let hypervisor: any Hypervisor
    package let host: HostEnvironment

    package init(hypervisor: any Hypervisor, host: HostEnvironment) {
        self.hypervisor = hypervisor
        self.host = host
    }

    /// Asks libvirt, then `/proc`. Known holders win over what could not be read, since they are what the user
    /// can act on. Guests holding the functions are the whole answer: their own QEMUs have the VFIO files open
    /// too, and naming those again as bare processes would only blur the advice; anything else that holds
    /// the functions is named once the guests have let go.
    package func holders(of functions: Set<PCIAddress>) async -> HolderVerdict {
        guard !functions.isEmpty else { return .free }
        var unknowns: [String] = []
        do {
            var guests: [Holder] = []
            for (guest, held) in try await hypervisor.guestsHolding(functions).sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
                // Only for the advice: a guest whose state cannot be read is still a holder.
                let state = try? await hypervisor.guestState(guest)
                guests.append(.guest(guest, state: state, functions: held))
            }
            if !guests.isEmpty { return .held(guests) }
        } catch {
            unknowns.append("libvirt cannot tell which guests hold \(Holder.list(functions.sorted())) (\(error))")
        }
        let scan = VFIOHolderScan(host: host).scan(functions)
        if !scan.holders.isEmpty { return .held(scan.holders) }
        unknowns += scan.unknowns
        if !unknowns.isEmpty { return .unknown(unknowns.joined(separator: "; ")) }
        return .free
    }
}

/// Whether a card's functions may be taken from whoever has them.
package enum HolderVerdict: Hashable, Sendable, CustomStringConvertible {
    /// No domain lists them and no process has their VFIO files open.
    case free
    /// Held, each holder with what to do about it.
    case held([Holder])
    /// Could not be told (libvirt unreachable, a live XML unparsable, a process's files unreadable): hands off.
    case unknown(String)

    package var description: String {
        switch self {
        case .free: "no guest or process holds them"
        case .held(let holders): holders.map(\.description).joined(separator: "; ")
        case .unknown(let reason): "cannot tell who holds them, so they are left alone: \(reason)"
        }
    }
}

/// One holder of some of a card's functions, described as the user needs it to let go.
package enum Holder: Hashable, Sendable, CustomStringConvertible {
    /// A libvirt domain whose live XML lists the functions; its state when libvirt could say.
    case guest(GuestName, state: GuestState?, functions: [PCIAddress])
    /// A process with a VFIO file of the functions open; `command` is its `comm`, `device` the node's usual name.
    case process(pid: Int32, command: String?, device: String, functions: [PCIAddress])

    package var description: String {
        switch self {
        case .guest(let guest, let state, let functions):
            let verb = functions.count == 1 ? "is" : "are"
            switch state {
            case .paused?:
                return "\(Self.list(functions)) \(verb) held by guest \(guest), which is paused and cannot let go: "
                    + "resume it (`virsh resume \(guest)`) and detach it, or `virsh destroy \(guest)`"
            case .crashed?:
                return "\(Self.list(functions)) \(verb) held by guest \(guest), which crashed and whose QEMU is kept "
                    + "(on_crash=preserve): `virsh destroy \(guest)` to release it"
            default:
                return "\(Self.list(functions)) \(verb) held by guest \(guest): shut down or `virsh destroy \(guest)`, "
                    + "or detach it first"
            }
        case .process(let pid, let command, let device, let functions):
            let verb = functions.count == 1 ? "is" : "are"
            let name = command.map { " (\($0))" } ?? ""
            return "\(Self.list(functions)) \(verb) held open by pid \(pid)\(name) through \(device): "
                + "stop that process first"
        }
    }

    static func list(_ functions: [PCIAddress]) -> String {
        functions.map(\.description).joined(separator: ", ")
    }
}
