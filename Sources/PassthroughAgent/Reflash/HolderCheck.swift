import PassthroughCore
import PassthroughLibvirt

// PLACEHOLDER until the `holders` branch lands (every domain's live XML, open VFIO groups).
struct HolderCheck: Sendable {
    let hypervisor: any Hypervisor
    let host: HostEnvironment

    func holders(of functions: Set<PCIAddress>) async -> HolderVerdict { .free }
}

enum HolderVerdict: Hashable, Sendable, CustomStringConvertible {
    case free
    case held([String])
    case unknown(String)

    var description: String {
        switch self {
        case .free: "free"
        case .held(let holders): holders.joined(separator: "; ")
        case .unknown(let why): why
        }
    }
}
