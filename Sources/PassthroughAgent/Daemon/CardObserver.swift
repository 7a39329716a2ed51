import Logging
import PassthroughCore
import PassthroughLibvirt
import PassthroughSysfs

/// Reads the actual state of a card: sysfs for the functions and drivers, libvirt for the guest.
struct CardObserver: Sendable {
    let reader: PCISysfsReader
    let hypervisor: any Hypervisor

    struct Observation: Sendable {
        var observed: ObservedCard
        /// Why the guest side is unknown, when it is.
        var guestProblem: String?
    }

    func observe(_ card: CardConfig, devices: [PCIDeviceSnapshot], history: CardHistory = CardHistory()) async -> Observation {
        var guestProblem: String?
        var activity = GuestActivity.unknown
        var attached: Set<PCIAddress> = []
        do {
            let state = try await hypervisor.guestState(card.guest)
            if state.isActive {
                activity = .active
                attached = Set(try await hypervisor.hostdevs(of: card.guest).map(\.address))
            } else if state == .crashed {
                activity = .crashed
            } else if state.mayHoldDevices {
                // A state this code cannot read may still have a QEMU holding the card: hands off.
                guestProblem = "libvirt reports \(card.guest) in a state this agent does not know (\(state))"
            } else {
                activity = .inactive
            }
        } catch {
            activity = .unknown
            guestProblem = "\(error)"
        }
        return Observation(
            observed: ObservedCard(card: card, devices: devices, guest: activity, attached: attached, history: history),
            guestProblem: guestProblem
        )
    }
}
