import PassthroughCore
import PassthroughSysfs
import Synchronization
import SystemPackage

/// The kernel's side of the PCI bus ABI over a ``FakeSysfs`` tree.
///
/// Reads go straight to the files. Writes to `driver_override`, a driver's `bind`/`unbind` and
/// `drivers_probe` change the `driver` links the way the kernel would, including its quirks:
/// `drivers_probe` succeeds when nothing binds, `bind` fails with `ENODEV` on a mismatch.
/// Faults can be injected per write or per driver probe.
public final class EmulatedPCIBus: SysfsIO {
    private struct State {
        var idTables: [String: Set<PCIID>] = [:]
        var failingProbes: Set<String> = []
        var failingWrites: [FilePath: Errno] = [:]
        var writes: [(path: FilePath, value: String)] = []
    }

    public let sysfs: FakeSysfs
    private let real = LinuxSysfsIO()
    private let state = Mutex(State())

    public init(_ sysfs: FakeSysfs) {
        self.sysfs = sysfs
    }

    /// Loads a driver that claims `ids` by its ID table (as `xdma` claims `10ee:903f`).
    public func loadDriver(_ name: String, claiming ids: [String] = []) {
        sysfs.addDriver(name)
        state.withLock { $0.idTables[name] = Set(ids.compactMap(PCIID.init)) }
    }

    /// The driver's probe returns an error: `bind` fails, `drivers_probe` silently binds nothing.
    public func failProbes(of driver: String) {
        state.withLock { _ = $0.failingProbes.insert(driver) }
    }

    /// The next writes to `relativePath` fail with `errno`.
    public func failWrites(to relativePath: String, with errno: Errno) {
        state.withLock { $0.failingWrites[sysfs.root.appending(relativePath)] = errno }
    }

    /// Every write made through the bus, relative to the root, in order.
    public var writes: [(path: String, value: String)] {
        state.withLock { state in
            state.writes.map { (String($0.path.string.dropFirst(sysfs.root.string.count + 1)), $0.value) }
        }
    }

    public func read(_ path: FilePath) throws(SysfsError) -> String { try real.read(path) }
    public func readLink(_ path: FilePath) throws(SysfsError) -> FilePath? { try real.readLink(path) }
    public func list(_ directory: FilePath) throws(SysfsError) -> [String] { try real.list(directory) }
    public func exists(_ path: FilePath) -> Bool { real.exists(path) }

    public func write(_ value: String, to path: FilePath) throws(SysfsError) {
        let injected = state.withLock { state -> Errno? in
            state.writes.append((path, value))
            return state.failingWrites[path]
        }
        if let injected { throw SysfsError(operation: .write, path: path, errno: injected, value: value) }
        guard real.exists(path) else {
            throw SysfsError(operation: .write, path: path, errno: .noSuchFileOrDirectory, value: value)
        }
        let relative = String(path.string.dropFirst(sysfs.root.string.count + 1))
        let parts = relative.split(separator: "/").map(String.init)
        let argument = value.trimmingNewline()
        let fail = { (errno: Errno) in SysfsError(operation: .write, path: path, errno: errno, value: value) }

        if relative == "bus/pci/drivers_probe" {
            guard PCIAddress(argument) != nil, sysfs.driver(of: argument) == nil else { return }
            if let driver = matchingDriver(for: argument), !isFailingProbe(driver) {
                sysfs.bind(argument, to: driver)
            }
            return
        }
        if parts.count == 5, parts[0...2] == ["bus", "pci", "drivers"] {
            let driver = parts[3]
            switch parts[4] {
            case "unbind":
                guard sysfs.driver(of: argument) == driver else { throw fail(.operationNotSupportedByDevice) }
                sysfs.unbind(argument)
                return
            case "bind":
                guard PCIAddress(argument) != nil, real.exists(sysfs.root.appending("bus/pci/devices/\(argument)")) else {
                    throw fail(.operationNotSupportedByDevice)
                }
                guard sysfs.driver(of: argument) == nil else { throw fail(.resourceBusy) }
                guard canBind(argument, to: driver) else { throw fail(.operationNotSupportedByDevice) }
                guard !isFailingProbe(driver) else { throw fail(.ioError) }
                sysfs.bind(argument, to: driver)
                return
            default:
                break
            }
        }
        if parts.last == "driver_override" {
            // The kernel keeps "(null)" for an empty write.
            sysfs.writeFile(relative, argument.isEmpty ? "(null)\n" : "\(argument)\n")
            return
        }
        // A sysfs attribute holds the last value stored, never a tail of an older one.
        sysfs.writeFile(relative, value)
    }

    // MARK: Kernel matching

    private func overrideOf(_ address: String) -> String? {
        let text = sysfs.driverOverride(of: address).trimmingNewline()
        return text == "(null)" || text.isEmpty ? nil : text
    }

    private func id(of address: String) -> PCIID? {
        guard let vendor = try? real.read(sysfs.root.appending("bus/pci/devices/\(address)/vendor")),
              let device = try? real.read(sysfs.root.appending("bus/pci/devices/\(address)/device"))
        else { return nil }
        return PCIID(sysfsVendor: vendor, sysfsDevice: device)
    }

    /// `driver_override` wins outright; otherwise the first loaded driver whose table has the ID.
    private func matchingDriver(for address: String) -> String? {
        if let override = overrideOf(address) {
            return real.exists(sysfs.root.appending("bus/pci/drivers/\(override)")) ? override : nil
        }
        guard let id = id(of: address) else { return nil }
        return state.withLock { state in
            state.idTables.keys.sorted().first { state.idTables[$0]?.contains(id) == true }
        }
    }

    private func canBind(_ address: String, to driver: String) -> Bool {
        if let override = overrideOf(address) { return override == driver }
        guard let id = id(of: address) else { return false }
        return state.withLock { $0.idTables[driver]?.contains(id) == true }
    }

    private func isFailingProbe(_ driver: String) -> Bool {
        state.withLock { $0.failingProbes.contains(driver) }
    }
}

extension String {
    func trimmingNewline() -> String {
        var text = Substring(self)
        while text.last == "\n" { text = text.dropLast() }
        return String(text)
    }
}
