import PassthroughCore

/// Where a card should be bound.
public enum BindTarget: Hashable, Sendable, CustomStringConvertible {
    case vfio
    case host(HostDriverPolicy)

    public var description: String {
        switch self {
        case .vfio: "vfio-pci"
        case .host(let policy): "host (\(policy))"
        }
    }

    /// What `driver_override` must hold for the kernel to pick the right driver.
    var driverOverride: DriverName? {
        switch self {
        case .vfio: .vfioPCI
        case .host(let policy): policy.driverOverride
        }
    }

    /// Whether an override already set may stay once the function is on the right driver.
    func accepts(override: DriverName?) -> Bool {
        switch self {
        case .vfio: override == nil || override == .vfioPCI
        case .host(let policy): policy.accepts(override: override)
        }
    }

    /// Whether the kernel must be asked to probe after the unbind.
    var probes: Bool {
        if case .host(.none) = self { return false }
        return true
    }

    /// The driver that must be loaded before we start, if any.
    var requiredDriver: DriverName? {
        switch self {
        case .vfio: .vfioPCI
        case .host(.driver(let name)): name
        case .host(.auto), .host(.none): nil
        }
    }

    func isSatisfied(by driver: DriverName?) -> Bool {
        switch self {
        case .vfio: driver == .vfioPCI
        case .host(.driver(let name)): driver == name
        // The kernel's own choice may be "no driver at all" (no module claims the ID).
        case .host(.auto): driver != .vfioPCI
        case .host(.none): driver == nil
        }
    }

    var expectation: String {
        switch self {
        case .vfio: "driver vfio-pci"
        case .host(.driver(let name)): "driver \(name)"
        case .host(.auto): "the kernel's own driver (not vfio-pci)"
        case .host(.none): "no driver"
        }
    }
}
